"""Planned failover: the VM moves to its recovery host onto the replica chain, and replication reverses.

Phases:

- ``stopping``: when the primary is reachable and the guest runs, a graceful shutdown, then
  a forced stop after ``SHUTDOWN_TIMEOUT_S`` (the operator confirmed before the job ran).
- ``final sync``: an ordinary sync with the guest off, so the active layer ships whole and
  no layer is missing at the replica.
- ``starting``: a fresh overlay on the replica's top layer, named like the primary's active
  layer, becomes the active disk; the VM is defined persistently on the recovery host from the
  definition saved in the record (same uuid) and started. Only then is it undefined on the old
  primary (its volumes stay: they become the reverse replica).
- ``reversing``: the old primary's layers are the replica now: their qcow2 headers are
  re-pointed (relative names, through volume streams) at their parents in the pool, a reversed
  record in the old primary's pool lists them against the recovery host's replica volumes
  (same content checksums), and the forward record is removed. A later sync without ``--to``
  ships from the recovery host back to the old primary, only the layers written since.

With the primary unreachable, the VM starts from what the last sync shipped; it cannot be
undefined there or reversed until that host is back (then undefine it there and replicate
back with ``--to``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import libvirt

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput, HvcError, OperationFailed
from backends.libvirt.ops import libvirt_reason, open_job_connection
from backends.libvirt.replication.header import QCOW2_MAGIC, backing_name, cluster_size, repoint
from backends.libvirt.replication.locate import replica_of
from backends.libvirt.replication.operation import LibvirtReplicate
from backends.libvirt.replication.record import (
    LayerRecord,
    ReplicaRecord,
    read_record,
    record_names,
    write_record,
)
from backends.libvirt.replication.volumes import delete, lookup, vol_facts
from backends.models import JobEvent, JobKind, JobResult, Outcome, PhaseChanged, Progress
from backends.progress import Meter
from backends.requests import FailoverRequest, ReplicateRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend

SHUTDOWN_TIMEOUT_S = 60.0  # a guest OS gets this long to honour the shutdown before a forced stop
PHASES = ("stopping", "final sync", "starting", "reversing")


class LibvirtPlannedFailover(Operation):
    """Planned failover of a replicated VM to its recovery host (see this module's docstring)."""

    shutdown_timeout_s = SHUTDOWN_TIMEOUT_S

    def __init__(self, backend: LibvirtBackend, request: FailoverRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        link = replica_of(backend, inv, vm)
        rec = link.record
        if not rec.domain_xml or not any(rec.disks.values()):
            raise BadInput(f"no complete sync of {vm.name} has reached {link.host} yet", hint="sync it first")
        dst = backend.host_for(link.host)
        if dst is None or dst.connection is None:
            raise BadInput(f"the recovery host {link.host} is not connected", hint="wait for it to come back")
        try:
            dst.connection.lookupByUUIDString(vm.uuid)
            raise BadInput(f"{link.host} already defines a VM with {vm.name}'s uuid",
                           hint="remove it there first")
        except libvirt.libvirtError:
            pass
        src = backend.host_for(vm.host)
        self.primary_up = src is not None and src.connection is not None
        self.sync: LibvirtReplicate | None = None
        if self.primary_up:
            self.sync = LibvirtReplicate(backend, ReplicateRequest(vm.name))  # checks chains and pools
        self.backend, self.vm, self.link = backend, vm, link
        self.src_uri = src.uri if src is not None else ""
        self.dst_uri = dst.uri
        super().__init__(new_job(JobKind.FAILOVER, (vm.name,), PHASES,
                                 f"planned failover of {vm.name} {vm.host} → {link.host}"))
        if self.sync is not None:
            self.sync.job = self.job  # its events and result are this job's

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        started = time.time()
        job = self.job

        def result(outcome: Outcome, reason: str) -> JobResult:
            return JobResult(job.id, outcome, reason, started, time.time())

        try:
            return self._run(emit, cancel, result)
        except HvcError as exc:
            return result(Outcome.FAILED, exc.one_line())
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, libvirt_reason(exc))
        finally:
            self.backend.refresh(replicas=True)

    def _run(self, emit: Emit, cancel: threading.Event,
             result: Callable[[Outcome, str], JobResult]) -> JobResult:
        job, vm, link = self.job, self.vm, self.link
        meter = Meter(job.id, "steps", time.time)
        notes: list[str] = []
        # -- stopping ---------------------------------------------------------------------
        emit(PhaseChanged(job.id, "stopping", f"shutting {vm.name} down on {vm.host}", at=time.time()))
        if self.primary_up:
            try:
                src = open_job_connection(self.src_uri)
            except libvirt.libvirtError as exc:
                return result(Outcome.FAILED, f"cannot reach {vm.host}: {libvirt_reason(exc)}; nothing changed")
            try:
                stopped = self._stop(src, emit, meter, cancel)
            finally:
                with contextlib.suppress(libvirt.libvirtError):
                    src.close()
            if stopped is not None:
                return result(Outcome.CANCELLED if cancel.is_set() else Outcome.FAILED, stopped)
        else:
            notes.append(f"{vm.host} was not reachable: {vm.name} starts from the last sync "
                         f"({self._age()}); undefine it on {vm.host} once it is back")
        # -- final sync -------------------------------------------------------------------
        emit(PhaseChanged(job.id, "final sync", f"shipping what {link.host} lacks while {vm.name} is off",
                          at=time.time()))
        if self.sync is not None:
            def relay(event: JobEvent) -> None:
                if not isinstance(event, PhaseChanged):  # its shipping/verifying: steps of this phase
                    emit(_renamed(event))

            synced = self.sync.run(relay, cancel)
            if synced.outcome is not Outcome.SUCCEEDED:
                return result(synced.outcome, f"final sync: {synced.reason}; {vm.name} stays (shut off) "
                                              f"on {vm.host}")
            notes.insert(0, f"final sync: {synced.reason}")
        # -- starting ---------------------------------------------------------------------
        emit(PhaseChanged(job.id, "starting", f"starting {vm.name} on {link.host} on the replica chain",
                          at=time.time()))
        dst = open_job_connection(self.dst_uri)
        try:
            pool = dst.storagePoolLookupByName(link.pool)
            pool.refresh(0)
            rec = read_record(dst, pool, vm.name)
            if rec is None or rec.uuid != vm.uuid:
                raise OperationFailed(f"the replica record of {vm.name} on {link.host} is gone")
            overlays = self._start(dst, pool, rec)
            emit(meter.sample("starting", 1, 0))
            if self.primary_up:
                self._undefine_primary()
            # -- reversing ----------------------------------------------------------------
            emit(PhaseChanged(job.id, "reversing", f"{vm.host} becomes the replica of {link.host}",
                              at=time.time()))
            if self.primary_up:
                try:
                    notes.append(self._reverse(dst, pool, rec, overlays))
                except (HvcError, libvirt.libvirtError) as exc:
                    reason = exc.one_line() if isinstance(exc, HvcError) else libvirt_reason(exc)
                    notes.append(f"replication was not reversed ({reason}); replicate {vm.name} "
                                 f"--to {vm.host} to start it again")
            emit(meter.sample("reversing", 1, 0))
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                dst.close()
        return result(Outcome.SUCCEEDED, f"{vm.name} runs on {link.host}; " + "; ".join(notes))

    def _age(self) -> str:
        last = self.link.record.last_sync
        return "never completed" if last is None else f"{time.time() - last:.0f}s ago"

    def _stop(self, src: Any, emit: Emit, meter: Meter, cancel: threading.Event) -> str | None:
        """Shut the guest down, forcing it after the timeout; None when it is off, else why not."""
        dom = src.lookupByUUIDString(self.vm.uuid)
        if not dom.isActive():
            emit(meter.sample("stopping", 1, 0))
            return None
        with contextlib.suppress(libvirt.libvirtError):
            dom.shutdown()
        deadline = time.monotonic() + self.shutdown_timeout_s
        while dom.isActive() and time.monotonic() < deadline:
            if cancel.is_set():
                return f"cancelled while {self.vm.name} shut down on {self.vm.host}; nothing else changed"
            emit(meter.sample("stopping", 0, 1, detail={"waited_s": round(self.shutdown_timeout_s
                                                                          - (deadline - time.monotonic()))}))
            time.sleep(0.5)
        if dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError as exc:
                if dom.isActive():
                    return f"cannot stop {self.vm.name} on {self.vm.host}: {libvirt_reason(exc)}"
        emit(meter.sample("stopping", 1, 0))
        return None

    def _start(self, dst: Any, pool: Any, rec: ReplicaRecord) -> dict[str, str]:
        """Overlays on the replica tops, the VM defined and started on them; undone on failure."""
        made: list[str] = []
        overlays: dict[str, str] = {}
        dom = None
        try:
            for disk, layers in rec.disks.items():
                top = vol_facts(pool.storageVolLookupByName(layers[-1].volume))
                name = os.path.basename(layers[-1].primary_path)
                if lookup(pool, name) is not None:
                    raise OperationFailed(f"{self.link.host} already has a volume {name} in {rec.pool}",
                                          hint="remove it, then fail over again")
                xml = (f"<volume><name>{escape(name)}</name>"
                       f"<capacity unit='bytes'>{top.capacity}</capacity>"
                       f"<target><format type='qcow2'/></target>"
                       f"<backingStore><path>{escape(top.path)}</path>"
                       f"<format type='{escape(top.format or 'qcow2')}'/></backingStore></volume>")
                overlays[disk] = pool.createXML(xml, 0).path()
                made.append(name)
            dom = dst.defineXML(failover_domain_xml(rec.domain_xml, overlays))
            dom.create()
        except BaseException:
            if dom is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
            for name in made:
                delete(pool, name)
            raise
        return overlays

    def _undefine_primary(self) -> None:
        """Remove the definition (not the volumes) on the old primary."""
        src = open_job_connection(self.src_uri)
        try:
            dom = src.lookupByUUIDString(self.vm.uuid)
            flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                     | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError:
                dom.undefine()
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                src.close()

    def _reverse(self, dst: Any, pool: Any, rec: ReplicaRecord, overlays: dict[str, str]) -> str:
        """Make the old primary's layers the replica of the recovery host's chain; a note."""
        vm, link = self.vm, self.link
        src = open_job_connection(self.src_uri)
        try:
            old_pool = src.storagePoolLookupByName(rec.pool)
            old_pool.refresh(0)
            now = time.time()
            back = ReplicaRecord(vm.name, vm.uuid, link.host, vm.host, rec.pool, rec.rpo_s,
                                 last_sync=rec.last_sync,
                                 domain_xml=dst.lookupByUUIDString(vm.uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            kept = 0
            for disk, layers in rec.disks.items():
                out = back.disks.setdefault(disk, [])
                for layer in layers:
                    try:
                        old = src.storageVolLookupByPath(layer.primary_path)
                    except libvirt.libvirtError:
                        break
                    if old.storagePoolLookupByVolume().name() != rec.pool:
                        break  # only one pool holds a replica chain: the rest ships again
                    _point_at(src, old, out[-1].volume if out else None)
                    mine = vol_facts(pool.storageVolLookupByName(layer.volume))
                    out.append(LayerRecord(len(out), mine.path, old.name(), layer.checksum, layer.data_bytes,
                                           mine.physical, mine.mtime, True, now))
                kept += len(out)
            for name in record_names(vm.name):  # a stale record there must not outrank this one
                delete(old_pool, name)
            write_record(src, old_pool, back)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                src.close()
        for name in record_names(vm.name):
            delete(pool, name)  # the forward record: the replica chain here is the primary's now
        return (f"replication reversed: {kept} layer(s) on {vm.host} now replicate {vm.name} from {link.host}; "
                f"sync with `hvc replicate {vm.name}`")


def _renamed(event: JobEvent) -> JobEvent:
    """The final sync's progress as this job's phase, its own phase as the ``step``."""
    if isinstance(event, Progress):
        return replace(event, phase="final sync", detail={**event.detail, "step": event.phase})
    return event


def _read_head(conn: Any, vol: Any) -> bytes:
    """The first cluster of a qcow2 volume (24 bytes when it is not qcow2)."""
    def read(length: int) -> bytes:
        stream = conn.newStream(0)
        vol.download(stream, 0, length, 0)
        out = bytearray()
        try:
            while len(out) < length and (chunk := stream.recv(length - len(out))):
                if isinstance(chunk, int):
                    raise OperationFailed(f"volume stream returned {chunk}")
                out += chunk
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
        return bytes(out)

    head = read(24)
    size = cluster_size(head)
    return read(size) if size else head


def _point_at(conn: Any, vol: Any, parent: str | None) -> None:
    """Re-point a qcow2 layer's backing name at ``parent`` (a volume of its pool), in place."""
    head = _read_head(conn, vol)
    if head[:4] != QCOW2_MAGIC or backing_name(head) == parent:
        return
    patched = repoint(head, parent)
    stream = conn.newStream(0)
    vol.upload(stream, 0, len(patched), 0)
    try:
        sent = 0
        while sent < len(patched):
            n = stream.send(patched[sent:])
            if n < 0:
                raise OperationFailed("volume upload stream refused data")
            sent += n
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise


def failover_domain_xml(primary_xml: str, overlays: dict[str, str]) -> str:
    """The primary's definition with its replicated disks on ``overlays`` (keyed by target dev),
    removable media ejected and the primary's UEFI variable store path dropped."""
    root = ET.fromstring(primary_xml)
    for nvram in root.findall("os/nvram"):
        nvram.text = None  # libvirt makes a fresh one from the template at its default path
        for key in list(nvram.attrib):
            if key != "template":
                del nvram.attrib[key]
    devices = root.find("devices")
    missing = set(overlays)
    for disk in list(root.findall("devices/disk")):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if dev in overlays:
            disk.set("type", "file")
            for child in list(disk):
                if child.tag in ("source", "backingStore"):
                    disk.remove(child)
            driver = disk.find("driver")
            if driver is None:
                driver = ET.Element("driver", name="qemu")
                disk.insert(0, driver)
            driver.set("type", "qcow2")
            disk.insert(list(disk).index(driver) + 1, ET.Element("source", file=overlays[dev]))
            missing.discard(dev or "")
        elif disk.get("device") in ("cdrom", "floppy"):
            for child in disk.findall("source"):
                disk.remove(child)
        elif devices is not None:
            raise OperationFailed(f"disk {dev} is not replicated", hint="replicate every disk of the VM")
    if missing:
        raise OperationFailed(f"the saved definition has no disk {', '.join(sorted(missing))}")
    return ET.tostring(root, encoding="unicode")

