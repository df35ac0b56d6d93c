"""Simulated replication (S5): ship base and differencing layers to a recovery host and arrange
them under their replicated parents; verify; fail over.

A layer counts at the replica only once it has arrived whole, so an interrupted sync never
leaves a half-written layer in the replica chain, and the next sync resumes at the first
layer the replica lacks. Sealed layers never change; the active layer's new writes since the
last sync ship as a delta.
"""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput, OperationFailed
from backends.models import DiskChain, DiskLayer, JobKind, JobResult, Outcome, PhaseChanged, SiteRole, VmState
from backends.placement import find_host, plan_move
from backends.progress import Meter
from backends.requests import FailoverRequest, ReplicateRequest
from backends.sim.build import ReplicaState, layer_sum

if TYPE_CHECKING:
    from backends.sim.backend import SimBackend

SHIP_BYTES_S = 512 * 1024 * 1024  # the replication link
TICK_S = 0.25


class SimReplicate(Operation):
    def __init__(self, backend: SimBackend, request: ReplicateRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        chains = [c for c in inv.chains if c.vm == vm.name and c.host == vm.host]
        if not chains:
            raise BadInput(f"{vm.name} has no disks to replicate")
        existing = {r.replica_host for r in inv.replicas if r.vm == vm.name}
        if request.to is None:
            if not existing:
                raise BadInput(f"{vm.name} is not replicated yet", hint="give --to HOST|SITE to start")
            target = existing.pop()
        else:
            target = self._target(backend, request.to, vm.host)
            if existing and target not in existing:
                raise BadInput(f"{vm.name} already replicates to {', '.join(sorted(existing))}",
                               hint="sync it without --to, or fail over first")
        self.backend, self.vm, self.target, self.rpo_s = backend, vm, target, request.rpo_s
        self.disks = [c.disk for c in chains]
        super().__init__(new_job(JobKind.REPLICATE, (vm.name,), ("shipping", "verifying"),
                                 f"replicate {vm.name} {vm.host} → {target}"))

    @staticmethod
    def _target(backend: SimBackend, to: str, source: str) -> str:
        inv = backend.snapshot()
        sites = {s.name: s for s in inv.sites}
        source_host = inv.host(source)
        source_site = source_host.site if source_host else None
        if to in sites:
            if to == source_site:
                raise BadInput(f"{to} is the site {source} is in", hint="replicate to a recovery site")
            hosts = [h for h in inv.hosts if h.site == to]
            if not hosts:
                raise BadInput(f"site {to} has no hosts")
            return max(hosts, key=lambda h: (h.free_kib or 0, h.name)).name
        host = find_host(inv, to)
        if host.site == source_site:
            recovery = ", ".join(s.name for s in inv.sites if s.role is SiteRole.RECOVERY)
            raise BadInput(f"{host.name} is at {source}'s own site {host.site}",
                           hint=f"pick a host at a recovery site ({recovery})")
        return host.name

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        clock, job = self.backend.clock, self.job
        started = clock.now()
        meter = Meter(job.id, "bytes", clock.now)
        plan = self._plan()
        total = sum(size for _, _, size in plan)
        layers_left = sum(1 for _, i, _ in plan if i >= 0)
        emit(PhaseChanged(job.id, "shipping", f"{len(plan)} transfers, {total} bytes to {self.target}", at=started))
        shipped = 0
        for disk, index, size in plan:
            sent = 0
            while sent < size:
                if cancel.is_set():
                    self.backend.refresh()
                    return JobResult(job.id, Outcome.CANCELLED,
                                     f"interrupted after {shipped} bytes; finished layers stay, the partial one is "
                                     "discarded and the next sync resumes there", started, clock.now())
                clock.sleep(TICK_S)
                step = min(size - sent, int(SHIP_BYTES_S * TICK_S))
                sent, shipped = sent + step, shipped + step
                emit(meter.sample("shipping", shipped, total - shipped, detail={
                    "disk": disk, "layers_left": layers_left, "bytes_shipped": shipped}))
            self._arrived(disk, index)
            layers_left -= index >= 0
        emit(PhaseChanged(job.id, "verifying", "comparing the replica chain layer by layer", at=clock.now()))
        self._verify()
        with self.backend.lock:
            for disk in self.disks:
                self.backend.state.replicas[(self.vm.name, disk)].last_sync = clock.now()
        self.backend.refresh()
        return JobResult(job.id, Outcome.SUCCEEDED, f"{shipped} bytes shipped", started, clock.now())

    def _plan(self) -> list[tuple[str, int, int]]:
        """(disk, layer index or -1 for the active layer's delta, bytes) still to ship."""
        out = []
        with self.backend.lock:
            for disk in self.disks:
                chain = self.backend.state.chains[(self.vm.name, disk)]
                state = self.backend.state.replicas.get((self.vm.name, disk))
                if state is None:
                    state = ReplicaState(self.vm.name, disk, self.target, self.rpo_s, 0.0, 0, False)
                    self.backend.state.replicas[(self.vm.name, disk)] = state
                out += [(disk, i, chain.layers[i].allocated_bytes or 0)
                        for i in range(state.present, len(chain.layers))]
                if state.present == len(chain.layers) and state.last_sync:
                    # Everything is there: only the active layer's writes since the last sync.
                    rate = random.Random(f"{self.vm.name}:{disk}:writes").uniform(1, 20) * 1024 * 1024
                    delta = int(rate * max(0.0, self.backend.clock.now() - state.last_sync))
                    out.append((disk, -1, delta))
        return out

    def _arrived(self, disk: str, index: int) -> None:
        with self.backend.lock:
            state = self.backend.state.replicas[(self.vm.name, disk)]
            chain = self.backend.state.chains[(self.vm.name, disk)]
            if index >= 0 and index == state.present:  # a whole layer, under its replicated parent
                state.sums.append(layer_sum(chain.layers[index]))
                state.present += 1
            state.shipping = False
        self.backend.refresh()  # the replication view shows each layer as it lands

    def _verify(self) -> None:
        with self.backend.lock:
            for disk in self.disks:
                chain = self.backend.state.chains[(self.vm.name, disk)]
                state = self.backend.state.replicas[(self.vm.name, disk)]
                want = [layer_sum(layer) for layer in chain.layers[: state.present]]
                if state.sums != want:
                    bad = next(i for i, (a, b) in enumerate(zip(state.sums, want, strict=False)) if a != b) \
                        if len(state.sums) == len(want) else min(len(state.sums), len(want))
                    raise OperationFailed(f"replica of {self.vm.name}/{disk} differs from the primary at layer "
                                          f"{bad} ({chain.layers[bad].path.rsplit('/', 1)[-1]})",
                                          hint="re-sync that layer; the replica is not usable until it matches")


class SimFailover(Operation):
    def __init__(self, backend: SimBackend, request: FailoverRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        links = [r for r in inv.replicas if r.vm == vm.name]
        if not links:
            raise BadInput(f"{vm.name} is not replicated", hint="replicate it first with `hvc replicate`")
        target = links[0].replica_host
        if not request.test:
            dest = inv.host(target)
            if dest is None:
                raise BadInput(f"recovery host {target} is not in the inventory")
            plan_move(inv, replace(vm, vnuma=(), memory_nodeset=()), dest)  # it must fit there
        name = f"{vm.name}-testfo" if request.test else vm.name
        if request.test and inv.vm(name) is not None:
            raise BadInput(f"a test failover of {vm.name} is already running as {name}",
                           hint=f"force off and remove {name} first")
        self.backend, self.vm, self.target, self.test, self.name = backend, vm, target, request.test, name
        kind = "test failover" if request.test else "planned failover"
        super().__init__(new_job(JobKind.FAILOVER, (vm.name, name), ("starting",),
                                 f"{kind} of {vm.name} to {target}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        clock, job = self.backend.clock, self.job
        started = clock.now()
        what = "a throwaway overlay on the replica chain" if self.test else "the replica chain"
        emit(PhaseChanged(job.id, "starting", f"starting {self.name} on {self.target} from {what}", at=started))
        clock.sleep(2.0)
        with self.backend.lock:
            state = self.backend.state
            for (vm_name, disk), link in list(state.replicas.items()):
                if vm_name != self.vm.name:
                    continue
                primary = state.chains[(vm_name, disk)]
                layers = tuple(replace(layer, path=layer.path.replace("/images/", "/replica/"))
                               for layer in primary.layers[: link.present])
                if self.test:
                    overlay = DiskLayer(f"/var/lib/libvirt/replica/{self.name}/{disk}-testfo.qcow2", "qcow2",
                                        primary.active.virtual_bytes, 0)
                    state.chains[(self.name, disk)] = DiskChain(self.name, self.target, disk, (*layers, overlay))
                else:
                    state.chains[(vm_name, disk)] = DiskChain(vm_name, self.target, disk, layers)
                    link.to, link.present, link.sums = primary.host, len(layers), list(link.sums)  # reverse
            vm = state.vms[self.vm.name]
            moved = replace(vm, name=self.name, host=self.target, state=VmState.RUNNING, vnuma=(), pinning=(),
                            memory_nodeset=(0,), devices=())
            state.vms[self.name] = moved
            state.boot[self.name] = (clock.now(), state.boot[self.vm.name][1])
        self.backend.refresh()
        reason = "replication continues untouched" if self.test else "replication now runs in reverse"
        return JobResult(job.id, Outcome.SUCCEEDED, reason, started, clock.now())
