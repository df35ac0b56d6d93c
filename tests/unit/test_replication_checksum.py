"""Layer checksums (``replication.checksum``): new ones are XXH128 and say so; an older hvc's
bare SHA-256 ones are recognised and remade with SHA-256."""

from __future__ import annotations

import hashlib

import pytest
import xxhash

from backends.libvirt.replication.checksum import ALGORITHM, Hasher, algorithm_of
from backends.libvirt.replication.stream import hash_hole

DATA = b"QFI\xfb" + bytes(range(256)) * 300


def _made(hasher: Hasher, *parts: bytes) -> str:
    for part in parts:
        hasher.update(part)
    return hasher.text()


def test_a_new_checksum_is_xxh128_named_by_its_prefix() -> None:
    text = _made(Hasher(), DATA[:100], memoryview(DATA)[100:], bytearray(b"tail"))
    assert ALGORITHM == "xxh128"
    assert text == "xxh128:" + xxhash.xxh3_128(DATA + b"tail").hexdigest()
    assert len(text) == len("xxh128:") + 32 and algorithm_of(text) == "xxh128"


def test_an_older_hvcs_checksum_is_bare_sha256_and_is_remade_as_it_was() -> None:
    old = hashlib.sha256(DATA).hexdigest()  # what a record written before XXH128 holds
    algorithm = algorithm_of(old)
    assert algorithm == "sha256"
    assert _made(Hasher(algorithm), DATA) == old  # so it still compares equal, unprefixed
    assert _made(Hasher(algorithm), DATA + b"!") != old
    assert _made(Hasher(), DATA) != old


def test_a_hole_hashes_as_its_zeros_with_either_function() -> None:
    for algorithm in ("xxh128", "sha256"):
        holed, zeros = Hasher(algorithm), Hasher(algorithm)
        holed.update(DATA)
        hash_hole(holed, 3 << 20)
        assert holed.text() == _made(zeros, DATA, bytes(3 << 20))


@pytest.mark.parametrize("stored", [
    "", "xxh128:", "xxh128:xyz", "md5:" + "0" * 32, "sha256:" + "0" * 64, "ab" * 31, "g" * 64, "blake3:" + "0" * 64,
])
def test_a_checksum_of_an_unknown_kind_is_not_taken_for_one(stored: str) -> None:
    assert algorithm_of(stored) is None


def test_an_unknown_function_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown checksum algorithm 'md5'"):
        Hasher("md5")
