"""The embedded simulated datacenter, registered like any other backend.

Deterministic: the fleet spec, its seed and the injected clock decide every value, so tests
and screenshots are identical on every run. It also documents the semantics the libvirt
backend must have: free memory per cell is what running VMs leave, lag is time since the
last sync, CPU time grows with each running VM's utilisation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

from backends.base import Backend, Capability, Change, Operation
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
from backends.sim.balloon import SimBalloon
from backends.sim.build import GIB, build
from backends.sim.clock import Clock, ManualClock
from backends.sim.device_op import DeviceState, SimDeviceOp
from backends.sim.devices import SimAttach, SimDetach
from backends.sim.handoff_op import SimHandoff
from backends.sim.migrate import SimMigrate
from backends.sim.ops import SimLifecycle
from backends.sim.rebalance import SimRebalance
from backends.sim.replicate import SimFailover, SimReplicate
from backends.sim.residency import SimResidency
from backends.sim.service_move import SimServiceMove
from backends.sim.spec import FleetSpec, HostSpec


class SimBackend(Backend):
    name = "sim"
    capabilities = frozenset({
        Capability.INVENTORY, Capability.EVENTS, Capability.LIFECYCLE, Capability.MIGRATE,
        Capability.HANDOFF, Capability.REBALANCE, Capability.REPLICATE, Capability.FAILOVER,
        Capability.DEVICE_OP, Capability.BALLOON,
        Capability.SERVICES, Capability.DEVICES,
    })
    operations: ClassVar[dict[type, Callable[[Any, Any], Operation]]] = {
        LifecycleRequest: SimLifecycle,
        MigrateRequest: SimMigrate,
        RebalanceRequest: SimRebalance,
        HandoffRequest: SimHandoff,
        ReplicateRequest: SimReplicate,
        FailoverRequest: SimFailover,
        DeviceOpRequest: SimDeviceOp,
        BalloonRequest: SimBalloon,
        ServiceMoveRequest: SimServiceMove,
        DetachRequest: SimDetach,
        AttachRequest: SimAttach,
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
        self._pool_cache: tuple[tuple[int, ...], tuple[StoragePool, ...]] | None = None
        self.device_state: dict[tuple[str, str], DeviceState] = {}  # S7: power state and resets
        self.residency = SimResidency(spec.seed, {h.name: h.overcommit for h in spec.hosts})  # S3
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
        now = self.clock.now()
        vms = tuple(self._vm_now(vm, now) for vm in self.state.vms.values())
        by_host: dict[str, list[Vm]] = {}
        for vm in vms:
            by_host.setdefault(vm.host, []).append(vm)
        hosts = tuple(self._host(h, by_host.get(h.name, [])) for h in self.spec.hosts)
        return Inventory(
            sites=self._sites,
            hosts=hosts,
            vms=vms,
            devices=tuple(self.state.devices.values()),
            chains=tuple(self.state.chains.values()),
            replicas=self._replicas(now),
            taken_at=now,
            pools=self._pools(),
            services=tuple(replace(s, host=self.state.vms[s.vm].host) for s in self.state.services.values()),
        )

    def _pools(self) -> tuple[StoragePool, ...]:
        """One image pool per host holding its VMs' chains, each layer backed by the one below.

        Chains are frozen and replaced when an operation changes one, so their identities tell
        whether the pools must be rebuilt; a refresh of an unchanged fleet reuses them.
        """
        key = tuple(map(id, self.state.chains.values()))
        if self._pool_cache is not None and self._pool_cache[0] == key:
            return self._pool_cache[1]
        volumes: dict[str, list[Volume]] = {}
        for chain in self.state.chains.values():
            for below, layer in zip((None, *chain.layers), chain.layers, strict=False):
                volumes.setdefault(chain.host, []).append(Volume(
                    layer.path.rsplit("/", 1)[-1], layer.path, layer.format, layer.virtual_bytes,
                    layer.allocated_bytes, below.path if below else None))
        pools = tuple(
            StoragePool("images", h.name, "dir", "/var/lib/libvirt/images", None, None,
                        tuple(sorted(volumes.get(h.name, []), key=lambda v: v.path)))
            for h in self.spec.hosts
        )
        self._pool_cache = (key, pools)
        return pools

    def _vm_now(self, vm: Vm, now: float) -> Vm:
        booted, util = self.state.boot[vm.name]
        residency = self.residency.residency(vm, now)
        if not vm.active:
            return vm
        return replace(vm, cpu_time_ns=int((now - booted) * vm.vcpus * util * 1e9), residency=residency)

    def _host(self, spec: HostSpec, vms: list[Vm]) -> Host:
        used: dict[int, int] = {}
        pinned_gib: dict[int, int] = {}
        for vm in vms:
            if not vm.active:
                continue
            for cell, kib in (vm.memory_by_cell() or {}).items():
                used[cell] = used.get(cell, 0) + kib
                if vm.pinning:
                    pinned_gib[cell] = pinned_gib.get(cell, 0) + kib // GIB
        cells = tuple(
            _with_use(c, spec.reserved_kib + used.get(c.id, 0), pinned_gib.get(c.id, 0))
            for c in self.state.cells[spec.name]
        )
        return Host(
            name=spec.name, uri=f"sim:///{spec.name}", site=spec.site, cpu_model=spec.cpu_model,
            threads=sum(c.cpus for c in spec.cells), memory_kib=sum(c.memory_kib for c in spec.cells),
            numa=cells, hostname=spec.name, hypervisor="hvc simulator",
        )

    def _replicas(self, now: float) -> tuple[ReplicaLink, ...]:
        out = []
        for (vm_name, disk), r in self.state.replicas.items():
            primary = self.state.chains[(vm_name, disk)]
            states = tuple(
                LayerState.PRESENT if i < r.present
                else LayerState.SHIPPING if i == r.present and r.shipping
                else LayerState.MISSING
                for i in range(len(primary.layers))
            )
            replica = DiskChain(
                vm=vm_name, host=r.to, disk=disk,
                layers=tuple(
                    replace(layer, path=layer.path.replace("/images/", "/replica/"))
                    for layer in primary.layers[: r.present]
                ),
            )
            out.append(ReplicaLink(
                vm=vm_name, disk=disk, primary_host=primary.host, replica_host=r.to,
                primary=primary, replica=replica, layer_states=states,
                last_sync=r.last_sync, lag_s=max(0.0, now - r.last_sync), rpo_s=r.rpo_s,
            ))
        return tuple(out)


def _with_use(cell: NumaCell, used_kib: int, pinned_gib: int) -> NumaCell:
    pages = tuple(
        HugePages(p.size_kib, p.total, max(0, p.total - pinned_gib)) if p.size_kib == GIB else p
        for p in cell.hugepages
    )
    return replace(cell, free_kib=max(0, cell.memory_kib - used_kib), hugepages=pages)

