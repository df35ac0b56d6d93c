"""The replicate job: ship the layers the replica lacks, commit each in the record, then verify."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import libvirt

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput, HvcError, OperationFailed
from backends.libvirt.ops import libvirt_reason, open_job_connection
from backends.libvirt.parse import parse_domain
from backends.libvirt.replication.locate import find_records, no_replica
from backends.libvirt.replication.plan import drop_unlisted, plan_sync
from backends.libvirt.replication.record import ReplicaRecord, read_record, write_record
from backends.libvirt.replication.ship import Shipment
from backends.libvirt.replication.stream import Cancelled
from backends.libvirt.replication.tally import Tally
from backends.libvirt.replication.verify import verify
from backends.libvirt.replication.volumes import pool_type, volume_chain
from backends.models import DiskChain, JobKind, JobResult, Outcome, PhaseChanged, Vm
from backends.placement import find_host
from backends.progress import Meter
from backends.requests import ReplicateRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend

DIR_POOLS = frozenset({"dir", "fs", "netfs"})  # pools whose volumes are files in one directory


class LibvirtReplicate(Operation):
    """Start or sync a VM's replica on another host (see ``backends.libvirt.replication``)."""

    def __init__(self, backend: LibvirtBackend, request: ReplicateRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        chains = [c for c in inv.chains if c.vm == vm.name and c.host == vm.host]
        if not chains:
            raise BadInput(f"{vm.name} has no disks to replicate")
        if request.rpo_s <= 0:
            raise BadInput(f"RPO {request.rpo_s}s must be positive")
        src = backend.connected(vm.host, "the primary")
        existing = [f for f in find_records(backend, inv, vm.name, skip=vm.host) if f.record.uuid == vm.uuid]
        if request.to is None:
            if not existing:
                no_replica(backend, inv, vm, f"{vm.name} is not replicated yet", "give --to HOST to start")
            target = existing[0].host
        else:
            target = find_host(inv, request.to).name
            if target == vm.host:
                raise BadInput(f"{vm.name} runs on {target}", hint="replicate to another host")
            others = sorted({f.host for f in existing} - {target})
            if others:
                raise BadInput(f"{vm.name} already replicates to {', '.join(others)}",
                               hint="sync it without --to, or remove that replica first")
        dst = backend.connected(target, "the recovery host")
        pool_name = self._check_layers(src.connection, vm, chains)
        try:
            dst_pool = dst.connection.storagePoolLookupByName(pool_name)
            if not dst_pool.isActive():
                raise BadInput(f"storage pool {pool_name} on {target} is not active",
                               hint=f"start it (`virsh pool-start {pool_name}`)")
        except libvirt.libvirtError as exc:
            raise BadInput(f"{target} has no storage pool {pool_name} for the replica",
                           hint=f"define a directory pool called {pool_name} there") from exc
        if pool_type(dst_pool) not in DIR_POOLS:
            raise BadInput(f"storage pool {pool_name} on {target} is a {pool_type(dst_pool)} pool",
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
        """Open the job's own connections to both hosts and sync; refresh the replicas after."""
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
        drop_unlisted(pool, record, vm.name, self.disks)  # before the plan trims it: what an interrupted sync left
        record.domain_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        plan, notes = plan_sync(src, record, chains, running, vm.name, self.disks)
        total = sum(step.facts.allocation for step in plan)
        meter = Meter(job.id, "bytes", time.time)
        emit(PhaseChanged(job.id, "shipping", f"{len(plan)} layer(s), about {total} bytes to {self.target}",
                          at=time.time()))
        tally = Tally(emit, meter, "shipping", total, layers_left=len(plan))
        shipment = Shipment(self.src_uri, self.dst_uri, dst, pool, record, vm.name, self.disks, tally,
                            on_commit=lambda: self.backend.refresh(replicas=True))
        if not shipment.run(plan, cancel):
            return result(Outcome.CANCELLED, f"interrupted after {tally.done} bytes; finished layers stay, "
                          "the partial ones are discarded and the next sync resumes there")
        emit(PhaseChanged(job.id, "verifying", "comparing the replica chain layer by layer", at=time.time()))
        try:
            verify(src, dst, pool, record, emit, meter, cancel, vm=vm.name, disks=self.disks, dst_uri=self.dst_uri)
        except Cancelled:
            return result(Outcome.CANCELLED, f"{tally.done} bytes shipped, then cancelled while verifying; the "
                          "shipped layers stay and the next sync verifies them")
        record.last_sync = time.time()
        write_record(dst, pool, record)
        reason = f"{tally.done} bytes shipped"
        if notes:
            reason += "; " + "; ".join(notes)
        return result(Outcome.SUCCEEDED, reason)
