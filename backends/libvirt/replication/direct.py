"""The direct data path: a layer's body copied from file to file by the kernel, when hvc can prove
that the files it sees are the two daemons' volumes.

Why. Through streams every byte goes daemon A → hvc → daemon B, copied in and out of RPC
messages at each hop: about 7 CPU-seconds per GiB in all against half a second for ``cp``, a
ceiling near 300 MiB/s on two cores. When both pools are directories of the machine hvc runs
on (two daemons on one machine, as in the lab, or pools on a file system both see), the
volumes are right here, and the kernel can copy them without anyone touching the bytes.

The proof, for each pair of layers, since a path alone proves nothing: on another host, or in
another mount namespace (host B of the lab runs in one of its own), the same path can name a
different file.

- The source's header cluster comes through a download stream, as on the stream path. The
  file at the source volume's ``path()`` must be a regular file, begin with exactly those
  bytes, and have the size and mtime libvirt reports for the volume.
- The re-pointed header goes into the destination volume through an upload stream (offset 0,
  the header's length). The file at the destination volume's ``path()`` must then be a regular
  file holding exactly that header, and nothing else.

When any of it fails (no such file, no permission, a mismatch) the layer ships through streams
(``stream.ship_layer``) and the reason is logged at debug level. ``ENABLED = False`` makes every
layer take the stream path, as it would between two machines (the bench measures both).

The copy. Data extents (``SEEK_DATA``/``SEEK_HOLE``) are copied with ``copy_file_range`` in
pieces of ``PIECE`` bytes: holes stay holes and the file is cut to the source's size at the end;
a cancel is noticed and progress counted between pieces. Each piece is then hashed from the
source file (the page cache still holds it) into the checksum the stream path computes
(``header``: the canonical header, then the bytes, holes as zeros), so verification compares
like with like. (Hashing on a thread of its own, a step behind the copy, is no faster with
XXH128: the layers ship concurrently anyway.) Verification reads a replica layer back here too,
under the same proof (``read_local``). A failure or cancel mid-copy leaves a partial destination
volume, exactly as the stream path does: the shipment deletes whatever it did not commit.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

import libvirt

from backends.errors import OperationFailed
from backends.libvirt.replication.checksum import ALGORITHM, Hasher
from backends.libvirt.replication.header import QCOW2_MAGIC, backing_name, canonical_head, cluster_size, repoint
from backends.libvirt.replication.stream import (
    SEGMENT,
    Cancelled,
    Read,
    Stop,
    abort,
    hash_hole,
    recv_segments,
    send_all,
    split_head,
)
from backends.libvirt.replication.volumes import vol_facts

ENABLED = True  # False: every layer goes through streams, as between two machines
PIECE = 16 << 20  # bytes copied between two looks at the cancel flag
HEAD_PROBE = 64 << 10  # the header cluster of most qcow2 files; a bigger one is fetched again
_NO_COPY_FILE_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})

log = logging.getLogger(__name__)

Piece = tuple[int, int, bool]  # offset, length, whether it is data (else a hole)


class NotProven(Exception):
    """The local file is not provably the volume: why."""


def download_head(conn: Any, vol: Any) -> bytes:
    """The header cluster of ``vol`` (holes as zeros) through a download stream of that length."""
    length = HEAD_PROBE
    while True:
        stream = conn.newStream(0)
        vol.download(stream, 0, length, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        try:
            head, rest = split_head(recv_segments(stream))
            for _ in rest:  # what a non-qcow2 file has after its 24-byte "head"
                pass
            stream.finish()
        except BaseException:
            abort(stream)
            raise
        size = cluster_size(head)
        if size is None or len(head) >= size or len(head) < length:
            return head
        length = size


def upload_head(conn: Any, vol: Any, head: bytes) -> None:
    """Write ``head`` at the start of ``vol`` through an upload stream of that length."""
    stream = conn.newStream(0)
    vol.upload(stream, 0, len(head), 0)
    try:
        send_all(stream, head)
        stream.finish()
    except BaseException:
        abort(stream)
        raise


def _mtime_ns(text: str) -> int | None:
    """A volume XML's ``<mtime>`` (seconds, optionally ``.`` nanoseconds) in nanoseconds."""
    sec, _, frac = text.partition(".")
    if not sec.isdigit() or (frac and not frac.isdigit()):
        return None
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def _proven(path: str, flags: int, check: Callable[[int], int]) -> tuple[int, int]:
    """``path`` opened with ``flags`` if it is a regular file that passes ``check`` (which says
    how big it is): (descriptor, size). Raises
    ``NotProven`` (an unreadable file, or libvirt unable to say, is not proven either)."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise NotProven(f"cannot open {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotProven(f"{path} is not a regular file")
        return fd, check(fd)
    except (OSError, libvirt.libvirtError) as exc:
        os.close(fd)
        raise NotProven(f"{path}: {exc}") from exc
    except BaseException:
        os.close(fd)
        raise


def open_source(vol: Any, head: bytes) -> tuple[int, int]:
    """(file descriptor, size) of the local file that is provably ``vol``, whose header cluster
    the stream gave as ``head``; raises ``NotProven``."""
    path = vol.path()

    def check(fd: int) -> int:
        mtime = _mtime_ns(vol_facts(vol).mtime)
        physical = int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
        st = os.fstat(fd)
        if st.st_size != physical:
            raise NotProven(f"{path} has {st.st_size} bytes here, the volume {physical}")
        if st.st_mtime_ns != mtime:
            raise NotProven(f"{path} has another mtime here than the volume")
        if os.pread(fd, len(head), 0) != head:
            raise NotProven(f"{path} begins with other bytes here than the volume")
        return physical

    return _proven(path, os.O_RDONLY, check)


def open_destination(vol: Any, head: bytes) -> int:
    """A writable descriptor of the local file that is provably ``vol``, which holds exactly
    ``head`` (just uploaded through a stream) and nothing else; raises ``NotProven``."""
    path = vol.path()

    def check(fd: int) -> int:
        if os.fstat(fd).st_size != len(head) or os.pread(fd, len(head), 0) != head:
            raise NotProven(f"{path} does not hold the header just uploaded into the volume")
        return len(head)

    return _proven(path, os.O_RDWR, check)[0]


def pieces(fd: int, start: int, end: int) -> Iterator[Piece]:
    """The data and holes of ``fd`` from ``start`` to ``end``, in pieces of at most ``PIECE``."""
    pos = start
    while pos < end:
        try:
            data = min(os.lseek(fd, pos, os.SEEK_DATA), end)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no data after pos
                raise
            data = end
        is_data = data == pos
        stop = min(os.lseek(fd, pos, os.SEEK_HOLE), end) if is_data else data
        while pos < stop:
            step = min(PIECE, stop - pos)
            yield pos, step, is_data
            pos += step


def hash_piece(fd: int, digest: Hasher, piece: Piece, buf: bytearray) -> None:
    """Feed one piece of ``fd`` to ``digest`` (a hole as its zeros), reading through ``buf``."""
    offset, length, is_data = piece
    if not is_data:
        hash_hole(digest, length)
        return
    view = memoryview(buf)
    while length > 0:
        got = os.preadv(fd, [view[:min(length, len(buf))]], offset)
        if got == 0:
            raise OperationFailed("a layer got shorter while it was read")
        digest.update(view[:got])
        offset += got
        length -= got


def copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """Copy ``length`` bytes at ``offset`` from ``src`` to the same place in ``dst``: in the
    kernel, or through a buffer where it cannot (two file systems, say)."""
    while length > 0:
        try:
            got = os.copy_file_range(src, dst, length, offset, offset)
        except OSError as exc:
            if exc.errno not in _NO_COPY_FILE_RANGE:
                raise
            data = os.pread(src, min(length, SEGMENT), offset)
            got = os.pwrite(dst, data, offset) if data else 0
        if got == 0:
            raise OperationFailed("a layer got shorter while it was copied")
        offset += got
        length -= got


def _copy_body(src: int, dst: int, start: int, size: int, digest: Hasher, on_bytes: Callable[[int], None],
               cancel: Stop) -> int:
    """Copy ``src`` from ``start`` to ``size`` into ``dst`` and hash it; the data bytes copied."""
    copied = 0
    buf = bytearray(SEGMENT)
    for piece in pieces(src, start, size):
        if cancel.is_set():
            raise Cancelled
        offset, length, is_data = piece
        if is_data:
            copy_range(src, dst, offset, length)
            copied += length
            on_bytes(length)
        hash_piece(src, digest, piece, buf)
    os.ftruncate(dst, size)
    return copied


def _visible(*vols: Any) -> bool:
    """Whether every volume's path is a file here at all (a cheap look before the proof's streams)."""
    return all(os.path.isfile(vol.path()) for vol in vols)


def _source(conn: Any, vol: Any) -> tuple[bytes, int, int] | None:
    """(header cluster, descriptor, size) of the local file that is provably ``vol``, or None."""
    head = download_head(conn, vol)
    try:
        fd, size = open_source(vol, head)
    except NotProven as why:
        log.debug("%s goes through streams: %s", vol.path(), why)
        return None
    return head, fd, size


def ship_direct(src_conn: Any, src_vol: Any, dst_conn: Any, dst_vol: Any, parent: str | None,
                on_bytes: Callable[[int], None], cancel: Stop) -> Read | None:
    """``stream.ship_layer`` done by copying the local files, or None (nothing written past the
    header) when they are not provably the volumes."""
    if not ENABLED or not _visible(src_vol, dst_vol):
        return None
    source = _source(src_conn, src_vol)
    if source is None:
        return None
    head, src, size = source
    try:
        patched = repoint(head, parent) if head[:4] == QCOW2_MAGIC else head
        upload_head(dst_conn, dst_vol, patched)
        try:
            dst = open_destination(dst_vol, patched)
        except NotProven as why:
            log.debug("layer ships through streams: %s", why)
            return None
        on_bytes(len(patched))
        digest = Hasher()
        digest.update(canonical_head(head))
        try:
            copied = _copy_body(src, dst, len(head), size, digest, on_bytes, cancel)
        except OSError as exc:
            raise OperationFailed(f"copying {src_vol.path()} into {dst_vol.path()}: {exc.strerror or exc}") from exc
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return Read(digest.text(), backing_name(head), len(patched) + copied, route="direct")


def read_local(conn: Any, vol: Any, on_bytes: Callable[[int], None] | None = None,
               cancel: Stop | None = None, algorithm: str = ALGORITHM) -> Read | None:
    """``stream.read_layer`` done by reading the local file, or None when it is not provably the volume."""
    if not ENABLED or not _visible(vol):
        return None
    source = _source(conn, vol)
    if source is None:
        return None
    head, fd, size = source
    try:
        digest = Hasher(algorithm)
        digest.update(canonical_head(head))
        data = len(head)
        if on_bytes:
            on_bytes(len(head))
        buf = bytearray(SEGMENT)
        for piece in pieces(fd, len(head), size):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            hash_piece(fd, digest, piece, buf)
            if piece[2]:
                data += piece[1]
                if on_bytes:
                    on_bytes(piece[1])
    except OSError as exc:
        raise OperationFailed(f"reading {vol.path()}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    return Read(digest.text(), backing_name(head), data, route="direct")
