"""The embedded simulated datacenter, registered like any other backend.

Deterministic: the fleet spec, its seed and the injected clock decide every value, so tests
and screenshots are identical on every run. It also documents the semantics the libvirt
backend must have: free memory per cell is what running VMs leave, lag is time since the
last sync, CPU time grows with each running VM's utilisation.
"""

from __future__ import annotations

import functools
import operator
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from backends.base import Backend, Capability, Change, Operation, lazy_operation
from backends.grouping import Grouped, group_by_host
from backends.later import Later
from backends.models import (
    DiskChain,
    Host,
    HugePages,
    Inventory,
    LayerState,
    NumaCell,
    ReplicaLink,
    Site,
    StoragePool,
    Vm,
    Volume,
)
from backends.requests import (
    AttachRequest,
    BalloonRequest,
    DetachRequest,
    DeviceOpRequest,
    FailoverRequest,
    HandoffRequest,
    LifecycleRequest,
    MigrateRequest,
    RebalanceRequest,
    ReplicateRequest,
    ServiceMoveRequest,
)
from backends.sim.build import GIB, build
from backends.sim.clock import Clock, ManualClock
from backends.sim.residency import SimResidency
from backends.sim.spec import FleetSpec, HostSpec

if TYPE_CHECKING:
    from backends.sim.device_op import DeviceState

T = TypeVar("T")


class SimBackend(Backend):
    name = "sim"
    capabilities = frozenset({
        Capability.INVENTORY, Capability.EVENTS, Capability.LIFECYCLE, Capability.MIGRATE,
        Capability.HANDOFF, Capability.REBALANCE, Capability.REPLICATE, Capability.FAILOVER,
        Capability.DEVICE_OP, Capability.BALLOON,
        Capability.SERVICES, Capability.DEVICES,
    })
    operations: ClassVar[dict[type, Callable[[Any, Any], Operation]]] = {
        LifecycleRequest: lazy_operation("backends.sim.ops", "SimLifecycle"),
        MigrateRequest: lazy_operation("backends.sim.migrate", "SimMigrate"),
        RebalanceRequest: lazy_operation("backends.sim.rebalance", "SimRebalance"),
        HandoffRequest: lazy_operation("backends.sim.handoff_op", "SimHandoff"),
        ReplicateRequest: lazy_operation("backends.sim.replicate", "SimReplicate"),
        FailoverRequest: lazy_operation("backends.sim.replicate", "SimFailover"),
        DeviceOpRequest: lazy_operation("backends.sim.device_op", "SimDeviceOp"),
        BalloonRequest: lazy_operation("backends.sim.balloon", "SimBalloon"),
        ServiceMoveRequest: lazy_operation("backends.sim.service_move", "SimServiceMove"),
        DetachRequest: lazy_operation("backends.sim.devices", "SimDetach"),
        AttachRequest: lazy_operation("backends.sim.devices", "SimAttach"),
    }

    def __init__(self, spec: FleetSpec, clock: Clock | None = None, *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        self.spec = spec
        self.clock = clock or ManualClock()
        self.lock = threading.RLock()
        # Stage name → the error the next operation reaching that stage fails with (tests, demos).
        self.faults: dict[str, str] = {}
        self._host_specs = {h.name: h for h in spec.hosts}
        self._sites = tuple(Site(s.name, s.role) for s in spec.sites)
        self.state = build(spec, self.clock.now())
        self._pool_cache: tuple[Sequence[DiskChain], Later[StoragePool]] | None = None
        self.device_state: dict[tuple[str, str], DeviceState] = {}  # S7: power state and resets
        self.residency = SimResidency(spec.seed, {h.name: h.overcommit for h in spec.hosts})  # S3
        self._shown: dict[str, tuple[Vm, Vm]] = {}  # VM → (its state, as last shown)
        self._overcommitted = {h.name for h in spec.hosts if h.overcommit > 1.0}
        self._grouped: Grouped | None = None  # the last snapshot's VMs by host
        # host → (its VM list, for its running VMs: (host, VM), boot time, CPU use, vCPUs)
        self._running: dict[str, tuple[list[Vm], list[tuple[tuple[str, str], float, float, int]]]] = {}
        self._hosts: dict[str, tuple[tuple[NumaCell, ...], list[Vm], Host]] = {}  # host → (cells, VMs, as shown)
        # (VM, disk) → (primary, replication state, a link's fields but its lag and RPO), as last made
        self._replica_links: dict[tuple[str, str], tuple[DiskChain, tuple[object, ...], tuple[Any, ...]]] = {}
        self._inventory = self._compose()

    def snapshot(self) -> Inventory:
        return self._inventory

    def refresh(self) -> Inventory:
        with self.lock:
            self._inventory = self._compose()
        self._notify(Change("inventory"))
        return self._inventory

    # -- composing a snapshot ----------------------------------------------------------

    def _compose(self) -> Inventory:
        """A snapshot of the state now. Whatever did not change since the last one is the same
        object in it (each VM, host and chain, and a whole tuple when none of its members
        changed), so views and analysis can skip it by identity: at 10,000 VMs an idle refresh
        costs little more than the counters that move (CPU time, replica lag)."""
        now = self.clock.now()
        before: Inventory | None = getattr(self, "_inventory", None)  # None while __init__ composes the first
        vms = _same(before.vms if before else None, [self._vm_now(vm, now) for vm in self.state.vms.values()])
        self._grouped = group_by_host(vms, self._grouped)
        by_host = self._grouped.hosts
        boot = self.state.boot
        cpu: dict[tuple[str, str], int] = {}
        for host, on_host in by_host.items():
            kept = self._running.get(host)
            if kept is None or kept[0] is not on_host:  # CPU-time rates of its running VMs, per VM list
                kept = self._running[host] = (on_host, [
                    ((host, vm.name), *boot[vm.name], vm.vcpus) for vm in on_host if vm.active])
            for key, booted, util, vcpus in kept[1]:
                cpu[key] = int((now - booted) * vcpus * util * 1e9)
        chains = self.state.chains.shown()
        hosts = _same(before.hosts if before else None,
                      [self._host(h, by_host.get(h.name, [])) for h in self.spec.hosts])
        return Inventory(
            sites=self._sites,
            hosts=hosts,
            vms=vms,
            devices=_same(before.devices if before else None, list(self.state.devices.values())),
            chains=chains,
            replicas=self._replicas(now),
            taken_at=now,
            pools=self._pools(chains),
            services=_same(before.services if before else None, [
                s if s.host == self.state.vms[s.vm].host else replace(s, host=self.state.vms[s.vm].host)
                for s in self.state.services.values()]),
            cpu_time_ns=cpu,
        )

    def _pools(self, chains: Sequence[DiskChain]) -> Later[StoragePool]:
        """One image pool per host holding its VMs' chains, made when first read (only the command
        line's inventory reads them; at 10,000 VMs making them is a tenth of the console's start);
        the same while ``chains`` is the sequence they are made from."""
        if self._pool_cache is not None and self._pool_cache[0] is chains:
            return self._pool_cache[1]
        pools = Later(functools.partial(_make_pools, chains, tuple(h.name for h in self.spec.hosts)))
        self._pool_cache = (chains, pools)
        return pools

    def _vm_now(self, vm: Vm, now: float) -> Vm:
        """``vm`` as shown now: its residency (S3) stepped to ``now``; the object shown last time
        when neither the VM nor its residency changed."""
        source, shown = self._shown.get(vm.name, (None, None))
        if vm.host not in self._overcommitted:  # residency only moves on overcommitted hosts
            if source is vm and shown is not None:
                return shown
            if not vm.devices and vm.residency is None:  # nothing to say beyond its size (SimResidency)
                self.residency.guests.pop(vm.name, None)
                self._shown[vm.name] = (vm, vm)
                return vm
        residency = self.residency.residency(vm, now)
        if source is vm and shown is not None and shown.residency == residency:
            return shown
        shown = vm if vm.residency == residency else replace(vm, residency=residency)
        self._shown[vm.name] = (vm, shown)
        return shown

    def _host(self, spec: HostSpec, vms: list[Vm]) -> Host:
        cells = self.state.cells[spec.name]
        kept = self._hosts.get(spec.name)
        if kept is not None and kept[0] is cells and _identical(kept[1], vms):
            return kept[2]
        host = self._make_host(spec, cells, vms)
        self._hosts[spec.name] = (cells, vms, host)
        return host

    def _make_host(self, spec: HostSpec, cells: tuple[NumaCell, ...], vms: list[Vm]) -> Host:
        used: dict[int, int] = {}
        pinned_gib: dict[int, int] = {}
        for vm in vms:
            if not vm.active:
                continue
            for cell, kib in (vm.memory_by_cell() or {}).items():
                used[cell] = used.get(cell, 0) + kib
                if vm.pinning:
                    pinned_gib[cell] = pinned_gib.get(cell, 0) + kib // GIB
        return Host(
            name=spec.name, uri=f"sim:///{spec.name}", site=spec.site, cpu_model=spec.cpu_model,
            threads=sum(c.cpus for c in spec.cells), memory_kib=sum(c.memory_kib for c in spec.cells),
            numa=tuple(_with_use(c, spec.reserved_kib + used.get(c.id, 0), pinned_gib.get(c.id, 0))
                       for c in cells), hostname=spec.name, hypervisor="hvc simulator",
        )

    def _replicas(self, now: float) -> tuple[ReplicaLink, ...]:
        """Every link anew (its lag moves with the clock) from what it was made of last time, which
        is made again (replica chain, layer states) only when the primary or the replica changed."""
        out = []
        made = self._replica_links
        for key, r in self.state.replicas.items():
            primary = self.state.chains[key]
            kept = made.get(key)
            if kept is None or kept[0] is not primary or kept[1] != (r.to, r.present, r.shipping, r.last_sync, r.rpo_s):
                replica = DiskChain(
                    vm=key[0], host=r.to, disk=key[1],
                    layers=tuple(
                        replace(layer, path=layer.path.replace("/images/", "/replica/"))
                        for layer in primary.layers[: r.present]
                    ),
                )
                kept = made[key] = (primary, (r.to, r.present, r.shipping, r.last_sync, r.rpo_s), (
                    key[0], key[1], primary.host, r.to, primary, replica,
                    _layer_states(len(primary.layers), r.present, r.shipping), r.last_sync))
            out.append(ReplicaLink(*kept[2], max(0.0, now - r.last_sync), r.rpo_s))  # type: ignore[call-arg]
        return tuple(out)


def _make_pools(chains: Sequence[DiskChain], hosts: tuple[str, ...]) -> tuple[StoragePool, ...]:
    """A host's image pool holds its VMs' chains, each layer backed by the one below."""
    volumes: dict[str, list[Volume]] = {}
    for chain in chains:
        for below, layer in zip((None, *chain.layers), chain.layers, strict=False):
            volumes.setdefault(chain.host, []).append(Volume(
                layer.path.rsplit("/", 1)[-1], layer.path, layer.format, layer.virtual_bytes,
                layer.allocated_bytes, below.path if below else None))
    return tuple(StoragePool("images", host, "dir", "/var/lib/libvirt/images", None, None,
                             tuple(sorted(volumes.get(host, []), key=lambda v: v.path)))
                 for host in hosts)


@functools.cache
def _layer_states(layers: int, present: int, shipping: bool) -> tuple[LayerState, ...]:
    return tuple(
        LayerState.PRESENT if i < present else LayerState.SHIPPING if i == present and shipping else LayerState.MISSING
        for i in range(layers)
    )


def _identical(a: Sequence[T], b: Sequence[T]) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))


def _same(previous: tuple[T, ...] | None, items: list[T]) -> tuple[T, ...]:
    """``previous`` itself when it holds the same objects in the same order, else a new tuple."""
    return previous if previous is not None and _identical(previous, items) else tuple(items)


def _with_use(cell: NumaCell, used_kib: int, pinned_gib: int) -> NumaCell:
    pages = tuple(
        HugePages(p.size_kib, p.total, max(0, p.total - pinned_gib)) if p.size_kib == GIB else p
        for p in cell.hugepages
    )
    return replace(cell, free_kib=max(0, cell.memory_kib - used_kib), hugepages=pages)

