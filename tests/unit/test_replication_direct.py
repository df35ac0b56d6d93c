"""The direct data path's pieces (``replication.direct``) on sparse files in a tmp directory:
the extent walk, the kernel copy (holes stay holes), its fallback, and the proof that a local
file is a volume."""

from __future__ import annotations

import errno
import itertools
import os
import threading
from pathlib import Path

import pytest
import xxhash

from backends.libvirt.replication import direct
from backends.libvirt.replication.checksum import Hasher
from backends.libvirt.replication.stream import Cancelled

MIB = 1 << 20


def _sparse(path: Path, extents: list[tuple[int, bytes]], size: int) -> Path:
    """A file of ``size`` bytes with ``extents`` (offset, data) written and holes elsewhere."""
    with open(path, "wb") as fh:
        for offset, data in extents:
            fh.seek(offset)
            fh.write(data)
        fh.truncate(size)
    return path


def _holes_work(path: Path) -> bool:
    return os.stat(path).st_blocks * 512 < os.path.getsize(path)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = _sparse(tmp_path / "src", [(0, b"H" * 4096), (3 * MIB, os.urandom(5 * MIB)), (20 * MIB, b"T" * 8192)],
                   32 * MIB)
    if not _holes_work(path):
        pytest.skip("this file system keeps no holes")
    return path


def test_pieces_follow_data_and_holes_in_bounded_pieces(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "PIECE", 2 * MIB)
    fd = os.open(src, os.O_RDONLY)
    try:
        got = list(direct.pieces(fd, 4096, os.path.getsize(src)))
    finally:
        os.close(fd)
    assert got[0][0] == 4096 and sum(n for _, n, _ in got) == 32 * MIB - 4096
    assert all(n <= 2 * MIB for _, n, _ in got)
    assert all(a + n == b for (a, n, _), (b, _, _) in itertools.pairwise(got))  # contiguous
    data = [(o, n) for o, n, is_data in got if is_data]
    assert sum(n for _, n in data) >= 5 * MIB + 8192
    assert any(o <= 3 * MIB < o + n for o, n in data) and any(o <= 20 * MIB < o + n for o, n in data)
    assert not any(is_data for o, n, is_data in got if o >= 21 * MIB)  # the tail is a hole


def _copy(src: Path, dst: Path, cancel: threading.Event | None = None) -> tuple[int, str, list[int]]:
    """Copy ``src`` past its first 4 KiB into ``dst`` (which holds them already); (data bytes,
    checksum, progress counts)."""
    dst.write_bytes(src.read_bytes()[:4096])
    counted: list[int] = []
    digest = Hasher()
    digest.update(b"head")
    s, d = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDWR)
    try:
        copied = direct._copy_body(s, d, 4096, os.path.getsize(src), digest, counted.append,
                                   cancel or threading.Event())
    finally:
        os.close(s)
        os.close(d)
    return copied, digest.text(), counted


def test_the_body_copy_is_byte_identical_keeps_holes_and_hashes_like_a_read(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    copied, checksum, counted = _copy(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks <= os.stat(src).st_blocks + 16  # holes stayed holes
    assert checksum == f"xxh128:{xxhash.xxh3_128(b'head' + src.read_bytes()[4096:]).hexdigest()}"
    assert copied == sum(counted) and 5 * MIB + 8192 <= copied < 8 * MIB


def test_the_body_copy_falls_back_to_a_buffer_where_the_kernel_cannot(
        src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(*_args: object) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "copy_file_range", cross_device)
    dst = tmp_path / "dst"
    _copy(src, dst)
    assert dst.read_bytes() == src.read_bytes()


def test_a_cancel_stops_the_body_copy_between_pieces(src: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "PIECE", MIB)
    cancel = threading.Event()
    real = direct.copy_range

    def copy(*args: int) -> None:
        real(*args)
        cancel.set()

    monkeypatch.setattr(direct, "copy_range", copy)
    with pytest.raises(Cancelled):
        _copy(src, tmp_path / "dst", cancel)
    assert os.path.getsize(tmp_path / "dst") <= 4 * MIB  # stopped after the first piece


class _Vol:
    def __init__(self, path: Path, mtime_ns: int | None = None, physical: int | None = None) -> None:
        self._path = path
        st = os.stat(path) if path.exists() else None
        self.mtime_ns = mtime_ns if mtime_ns is not None else (st.st_mtime_ns if st else 0)
        self.physical = physical if physical is not None else (st.st_size if st else 0)

    def path(self) -> str:
        return str(self._path)

    def XMLDesc(self, _flags: int) -> str:
        ns = self.mtime_ns
        return (f"<volume><name>v</name><target><path>{self._path}</path><timestamps>"
                f"<mtime>{ns // 10**9}.{ns % 10**9:09d}</mtime></timestamps></target></volume>")

    def infoFlags(self, _flags: int) -> list[int]:
        return [0, self.physical, self.physical]


def test_the_source_proof_holds_only_for_the_same_bytes_size_and_mtime(src: Path, tmp_path: Path) -> None:
    head = src.read_bytes()[:4096]
    fd, size = direct.open_source(_Vol(src), head)
    os.close(fd)
    assert size == os.path.getsize(src)
    refused = {
        "other first bytes": (_Vol(src), b"X" + head[1:]),
        "another size": (_Vol(src, physical=size + 1), head),
        "another mtime": (_Vol(src, mtime_ns=_Vol(src).mtime_ns + 1), head),
        "no such file": (_Vol(tmp_path / "missing"), head),
        "a directory": (_Vol(tmp_path), head),
    }
    for what, (vol, want) in refused.items():
        with pytest.raises(direct.NotProven):
            direct.open_source(vol, want)
            pytest.fail(what)


def test_the_destination_proof_holds_only_for_exactly_the_uploaded_header(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.write_bytes(b"HEAD")
    os.close(direct.open_destination(_Vol(dst), b"HEAD"))
    for content in (b"HEAD and more", b"HEAX", b""):
        dst.write_bytes(content)
        with pytest.raises(direct.NotProven):
            direct.open_destination(_Vol(dst), b"HEAD")


def test_mtimes_in_volume_xml() -> None:
    assert direct._mtime_ns("1795492240.583940291") == 1795492240_583940291
    assert direct._mtime_ns("12") == 12_000_000_000
    assert direct._mtime_ns("1.5") == 1_500_000_000
    assert direct._mtime_ns("") is None and direct._mtime_ns("x.1") is None
