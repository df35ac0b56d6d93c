"""Moving layers through libvirt storage-volume streams: reading one through, or shipping it re-pointed.

Data path. A layer moves through libvirt storage-volume streams unless hvc can prove it sees
both volumes as local files (``direct``: then only the header cluster travels this way and the
kernel copies the rest). Here: ``download`` from the primary's pool, ``upload`` into the
destination's pool, sparse on both ends (holes are sent as lengths, not zeros), so it works
over any libvirt URI and needs no shell on either host. The bytes pass through hvc: count them
once, as "shipped". The header cluster is re-pointed on the way (see ``header``). A thread reads
ahead of the upload (``_ReadAhead``): overlapping the download with hashing and uploading
roughly halves a layer's shipping time.

A download stream hands its data back in pieces of one RPC message: 262,120 bytes, then the
24 that did not fit, over and over. Sent on as they come, every other upload message would
carry 24 bytes. The read-ahead joins adjacent data pieces into segments of ``SEGMENT`` bytes
(one memcpy per byte, for half as many upload messages on the destination daemon and here).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import libvirt

from backends.errors import OperationFailed
from backends.libvirt.replication.checksum import ALGORITHM, Hasher
from backends.libvirt.replication.header import QCOW2_MAGIC, backing_name, canonical_head, cluster_size, repoint

# Bytes per stream read: a read hands back at most one RPC message (256 KiB), and asking for
# more only makes the binding allocate (and zero) a bigger buffer each time: a fifth more CPU at 1 MiB.
CHUNK = 256 << 10
SEGMENT = 1 << 20  # adjacent data pieces are joined up to this size before they are hashed and sent
READ_AHEAD = 8  # segments read ahead of the upload (at most about 8 MiB per layer)
_ZEROS = bytes(SEGMENT)

Segment = bytes | int  # data, or a hole of that many bytes


class Cancelled(Exception):
    """The job was cancelled mid-layer."""


class Stop(Protocol):
    """What a layer's copy looks at between segments: a ``threading.Event``, or anything that
    says whether to stop the same way."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Read:
    """What a read-through of one layer found."""

    checksum: str
    backing: str | None
    data_bytes: int
    route: str = "stream"  # or "direct": the local files were copied or read (``direct``)


def recv_segments(stream: Any) -> Iterator[Segment]:
    """What a sparse download stream carries, until its end."""
    while True:
        got = stream.recvFlags(CHUNK, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
        if got == -3:
            yield int(stream.recvHole(0))
            continue
        if isinstance(got, int):
            raise OperationFailed(f"volume stream returned {got}")
        if not got:
            return
        yield got


def _joined(segments: Iterator[Segment], size: int = SEGMENT) -> Iterator[Segment]:
    """``segments`` with adjacent data pieces joined into runs of at least ``size`` bytes (the
    last run before a hole or the end may be shorter); holes pass through as they are."""
    run: list[bytes] = []
    held = 0
    for seg in segments:
        if isinstance(seg, int):
            if run:
                yield b"".join(run) if len(run) > 1 else run[0]
                run, held = [], 0
            yield seg
            continue
        run.append(seg)
        held += len(seg)
        if held >= size:
            yield b"".join(run) if len(run) > 1 else run[0]
            run, held = [], 0
    if run:
        yield b"".join(run) if len(run) > 1 else run[0]


def split_head(segments: Iterator[Segment]) -> tuple[bytes, Iterator[Segment]]:
    """The header cluster (holes in it read as zeros) and the segments after it. A file that
    is not qcow2 has a 24-byte "head" that nothing rewrites."""
    head = bytearray()
    want = 24
    pending: Segment | None = None
    while True:
        if pending is None:
            pending = next(segments, None)
            if pending is None:
                return bytes(head), iter(())
        need = want - len(head)
        if isinstance(pending, int):
            take = min(pending, need)
            head += bytes(take)
            pending = (pending - take) or None
        else:
            head += pending[:need]
            pending = pending[need:] or None
        if want == 24 and len(head) >= 24 and (size := cluster_size(bytes(head[:24]))):
            want = size
            continue
        if len(head) >= want:
            return bytes(head), _prepend(pending, segments)


def _prepend(first: Segment | None, rest: Iterator[Segment]) -> Iterator[Segment]:
    """``rest`` with ``first`` (when there is one) put back in front."""
    if first is not None:
        yield first
    yield from rest


def send_all(stream: Any, data: bytes) -> None:
    """Send all of ``data`` into an upload stream, however much each call takes (a copy of the
    rest only when a call took part of it)."""
    while data:
        sent = stream.send(data)
        if sent < 0:
            raise OperationFailed(f"volume stream refused data ({sent})")
        data = data[sent:]


class _ReadAhead:
    """The segments of a download stream, read on a thread of their own into a bounded queue,
    so the next read overlaps the hashing and uploading of the last (the binding lets go of
    the GIL inside each libvirt call, and the hash functions inside each update of a segment)."""

    _END = object()

    def __init__(self, stream: Any) -> None:
        self._queue: queue.Queue[object] = queue.Queue(READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(stream,), name="hvc-layer-download", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self, stream: Any) -> None:
        try:
            for seg in _joined(recv_segments(stream)):
                if not self._put(seg):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the reading side, raised there
            self._put(exc)

    def __iter__(self) -> Iterator[Segment]:
        while True:
            item = self._queue.get()
            if item is self._END:
                self._thread.join()
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading (after a failure: abort the stream too, so a read in progress ends)."""
        self._stop.set()
        self._thread.join(timeout)


def hash_hole(digest: Hasher, length: int) -> None:
    """Feed a hole to ``digest`` as the zeros it reads as."""
    zeros = memoryview(_ZEROS)
    while length > 0:
        step = min(length, SEGMENT)
        digest.update(zeros[:step])
        length -= step


def _open_download(conn: Any, vol: Any) -> Any:
    """A sparse download stream over the whole of ``vol``."""
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
    return stream


def abort(*streams: Any) -> None:
    """Abort streams after a failure, ignoring what aborting them raises."""
    for stream in streams:
        with contextlib.suppress(libvirt.libvirtError, Exception):
            stream.abort()


def read_layer(conn: Any, vol: Any, on_bytes: Callable[[int], None] | None = None,
               cancel: Stop | None = None, algorithm: str = ALGORITHM) -> Read:
    """Checksum (made with ``algorithm``) and backing name of a volume, read through a sparse
    download stream."""
    stream = _open_download(conn, vol)
    ahead = _ReadAhead(stream)
    try:
        head, rest = split_head(iter(ahead))
        digest = Hasher(algorithm)
        digest.update(canonical_head(head))
        data = len(head)
        if on_bytes:
            on_bytes(len(head))
        for seg in rest:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            if isinstance(seg, int):
                hash_hole(digest, seg)
                continue
            digest.update(seg)
            data += len(seg)
            if on_bytes:
                on_bytes(len(seg))
        stream.finish()
    except BaseException:
        abort(stream)
        ahead.stop()
        raise
    return Read(digest.text(), backing_name(head), data)


def ship_layer(src_conn: Any, src_vol: Any, dst_conn: Any, dst_vol: Any, parent: str | None,
               on_bytes: Callable[[int], None], cancel: Stop) -> Read:
    """Copy ``src_vol`` into ``dst_vol`` re-pointed at ``parent``; the checksum is of the source."""
    down = _open_download(src_conn, src_vol)
    up = dst_conn.newStream(0)
    try:
        dst_vol.upload(up, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
    except BaseException:
        abort(down)
        raise
    ahead = _ReadAhead(down)
    try:
        head, rest = split_head(iter(ahead))
        digest = Hasher()
        digest.update(canonical_head(head))
        patched = repoint(head, parent) if head[:4] == QCOW2_MAGIC else head
        send_all(up, patched)
        sent = len(patched)
        on_bytes(len(patched))
        for seg in rest:
            if cancel.is_set():
                raise Cancelled
            if isinstance(seg, int):
                hash_hole(digest, seg)
                up.sendHole(seg, 0)
                continue
            digest.update(seg)
            send_all(up, seg)
            sent += len(seg)
            on_bytes(len(seg))
        down.finish()
        up.finish()
    except BaseException:
        abort(down, up)
        ahead.stop()
        raise
    return Read(digest.text(), backing_name(head), sent)


def download_small(conn: Any, vol: Any) -> bytes:
    """The whole content of a small volume (a record), through a plain download stream."""
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, 0)
    out = bytearray()
    try:
        while chunk := stream.recv(CHUNK):
            if isinstance(chunk, int):
                raise OperationFailed(f"volume stream returned {chunk}")
            out += chunk
        stream.finish()
    except BaseException:
        abort(stream)
        raise
    return bytes(out)


def upload_small(conn: Any, vol: Any, data: bytes) -> None:
    """Write ``data`` as the whole content of ``vol`` through a plain upload stream."""
    stream = conn.newStream(0)
    vol.upload(stream, 0, 0, 0)
    try:
        send_all(stream, data)
        stream.finish()
    except BaseException:
        abort(stream)
        raise
