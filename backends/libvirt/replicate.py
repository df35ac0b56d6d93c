"""Replication of qcow2 chains between libvirt hosts (S5), and test failover from the replica.

Data path. Every layer moves through libvirt storage-volume streams: ``download`` from the
primary's pool, ``upload`` into the destination's pool, sparse on both ends (holes are
sent as lengths, not zeros), so it works over any libvirt URI and needs no shell on either
host. The bytes pass through hvc: count them once, as "shipped".

Re-pointing. A layer's backing pointer at the primary names its primary parent (often
an absolute path). On its way out the qcow2 header is rewritten *in the stream* so the
layer lands pointing at its replicated parent by a relative name (the parent's volume
name: every replica layer of a disk lives in one directory pool). Nothing runs on the
destination; ``qemu-img rebase -u`` would do the same, but needs a shell there. Only the
header cluster's backing-file offset/length/name change (qcow2 keeps the name in cluster 0,
after the header extensions).

Replica chain and state: both live on the destination, so they survive the primary.
- Layer volumes in the destination pool with the same name as the primary pool holding
  the disk's active layer: ``<vm>.<disk>.<index>.<primary layer stem>.qcow2`` (a re-shipped
  layer gets ``.g2``, ``.g3``…: a counted volume is never overwritten).
- A JSON record in that pool, written alternately to ``<vm>.hvc-replica.a.json`` and
  ``….b.json`` with a rising ``seq`` (a torn write leaves the other slot valid): which
  primary layer each replica volume holds, its content checksum, the primary's mtime/size
  when it shipped, whether it was sealed then, the RPO and the last sync. The record is the
  commit point: a layer counts at the replica only once the record lists it, which happens
  after its upload finished and its stream closed. An interrupted sync leaves at most an
  unlisted volume, removed by the next sync, which resumes at the first layer the record
  lacks. Nothing is written on the primary.

Checksums. A layer's checksum is SHA-256 over its file bytes (holes read as zeros) with
the backing pointer blanked: header bytes 8..20 (backing offset and length) and the header
cluster from the backing name on. So a replica layer, whose pointer was re-pointed on
purpose, has the same checksum as its primary layer iff everything else is identical.

Active layer. Sealed layers (all but the top) never change. The top of a *shut-off* guest
is quiescent and ships whole; if it changed since (the guest ran), the next sync ships it
again, whole, under a new generation name (libvirt streams have no cheap server-side copy
to patch a delta into atomically). The top of a *running* guest is not read: QEMU holds
qcow2 metadata in its cache, so the file is not a consistent image. It is reported, not
shipped; seal it with a disk-only snapshot (or shut the guest down) and sync again.

Verification after each sync, layer by layer: the record lists the primary's layers in
order; each replica volume exists, is qcow2 (or raw for a raw base), its header names the
previous replica layer as backing (the base names none), and its checksum, read back from
the destination, equals the primary's. A sealed primary layer whose mtime or size moved
since it shipped is read again and must still match. When the destination pool is a local
directory (same machine, as in the lab) ``qemu-img info --backing-chain`` confirms the
chain too. A mismatch drops that layer and those above it from the record (the next sync
re-ships them) and fails the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, NoReturn
from xml.sax.saxutils import escape

import libvirt

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput, HostUnreachable, HvcError, OperationFailed, Unsupported
from backends.libvirt.migrate import is_local
from backends.libvirt.ops import libvirt_reason, open_job_connection
from backends.libvirt.parse import parse_domain
from backends.models import (
    DiskChain,
    DiskLayer,
    Inventory,
    JobKind,
    JobResult,
    LayerState,
    Outcome,
    PhaseChanged,
    ReplicaLink,
    Vm,
)
from backends.placement import find_host
from backends.progress import Meter
from backends.requests import FailoverRequest, ReplicateRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend

CHUNK = 1 << 20  # bytes per stream read
EMIT_EVERY_S = 0.1  # at most this often a Progress event (and at the end of every layer)
RECORD_SLOTS = ("a", "b")
RECORD_VERSION = 1
DIR_POOLS = frozenset({"dir", "fs", "netfs"})  # pools whose volumes are files in one directory
QCOW2_MAGIC = b"QFI\xfb"
_ZEROS = bytes(CHUNK)
_POOLS_ACTIVE = 2  # libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE


# --- qcow2 header --------------------------------------------------------------------------


def _backing(head: bytes) -> tuple[int, int] | None:
    """(offset, length) of the backing file name in a qcow2 header, None when it has none."""
    if len(head) < 20 or head[:4] != QCOW2_MAGIC:
        return None
    offset, length = struct.unpack(">QI", head[8:20])
    return (offset, length) if offset and length else None


def _cluster_size(head: bytes) -> int | None:
    if len(head) < 24 or head[:4] != QCOW2_MAGIC:
        return None
    bits: int = struct.unpack(">I", head[20:24])[0]
    return 1 << bits


def backing_name(head: bytes) -> str | None:
    """The backing file name a qcow2 header cluster points at."""
    found = _backing(head)
    if found is None:
        return None
    offset, length = found
    return head[offset:offset + length].decode("utf-8", "replace")


def canonical_head(head: bytes) -> bytes:
    """The header cluster with the backing pointer blanked (see the module docstring)."""
    if head[:4] != QCOW2_MAGIC:
        return head
    out = bytearray(head)
    found = _backing(head)
    out[8:20] = bytes(12)
    if found is not None:
        out[found[0]:] = bytes(len(out) - found[0])
    return bytes(out)


def repoint(head: bytes, parent: str | None) -> bytes:
    """The header cluster with its backing name replaced by ``parent`` (same place in cluster 0)."""
    found = _backing(head)
    if found is None:
        if parent is not None:
            raise OperationFailed("a layer with a parent has no backing pointer in its qcow2 header")
        return head
    if parent is None:
        raise OperationFailed("the base layer has a backing file; replicate the whole chain")
    offset, _ = found
    name = parent.encode()
    if len(name) > 1023 or offset + len(name) > len(head):
        raise OperationFailed(f"the replica name {parent!r} does not fit in the layer's qcow2 header")
    out = bytearray(head)
    out[8:20] = struct.pack(">QI", offset, len(name))
    out[offset:] = bytes(len(out) - offset)
    out[offset:offset + len(name)] = name
    return bytes(out)


# --- streams -------------------------------------------------------------------------------

Segment = bytes | int  # data, or a hole of that many bytes


def _segments(stream: Any) -> Iterator[Segment]:
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


def _split_head(segments: Iterator[Segment]) -> tuple[bytes, Iterator[Segment]]:
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
        if want == 24 and len(head) >= 24 and (size := _cluster_size(bytes(head[:24]))):
            want = size
            continue
        if len(head) >= want:
            return bytes(head), _prepend(pending, segments)


def _prepend(first: Segment | None, rest: Iterator[Segment]) -> Iterator[Segment]:
    if first is not None:
        yield first
    yield from rest


def _send_all(stream: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = stream.send(bytes(view))
        if sent < 0:
            raise OperationFailed(f"volume stream refused data ({sent})")
        view = view[sent:]


def _hash_hole(digest: Any, length: int) -> None:
    while length > 0:
        step = min(length, CHUNK)
        digest.update(_ZEROS[:step])
        length -= step


def _open_download(conn: Any, vol: Any) -> Any:
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
    return stream


def _abort(*streams: Any) -> None:
    for stream in streams:
        with contextlib.suppress(libvirt.libvirtError, Exception):
            stream.abort()


class Cancelled(Exception):
    """The job was cancelled mid-layer."""


@dataclass(frozen=True, slots=True)
class Read:
    """What a read-through of one layer found."""

    checksum: str
    backing: str | None
    data_bytes: int


def read_layer(conn: Any, vol: Any, on_bytes: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None) -> Read:
    """Checksum and backing name of a volume, read through a sparse download stream."""
    stream = _open_download(conn, vol)
    try:
        head, rest = _split_head(_segments(stream))
        digest = hashlib.sha256(canonical_head(head))
        data = len(head)
        if on_bytes:
            on_bytes(len(head))
        for seg in rest:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            if isinstance(seg, int):
                _hash_hole(digest, seg)
                continue
            digest.update(seg)
            data += len(seg)
            if on_bytes:
                on_bytes(len(seg))
        stream.finish()
    except BaseException:
        _abort(stream)
        raise
    return Read(digest.hexdigest(), backing_name(head), data)


def ship_layer(src_conn: Any, src_vol: Any, dst_conn: Any, dst_vol: Any, parent: str | None,
               on_bytes: Callable[[int], None], cancel: threading.Event) -> Read:
    """Copy ``src_vol`` into ``dst_vol`` re-pointed at ``parent``; the checksum is of the source."""
    down = _open_download(src_conn, src_vol)
    up = dst_conn.newStream(0)
    try:
        dst_vol.upload(up, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
    except BaseException:
        _abort(down)
        raise
    try:
        head, rest = _split_head(_segments(down))
        digest = hashlib.sha256(canonical_head(head))
        patched = repoint(head, parent) if head[:4] == QCOW2_MAGIC else head
        _send_all(up, patched)
        sent = len(patched)
        on_bytes(len(patched))
        for seg in rest:
            if cancel.is_set():
                raise Cancelled
            if isinstance(seg, int):
                _hash_hole(digest, seg)
                up.sendHole(seg, 0)
                continue
            digest.update(seg)
            _send_all(up, seg)
            sent += len(seg)
            on_bytes(len(seg))
        down.finish()
        up.finish()
    except BaseException:
        _abort(down, up)
        raise
    return Read(digest.hexdigest(), backing_name(head), sent)


# --- volumes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VolFacts:
    name: str
    path: str
    format: str | None
    capacity: int
    allocation: int
    physical: int
    mtime: str


def vol_facts(vol: Any) -> VolFacts:
    root = ET.fromstring(vol.XMLDesc(0))

    def size(tag: str) -> int:
        el = root.find(tag)
        return int(el.text or 0) if el is not None and el.text else 0

    fmt = root.find("target/format")
    return VolFacts(
        name=root.findtext("name") or vol.name(), path=root.findtext("target/path") or vol.path(),
        format=fmt.get("type") if fmt is not None else None, capacity=size("capacity"),
        allocation=size("allocation"), physical=size("physical") or size("allocation"),
        mtime=root.findtext("target/timestamps/mtime") or "",
    )


def volume_chain(conn: Any, top: str, what: str, host: str) -> list[tuple[Any, VolFacts]]:
    """A disk's layers, base first, found by following each volume's ``<backingStore>``: a
    shut-off domain's XML names only its top image."""
    out: list[tuple[Any, VolFacts]] = []
    path: str | None = top
    while path:
        if len(out) > 255 or any(f.path == path for _, f in out):
            raise BadInput(f"the backing chain of {what} loops or is longer than 256 layers")
        try:
            vol = conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            raise BadInput(f"{path} ({what}) is not in a storage pool on {host}",
                           hint="replication moves layers through libvirt storage pools: "
                                "define a directory pool over its directory") from exc
        out.append((vol, vol_facts(vol)))
        path = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")
    return out[::-1]


def _pool_type(pool: Any) -> str:
    return ET.fromstring(pool.XMLDesc(0)).get("type", "")


def _pool_path(pool: Any) -> str:
    return ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""


def _new_volume(pool: Any, name: str) -> Any:
    """An empty file volume; the upload fills it and libvirt probes its format afterwards."""
    xml = (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>0</capacity>"
           f"<target><format type='raw'/></target></volume>")
    return pool.createXML(xml, 0)


def _lookup(pool: Any, name: str) -> Any | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def _delete(pool: Any, name: str) -> None:
    vol = _lookup(pool, name)
    if vol is not None:
        with contextlib.suppress(libvirt.libvirtError):
            vol.delete(0)


# --- the record ----------------------------------------------------------------------------


@dataclass
class LayerRecord:
    index: int
    primary_path: str
    volume: str  # the replica volume's name in the record's pool
    checksum: str
    data_bytes: int
    physical: int  # the primary file's size when it shipped
    mtime: str  # the primary file's mtime when it shipped
    sealed: bool  # was it a sealed layer at the primary when it shipped?
    shipped_at: float


@dataclass
class ReplicaRecord:
    """Replication state of one VM, kept in the destination pool (see the module docstring)."""

    vm: str
    uuid: str
    primary_host: str
    replica_host: str
    pool: str
    rpo_s: float
    last_sync: float | None = None
    seq: int = 0
    version: int = RECORD_VERSION
    domain_xml: str = ""  # the primary's inactive definition at the last sync, for failover without it
    disks: dict[str, list[LayerRecord]] = field(default_factory=dict)

    @staticmethod
    def from_json(text: str) -> ReplicaRecord:
        doc = json.loads(text)
        if doc.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {doc.get('version')}")
        disks = {d: [LayerRecord(**layer) for layer in layers] for d, layers in doc.pop("disks").items()}
        return ReplicaRecord(**doc, disks=disks)


def record_names(vm: str) -> tuple[str, ...]:
    return tuple(f"{vm}.hvc-replica.{slot}.json" for slot in RECORD_SLOTS)


def _download_small(conn: Any, vol: Any) -> bytes:
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
        _abort(stream)
        raise
    return bytes(out)


def read_record(conn: Any, pool: Any, vm: str) -> ReplicaRecord | None:
    """The newest valid record of ``vm`` in ``pool``, or None."""
    best: ReplicaRecord | None = None
    for name in record_names(vm):
        vol = _lookup(pool, name)
        if vol is None:
            continue
        try:
            record = ReplicaRecord.from_json(_download_small(conn, vol).decode())
        except (libvirt.libvirtError, ValueError, TypeError, KeyError, OperationFailed):
            continue  # a torn or foreign slot: the other one holds the state
        if best is None or record.seq > best.seq:
            best = record
    return best


def write_record(conn: Any, pool: Any, record: ReplicaRecord) -> None:
    """Write ``record`` with the next ``seq`` into the slot not holding the current one."""
    record.seq += 1
    name = record_names(record.vm)[record.seq % len(RECORD_SLOTS)]
    data = json.dumps(asdict(record), indent=1, sort_keys=True).encode()
    _delete(pool, name)
    vol = _new_volume(pool, name)
    stream = conn.newStream(0)
    vol.upload(stream, 0, 0, 0)
    try:
        _send_all(stream, data)
        stream.finish()
    except BaseException:
        _abort(stream)
        raise


@dataclass(frozen=True, slots=True)
class Found:
    host: str  # inventory name of the replica host
    uri: str
    pool: str
    record: ReplicaRecord


def find_records(backend: LibvirtBackend, inv: Inventory, vm: str, skip: str | None = None) -> list[Found]:
    """Every replica record of ``vm`` on the connected hosts other than ``skip``."""
    out: list[Found] = []
    for host in inv.hosts:
        if host.name == skip:
            continue
        conn_host = backend.host_for(host.name)
        conn = conn_host.connection if conn_host is not None else None
        if conn is None:
            continue
        try:
            pools = conn.listAllStoragePools(_POOLS_ACTIVE)
        except libvirt.libvirtError:
            continue
        for pool in pools:
            try:
                record = read_record(conn, pool, vm)
            except libvirt.libvirtError:
                continue
            if record is not None:
                out.append(Found(host.name, conn_host.uri if conn_host else host.uri, pool.name(), record))
    return out


def replica_links(backend: LibvirtBackend, inv: Inventory | None = None,
                  now: float | None = None) -> tuple[ReplicaLink, ...]:
    """The replication status of every VM in ``inv`` that has a record on another host.

    Reads each connected host's pools (two small volume downloads per VM and pool) and walks
    each replicated disk's volumes at the primary, so call it from a refresh, not a UI loop."""
    inv = inv or backend.snapshot()
    now = time.time() if now is None else now
    out: list[ReplicaLink] = []
    for vm in inv.vms:
        for found in find_records(backend, inv, vm.name, skip=vm.host):
            if found.record.uuid == vm.uuid:
                out.extend(_links(backend, inv, vm, found, now))
    return tuple(out)


def _links(backend: LibvirtBackend, inv: Inventory, vm: Vm, found: Found, now: float) -> list[ReplicaLink]:
    rec = found.record
    chains = [c for c in inv.chains if c.vm == vm.name and c.host == vm.host]
    host = backend.host_for(vm.host)
    conn = host.connection if host is not None else None
    if conn is not None:  # the chains as they are now, whole even for a shut-off guest
        with contextlib.suppress(HvcError, libvirt.libvirtError):
            live = parse_domain(conn.lookupByUUIDString(vm.uuid).XMLDesc(0), vm.host).chains
            chains = [replace(c, layers=tuple(
                DiskLayer(f.path, f.format, f.capacity, f.allocation)
                for _, f in volume_chain(conn, c.active.path, f"{vm.name}/{c.disk}", vm.host))) for c in live]
    out = []
    for chain in chains:
        layers = rec.disks.get(chain.disk, [])
        present = _matching_prefix(chain, layers)
        states = tuple(LayerState.PRESENT if i < present else LayerState.MISSING for i in range(len(chain.layers)))
        replica = DiskChain(vm.name, found.host, chain.disk, tuple(
            DiskLayer(path=layer.volume, format="qcow2", allocated_bytes=layer.data_bytes) for layer in layers))
        lag = None if rec.last_sync is None else max(0.0, now - rec.last_sync)
        out.append(ReplicaLink(vm=vm.name, disk=chain.disk, primary_host=vm.host, replica_host=found.host,
                               primary=chain, replica=replica, layer_states=states, last_sync=rec.last_sync,
                               lag_s=lag, rpo_s=rec.rpo_s))
    return out


def _matching_prefix(chain: DiskChain, layers: list[LayerRecord]) -> int:
    n = 0
    for layer, rec in zip(chain.layers, layers, strict=False):
        if layer.path != rec.primary_path:
            break
        n += 1
    return n


# --- replicate -----------------------------------------------------------------------------


class _Tally:
    """Bytes done in one phase, sampled into Progress events at most every ``EMIT_EVERY_S``."""

    def __init__(self, emit: Emit, meter: Meter, phase: str, total: int, layers_left: int = 0) -> None:
        self.emit, self.meter, self.phase, self.total = emit, meter, phase, total
        self.done, self.layers_left, self.disk = 0, layers_left, ""
        self._last = 0.0

    def add(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self._last >= EMIT_EVERY_S:
            self.sample()

    def sample(self) -> None:
        self._last = time.monotonic()
        detail: dict[str, float | int | str] = {}
        if self.phase == "shipping":
            detail = {"disk": self.disk, "layers_left": self.layers_left, "bytes_shipped": self.done}
        self.emit(self.meter.sample(self.phase, self.done, max(0, self.total - self.done), detail=detail))


@dataclass
class _Step:
    disk: str
    index: int
    vol: Any  # primary volume
    facts: VolFacts
    sealed: bool


def _no_replica(backend: LibvirtBackend, inv: Inventory, vm: Vm, message: str, hint: str) -> NoReturn:
    """No record was found: say so, or that a host that may hold it is not connected."""
    away = [h.name for h in inv.hosts if h.name != vm.host
            and ((c := backend.host_for(h.name)) is None or c.connection is None)]
    if away:
        raise BadInput(f"no replica of {vm.name} found on the connected hosts ({', '.join(away)} not connected)",
                       hint="wait for the recovery host to come back")
    raise BadInput(message, hint=hint)


def _connected(backend: LibvirtBackend, name: str, role: str) -> Any:
    host = backend.host_for(name)
    if host is None or host.connection is None:
        raise HostUnreachable(f"{name} ({role}) is not connected", hint="wait for it to come back")
    return host


class LibvirtReplicate(Operation):
    def __init__(self, backend: LibvirtBackend, request: ReplicateRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        chains = [c for c in inv.chains if c.vm == vm.name and c.host == vm.host]
        if not chains:
            raise BadInput(f"{vm.name} has no disks to replicate")
        if request.rpo_s <= 0:
            raise BadInput(f"RPO {request.rpo_s}s must be positive")
        src = _connected(backend, vm.host, "the primary")
        existing = [f for f in find_records(backend, inv, vm.name, skip=vm.host) if f.record.uuid == vm.uuid]
        if request.to is None:
            if not existing:
                _no_replica(backend, inv, vm, f"{vm.name} is not replicated yet", "give --to HOST to start")
            target = existing[0].host
        else:
            target = find_host(inv, request.to).name
            if target == vm.host:
                raise BadInput(f"{vm.name} runs on {target}", hint="replicate to another host")
            others = sorted({f.host for f in existing} - {target})
            if others:
                raise BadInput(f"{vm.name} already replicates to {', '.join(others)}",
                               hint="sync it without --to, or remove that replica first")
        dst = _connected(backend, target, "the recovery host")
        pool_name = self._check_layers(src.connection, vm, chains)
        try:
            dst_pool = dst.connection.storagePoolLookupByName(pool_name)
            if not dst_pool.isActive():
                raise BadInput(f"storage pool {pool_name} on {target} is not active",
                               hint=f"start it (`virsh pool-start {pool_name}`)")
        except libvirt.libvirtError as exc:
            raise BadInput(f"{target} has no storage pool {pool_name} for the replica",
                           hint=f"define a directory pool called {pool_name} there") from exc
        if _pool_type(dst_pool) not in DIR_POOLS:
            raise BadInput(f"storage pool {pool_name} on {target} is a {_pool_type(dst_pool)} pool",
                           hint="the replica chain needs a directory pool (dir, fs or netfs)")
        self.backend, self.vm, self.target, self.pool_name = backend, vm, target, pool_name
        self.src_uri, self.dst_uri = src.uri, dst.uri
        self.rpo_s = request.rpo_s if request.to is not None or not existing else existing[0].record.rpo_s
        self.disks = [c.disk for c in chains]
        super().__init__(new_job(JobKind.REPLICATE, (vm.name,), ("shipping", "verifying"),
                                 f"replicate {vm.name} {vm.host} → {target}"))

    @staticmethod
    def _check_layers(conn: Any, vm: Vm, chains: list[DiskChain]) -> str:
        """Every layer is a file volume in a pool on the primary; returns the pool of the first
        disk's active layer (the replica goes to the pool of that name at the destination)."""
        pool_name = ""
        for chain in chains:
            layers = volume_chain(conn, chain.active.path, f"{vm.name}/{chain.disk}", vm.host)
            for i, (_vol, facts) in enumerate(layers):
                if facts.format != "qcow2" and not (i == 0 and facts.format == "raw"):
                    raise BadInput(f"{facts.path} is {facts.format or 'of unknown format'}",
                                   hint="only qcow2 chains (on a qcow2 or raw base) replicate")
            if not pool_name:
                pool_name = layers[-1][0].storagePoolLookupByVolume().name()
        return pool_name

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        started = time.time()
        job = self.job

        def result(outcome: Outcome, reason: str) -> JobResult:
            return JobResult(job.id, outcome, reason, started, time.time())

        opened: list[Any] = []
        try:
            for uri in (self.src_uri, self.dst_uri):
                opened.append(open_job_connection(uri))
        except libvirt.libvirtError as exc:
            for conn in opened:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
            return result(Outcome.FAILED, f"cannot connect: {libvirt_reason(exc)}; nothing changed")
        src, dst = opened
        try:
            return self._run(src, dst, emit, cancel, result)
        except HvcError as exc:
            return result(Outcome.FAILED, exc.one_line())
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"{libvirt_reason(exc)}; finished layers stay, the next sync resumes")
        finally:
            for conn in (src, dst):
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
            self.backend.refresh(replicas=True)

    def _run(self, src: Any, dst: Any, emit: Emit, cancel: threading.Event,
             result: Callable[[Outcome, str], JobResult]) -> JobResult:
        job, vm = self.job, self.vm
        pool = dst.storagePoolLookupByName(self.pool_name)
        pool.refresh(0)
        record = read_record(dst, pool, vm.name) or ReplicaRecord(
            vm.name, vm.uuid, vm.host, self.target, self.pool_name, self.rpo_s)
        if record.uuid != vm.uuid:
            raise OperationFailed(f"the replica record for {vm.name} on {self.target} belongs to another VM "
                                  f"(uuid {record.uuid})", hint="remove it first")
        record.rpo_s, record.primary_host, record.replica_host = self.rpo_s, vm.host, self.target
        dom = src.lookupByUUIDString(vm.uuid)
        running = dom.isActive() == 1
        chains = {c.disk: [facts.path for _, facts in volume_chain(src, c.active.path, f"{vm.name}/{c.disk}",
                                                                   vm.host)]
                  for c in parse_domain(dom.XMLDesc(0), vm.host).chains}  # as it is now
        self._drop_unlisted(pool, record)  # before the plan trims it: what an interrupted sync left
        record.domain_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        plan, notes = self._plan(src, record, chains, running)
        total = sum(step.facts.allocation for step in plan)
        meter = Meter(job.id, "bytes", time.time)
        emit(PhaseChanged(job.id, "shipping", f"{len(plan)} layer(s), about {total} bytes to {self.target}",
                          at=time.time()))
        tally = _Tally(emit, meter, "shipping", total, layers_left=len(plan))
        for step in plan:
            layers = record.disks.setdefault(step.disk, [])
            parent = layers[step.index - 1].volume if step.index else None
            name = self._volume_name(pool, step)
            dst_vol = _new_volume(pool, name)
            tally.disk = step.disk
            try:
                read = ship_layer(src, step.vol, dst, dst_vol, parent, tally.add, cancel)
                after = vol_facts(step.vol)
                if (after.mtime, after.physical) != (step.facts.mtime, step.facts.physical):
                    raise OperationFailed(f"{step.facts.path} changed while it shipped",
                                          hint="the guest wrote it; sync again once it is quiet")
            except Cancelled:
                _delete(pool, name)
                return result(Outcome.CANCELLED, f"interrupted after {tally.done} bytes; finished layers stay, "
                              "the partial one is discarded and the next sync resumes there")
            except BaseException:
                _delete(pool, name)
                raise
            layers[step.index:] = [LayerRecord(
                step.index, step.facts.path, name, read.checksum, read.data_bytes, step.facts.physical,
                step.facts.mtime, step.sealed, time.time())]
            write_record(dst, pool, record)  # the commit point: now the layer counts
            self._drop_unlisted(pool, record)  # what it (and the plan's trimming) superseded
            tally.layers_left -= 1
            tally.sample()
            self.backend.refresh(replicas=True)
        emit(PhaseChanged(job.id, "verifying", "comparing the replica chain layer by layer", at=time.time()))
        try:
            self._verify(src, dst, pool, record, emit, meter, cancel)
        except Cancelled:
            return result(Outcome.CANCELLED, f"{tally.done} bytes shipped, then cancelled while verifying; the "
                          "shipped layers stay and the next sync verifies them")
        record.last_sync = time.time()
        write_record(dst, pool, record)
        reason = f"{tally.done} bytes shipped"
        if notes:
            reason += "; " + "; ".join(notes)
        return result(Outcome.SUCCEEDED, reason)

    def _plan(self, src: Any, record: ReplicaRecord, chains: dict[str, list[str]],
              running: bool) -> tuple[list[_Step], list[str]]:
        """The layers the replica lacks, in order; the record is trimmed to what still holds."""
        plan: list[_Step] = []
        notes: list[str] = []
        for disk in self.disks:
            chain = chains.get(disk)
            if chain is None:
                raise OperationFailed(f"{self.vm.name} no longer has disk {disk}", hint="refresh and sync again")
            layers = record.disks.get(disk, [])
            top = len(chain) - 1
            keep = 0
            for i, path in enumerate(chain):
                if i >= len(layers) or layers[i].primary_path != path:
                    break
                facts = vol_facts(src.storageVolLookupByPath(path))
                moved = (facts.mtime, facts.physical) != (layers[i].mtime, layers[i].physical)
                if moved and not layers[i].sealed and not (i == top and running):
                    break  # an active layer that changed since it shipped: ship it again
                if not moved and i < top:
                    layers[i].sealed = True  # shipped while active, sealed since, unchanged
                keep = i + 1
            del layers[keep:]  # what no longer matches the primary's chain goes (orphans are removed)
            for i in range(keep, len(chain)):
                if i == top and running:
                    notes.append(f"{disk}'s active layer was not shipped: {self.vm.name} is running and writes "
                                 "it; seal it with a disk-only snapshot or shut the guest down, then sync")
                    break
                vol = src.storageVolLookupByPath(chain[i])
                plan.append(_Step(disk, i, vol, vol_facts(vol), sealed=i < top))
        return plan, notes

    def _volume_name(self, pool: Any, step: _Step) -> str:
        stem = os.path.basename(step.facts.path)
        stem = stem[: -len(".qcow2")] if stem.endswith(".qcow2") else stem
        base = f"{self.vm.name}.{step.disk}.{step.index}.{stem}"
        names = set(pool.listVolumes())
        if f"{base}.qcow2" not in names:
            return f"{base}.qcow2"
        return next(f"{base}.g{g}.qcow2" for g in range(2, 10_000) if f"{base}.g{g}.qcow2" not in names)

    def _drop_unlisted(self, pool: Any, record: ReplicaRecord) -> None:
        """Volumes named like this VM's replica layers that the record does not list: left by an
        interrupted sync, or superseded once the record stopped listing them."""
        listed = {layer.volume for layers in record.disks.values() for layer in layers}
        prefixes = tuple(f"{self.vm.name}.{disk}." for disk in self.disks)
        for name in pool.listVolumes():
            if name.startswith(prefixes) and name.endswith(".qcow2") and name not in listed:
                _delete(pool, name)

    def _verify(self, src: Any, dst: Any, pool: Any, record: ReplicaRecord, emit: Emit, meter: Meter,
                cancel: threading.Event) -> None:
        pool.refresh(0)
        total = 0
        for layers in record.disks.values():
            for layer in layers:
                vol = _lookup(pool, layer.volume)
                total += vol_facts(vol).allocation if vol is not None else 0
        tally = _Tally(emit, meter, "verifying", total)
        pool_dir = _pool_path(pool)
        for disk, layers in record.disks.items():
            for i, layer in enumerate(layers):
                problem = self._check_layer(src, dst, pool, layers, i, tally.add, cancel)
                if problem:
                    del layers[i:]
                    write_record(dst, pool, record)
                    self._drop_unlisted(pool, record)
                    raise OperationFailed(
                        f"replica of {self.vm.name}/{disk} differs from the primary at layer {i} "
                        f"({os.path.basename(layer.primary_path)}): {problem}",
                        hint="sync again to re-ship it from that layer; the replica is not usable until it matches")
            if layers:
                problem = _qemu_img_chain(self.dst_uri, pool_dir, [lay.volume for lay in layers])
                if problem:
                    del layers[:]
                    write_record(dst, pool, record)
                    self._drop_unlisted(pool, record)
                    raise OperationFailed(f"replica chain of {self.vm.name}/{disk}: {problem}",
                                          hint="sync again to re-ship it")
        tally.total = tally.done
        tally.sample()

    @staticmethod
    def _check_layer(src: Any, dst: Any, pool: Any, layers: list[LayerRecord], i: int,
                     on_bytes: Callable[[int], None], cancel: threading.Event) -> str:
        layer = layers[i]
        vol = _lookup(pool, layer.volume)
        if vol is None:
            return f"replica volume {layer.volume} is missing"
        fmt = vol_facts(vol).format
        if fmt not in ("qcow2", "raw") or (fmt == "raw" and i > 0):
            return f"replica volume {layer.volume} is {fmt}"
        got = read_layer(dst, vol, on_bytes, cancel)
        want_parent = layers[i - 1].volume if i else None
        if got.backing != want_parent:
            return f"it is backed by {got.backing!r}, not {want_parent!r}"
        if got.checksum != layer.checksum:
            return "its checksum differs from the primary's when it shipped"
        try:
            primary = src.storageVolLookupByPath(layer.primary_path)
        except libvirt.libvirtError:
            return "" if not layer.sealed else f"sealed primary layer {layer.primary_path} is gone"
        facts = vol_facts(primary)
        if layer.sealed and (facts.mtime, facts.physical) != (layer.mtime, layer.physical):
            now = read_layer(src, primary, None, cancel)
            if now.checksum != layer.checksum:
                return "the sealed primary layer changed since it shipped"
        return ""


def _qemu_img_chain(uri: str, pool_dir: str, volumes: list[str]) -> str:
    """Check the replica chain with ``qemu-img info --backing-chain`` when the destination pool
    is a directory on this machine; "" when it holds (or cannot be checked from here)."""
    top = os.path.join(pool_dir, volumes[-1])
    if not (is_local(uri) and pool_dir and os.path.isfile(top)):
        return ""
    try:
        done = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", top],
                              capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if done.returncode != 0:
        return f"qemu-img info failed: {done.stderr.strip()}"
    chain = json.loads(done.stdout)
    got = [os.path.realpath(c["filename"]) for c in chain]
    want = [os.path.realpath(os.path.join(pool_dir, v)) for v in reversed(volumes)]
    if got != want:
        return f"qemu-img sees {' ← '.join(map(os.path.basename, reversed(got)))}"
    for entry in chain:
        backing = entry.get("backing-filename")
        if backing and os.path.isabs(backing):
            return f"{os.path.basename(entry['filename'])} has an absolute backing path {backing}"
    return ""


# --- failover ------------------------------------------------------------------------------


def trial_name(vm: str) -> str:
    return f"{vm}-testfo"


def trial_overlay_name(vm: str, disk: str) -> str:
    return f"{trial_name(vm)}.{disk}.qcow2"


class LibvirtFailover(Operation):
    """Test failover: a transient ``<vm>-testfo`` on the recovery host, on throwaway qcow2
    overlays over the replica chains, sized and typed from the primary's definition saved in
    the record at the last sync (so the primary may be down); replication is untouched. It has
    no network interface
    (so it cannot clash with the primary), the disks and a pty serial console only. Forcing it
    off ends the test; its overlays stay until the next test failover replaces them.

    Planned failover is not implemented for libvirt yet."""

    def __init__(self, backend: LibvirtBackend, request: FailoverRequest) -> None:
        if not request.test:
            raise Unsupported("planned failover is not implemented for libvirt hosts yet",
                              hint="run a test failover (`hvc failover VM --test`); for a real one, shut the VM "
                                   "down, sync, and define it on the recovery host over its replica chain")
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        found = [f for f in find_records(backend, inv, vm.name, skip=vm.host) if f.record.uuid == vm.uuid]
        if not found:
            _no_replica(backend, inv, vm, f"{vm.name} is not replicated", "replicate it first with `hvc replicate`")
        link = found[0]
        tops = {disk: layers[-1].volume for disk, layers in link.record.disks.items() if layers}
        if not tops:
            raise BadInput(f"no layer of {vm.name} has reached {link.host} yet", hint="sync it first")
        dst = _connected(backend, link.host, "the recovery host")
        name = trial_name(vm.name)
        with contextlib.suppress(libvirt.libvirtError):
            dst.connection.lookupByName(name)
            raise BadInput(f"a test failover of {vm.name} is already running as {name} on {link.host}",
                           hint=f"force off {name} first")
        # The definition as of the last sync travels in the record: the primary may be down.
        self.primary_xml = link.record.domain_xml
        if not self.primary_xml:
            src = _connected(backend, vm.host, "the primary")
            try:
                self.primary_xml = src.connection.lookupByUUIDString(vm.uuid).XMLDesc(
                    libvirt.VIR_DOMAIN_XML_INACTIVE)
            except libvirt.libvirtError as exc:
                raise BadInput(f"cannot read {vm.name}'s definition on {vm.host}: {libvirt_reason(exc)}") from exc
        self.backend, self.vm, self.link, self.tops, self.name = backend, vm, link, tops, name
        self.dst_uri = dst.uri
        super().__init__(new_job(JobKind.FAILOVER, (vm.name, name), ("starting",),
                                 f"test failover of {vm.name} to {link.host}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        started = time.time()
        job = self.job

        def result(outcome: Outcome, reason: str) -> JobResult:
            return JobResult(job.id, outcome, reason, started, time.time())

        emit(PhaseChanged(job.id, "starting", f"starting {self.name} on {self.link.host} from a throwaway "
                          "overlay on the replica chain", at=started))
        try:
            conn = open_job_connection(self.dst_uri)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"cannot reach {self.link.host}: {libvirt_reason(exc)}")
        made: list[str] = []
        try:
            pool = conn.storagePoolLookupByName(self.link.pool)
            pool.refresh(0)
            overlays: dict[str, str] = {}
            for disk, top in self.tops.items():
                base = pool.storageVolLookupByName(top)
                facts = vol_facts(base)
                name = trial_overlay_name(self.vm.name, disk)
                _delete(pool, name)  # left by an earlier test failover
                xml = (f"<volume><name>{escape(name)}</name>"
                       f"<capacity unit='bytes'>{facts.capacity}</capacity>"
                       f"<target><format type='qcow2'/></target>"
                       f"<backingStore><path>{escape(facts.path)}</path>"
                       f"<format type='{escape(facts.format or 'qcow2')}'/></backingStore></volume>")
                overlays[disk] = pool.createXML(xml, 0).path()
                made.append(name)
            conn.createXML(trial_domain_xml(self.primary_xml, self.name, overlays), 0)
        except libvirt.libvirtError as exc:
            for name in made:
                _delete(pool, name)
            return result(Outcome.FAILED, f"{libvirt_reason(exc)}; replication is untouched")
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self.backend.refresh(replicas=True)
        return result(Outcome.SUCCEEDED, f"{self.name} runs on {self.link.host} from a throwaway overlay; "
                                         "replication continues untouched")


def trial_domain_xml(primary_xml: str, name: str, overlays: dict[str, str]) -> str:
    """A minimal transient domain from the primary's definition: type, memory, vCPUs, <os> and
    <features>; the given disks (same targets and buses) on their overlays; a pty serial."""
    root = ET.fromstring(primary_xml)
    dom = ET.Element("domain", type=root.get("type", "kvm"))
    ET.SubElement(dom, "name").text = name
    for tag in ("memory", "currentMemory", "vcpu"):
        el = root.find(tag)
        if el is not None:
            copy = ET.SubElement(dom, tag, {k: v for k, v in el.attrib.items() if k in ("unit", "current")})
            copy.text = el.text
    os_el = root.find("os")
    if os_el is not None:
        for nvram in os_el.findall("nvram"):
            os_el.remove(nvram)  # the primary's UEFI variables are its own
        dom.append(os_el)
    features = root.find("features")
    if features is not None:
        dom.append(features)
    devices = ET.SubElement(dom, "devices")
    buses = set()
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if dev not in overlays or target is None:
            continue
        bus = target.get("bus", "virtio")
        buses.add(bus)
        el = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(el, "driver", name="qemu", type="qcow2")
        ET.SubElement(el, "source", file=overlays[dev])
        ET.SubElement(el, "target", dev=dev, bus=bus)
    if "scsi" in buses:
        for ctl in root.findall("devices/controller[@type='scsi']"):
            devices.append(ET.Element("controller", {k: v for k, v in ctl.attrib.items() if k != "address"}))
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")
