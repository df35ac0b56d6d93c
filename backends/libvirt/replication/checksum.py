"""Layer checksums: which function makes them, and how a stored one names it.

What is hashed is defined in ``header`` (the canonical header cluster, then the layer's bytes,
holes as zeros); this module only chooses the function. The checksum guards copies hvc made
itself against corruption, truncation and mix-ups, not against an adversary, so it is XXH128
(as rsync ≥ 3.2 uses for the same job): about 8× cheaper than SHA-256 here even with SHA-NI,
which made hashing most of the CPU a direct ship costs.

A checksum names its function: ``"xxh128:<32 hex>"``. A record written by an older hvc holds
bare 64-hex SHA-256 checksums; those layers are read back with SHA-256 to verify them (``algorithm_of``),
and a layer shipped again gets an XXH128 checksum.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from typing import Any, Protocol

import xxhash

_HEX = frozenset(string.hexdigits)
ALGORITHM = "xxh128"  # of every checksum hvc makes now
LEGACY = "sha256"  # bare 64-hex checksums, written by an older hvc

_MAKERS: dict[str, Callable[[], Any]] = {"xxh128": xxhash.xxh3_128, "sha256": hashlib.sha256}


class _Digest(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class Hasher:
    """One checksum being made: ``update`` with the bytes in order, then ``text``."""

    __slots__ = ("_digest", "algorithm", "update")

    def __init__(self, algorithm: str = ALGORITHM) -> None:
        maker = _MAKERS.get(algorithm)
        if maker is None:
            raise ValueError(f"unknown checksum algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._digest: _Digest = maker()
        self.update: Callable[[bytes | bytearray | memoryview], None] = self._digest.update

    def text(self) -> str:
        """The checksum as stored: ``algorithm:hex``, bare hex for SHA-256 (as older records have it)."""
        hexed = self._digest.hexdigest()
        return hexed if self.algorithm == LEGACY else f"{self.algorithm}:{hexed}"


def algorithm_of(checksum: str) -> str | None:
    """The function a stored checksum was made with (read the layer with ``Hasher(that)`` to
    compare), None when this hvc does not know it."""
    name, sep, hexed = checksum.partition(":")
    if not sep:  # an older hvc's: SHA-256, bare
        name, hexed = (LEGACY, checksum) if len(checksum) == 64 else ("", "")
    elif name == LEGACY:
        return None  # SHA-256 is stored bare: a prefixed one was not written by hvc
    if name not in _MAKERS or not hexed or set(hexed) - _HEX:
        return None
    return name
