"""The simulated datacenter: deterministic, internally consistent, and a real backend."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backends.base import Capability
from backends.errors import ReadOnly, Unsupported
from backends.models import OwnerKind
from backends.requests import MigrateRequest
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from backends.sim.scale import generate_fleet, parse_scale
from backends.sim.spec import FleetSpec

GIB = 1 << 20


@pytest.fixture(scope="module")
def spec() -> FleetSpec:
    return load_fleet(demo_fleet_path())


def test_same_spec_and_clock_give_identical_snapshots(spec: FleetSpec) -> None:
    a = SimBackend(spec, ManualClock(1000.0)).refresh()
    b = SimBackend(spec, ManualClock(1000.0)).refresh()
    assert a == b


def test_time_moves_only_with_the_clock(spec: FleetSpec) -> None:
    clock = ManualClock(1000.0)
    backend = SimBackend(spec, clock)
    first = backend.refresh()
    assert backend.refresh() == first
    clock.advance(60)
    later = backend.refresh()
    lag = {(r.vm, r.disk): r.lag_s for r in first.replicas}
    assert all(r.lag_s == pytest.approx(lag[(r.vm, r.disk)] + 60) for r in later.replicas)
    vm = first.vm("pg-main-01")
    assert vm is not None
    key = (vm.host, vm.name)
    assert later.cpu_time_ns[key] > first.cpu_time_ns[key] > 0


def test_an_idle_refresh_keeps_what_did_not_change(spec: FleetSpec) -> None:
    """Views and analysis skip by identity: a refresh where only counters moved hands back the
    same VM, host and chain objects (and the same tuples), with new CPU times and replica lags."""
    clock = ManualClock(1000.0)
    backend = SimBackend(generate_fleet(6, 20, seed=1), clock)  # no overcommitted host: no residency moves
    first = backend.refresh()
    clock.advance(2)
    later = backend.refresh()
    assert later.vms is first.vms and later.hosts is first.hosts and later.chains is first.chains
    assert later.devices is first.devices and later.services is first.services
    assert later.cpu_time_ns != first.cpu_time_ns
    assert [r.replica for r in later.replicas] == [r.replica for r in first.replicas]
    assert all(a.replica is b.replica for a, b in zip(first.replicas, later.replicas, strict=True))
    moved = next(vm for vm in later.vms if vm.active)
    backend.state.vms[moved.name] = replace(moved, vcpus=moved.vcpus + 1)
    changed = backend.refresh()
    assert changed.vms is not later.vms
    assert [vm.name for a, vm in zip(later.vms, changed.vms, strict=True) if a is not vm] == [moved.name]
    assert changed.host(moved.host) is not later.host(moved.host)
    assert sum(a is not b for a, b in zip(later.hosts, changed.hosts, strict=True)) == 1


def test_overcommitted_hosts_show_residency_moving(spec: FleetSpec) -> None:
    """On the demo fleet's overcommitted host the guests' residency moves with the clock, so those
    VMs are new objects each tick while the others stay as they were."""
    clock = ManualClock(1000.0)
    backend = SimBackend(spec, clock)
    first = backend.refresh()
    clock.advance(2)
    later = backend.refresh()
    renewed = {vm.name for a, vm in zip(first.vms, later.vms, strict=True) if a is not vm}
    assert renewed and renewed <= {vm.name for vm in later.vms if backend.residency.tracked(vm)}

def test_free_memory_is_what_running_vms_leave(spec: FleetSpec) -> None:
    inv = SimBackend(spec).snapshot()
    host = inv.host("fra-hv01")
    assert host is not None
    # cell 0: 256G - 4G reserved - pg-main-01 vnode0 64G - web-01 16G - k8s-node-01 32G - nfv-fw-01 8G
    assert host.numa[0].free_kib == (256 - 4 - 64 - 16 - 32 - 8) * GIB
    # cache-01 is shut off, so cell 1 only loses pg vnode1 64G, web-02 16G, k8s-node-02 32G, storage-svc-02 8G
    assert host.numa[1].free_kib == (256 - 4 - 64 - 16 - 32 - 8) * GIB
    over = inv.host("fra-hv04")
    assert over is not None and over.numa[1].free_kib == 0  # the overcommitted cell clamps at 0


def test_cpu_numbering_follows_linux_smt_layout(spec: FleetSpec) -> None:
    host = SimBackend(spec).snapshot().host("fra-hv01")
    assert host is not None
    cell0 = host.numa[0]
    assert len(cell0.cpus) == 32 and cell0.cpu_ids[:3] == (0, 1, 2)
    cpu0 = cell0.cpus[0]
    assert cpu0.siblings == (0, 32) and 32 in cell0.cpu_ids  # SMT sibling of cpu 0 is 32
    assert {c.socket for c in cell0.cpus} == {0} and {c.socket for c in host.numa[1].cpus} == {1}
    assert host.numa[0].distance_to(1) == 21


def test_vm_placement_devices_and_sriov(spec: FleetSpec) -> None:
    inv = SimBackend(spec).snapshot()
    pg = inv.vm("pg-main-01")
    assert pg and [n.backing_cells for n in pg.vnuma] == [(0,), (1,)]
    host = inv.host("fra-hv01")
    assert host and set(pg.pinned_cpus()[:8]) <= set(host.numa[0].cpu_ids)
    hpc = inv.vm("hpc-solver-01")
    assert hpc and len({c for n in hpc.vnuma for c in n.backing_cells}) == 3
    analytics = inv.vm("analytics-01")
    assert analytics and analytics.memory_nodeset == (1,)
    fra02 = inv.host("fra-hv02")
    assert fra02 and set(analytics.pinned_cpus()) <= set(fra02.numa[0].cpu_ids)  # remote memory
    pf = next(d for d in inv.devices if d.host == "fra-hv01" and d.vfs)
    vfs = [d for d in inv.devices if d.physfn == pf.address and d.host == pf.host]
    assert len(vfs) == 8 and {d.address for d in vfs} == set(pf.vfs)
    owned = [d for d in vfs if d.owner.kind is OwnerKind.VM]
    assert {d.owner.vm for d in owned} == {"nfv-fw-01", "storage-svc-02"}
    assert all(d.driver == "vfio-pci" for d in owned)
    fw = inv.vm("nfv-fw-01")
    assert fw and set(fw.devices) == {d.address for d in owned if d.owner.vm == "nfv-fw-01"}


def test_chains_and_replicas(spec: FleetSpec) -> None:
    inv = SimBackend(spec).snapshot()
    chain = next(c for c in inv.chains if c.vm == "ci-runner-01")
    assert len(chain.layers) == 5 and chain.base.path.endswith("vda-base.qcow2")
    assert chain.active.path.endswith("vda-active.qcow2")
    web02 = next(r for r in inv.replicas if r.vm == "web-02")
    assert [s.value for s in web02.layer_states] == ["present", "shipping", "missing"]
    assert len(web02.replica.layers) == 1 and web02.rpo_violated
    hosts = {h.name: h.site for h in inv.hosts}
    assert all(hosts[r.primary_host] != hosts[r.replica_host] for r in inv.replicas)


def test_operations_are_refused_with_typed_errors(spec: FleetSpec) -> None:
    backend = SimBackend(spec)
    assert backend.supports(Capability.MIGRATE)
    backend.capabilities = frozenset({Capability.INVENTORY})  # as a backend without migration
    with pytest.raises(Unsupported, match="cannot migrate"):
        backend.prepare(MigrateRequest("web-01", "fra-hv02"))
    read_only = SimBackend(spec, read_only=True)
    read_only.capabilities = frozenset({Capability.MIGRATE})
    with pytest.raises(ReadOnly, match="read-only"):
        read_only.prepare(MigrateRequest("web-01", "fra-hv02"))


def test_watchers_hear_refreshes_and_can_unsubscribe(spec: FleetSpec) -> None:
    backend = SimBackend(spec)
    seen: list[str] = []
    stop = backend.watch(lambda change: seen.append(change.what))
    backend.refresh()
    stop()
    backend.refresh()
    assert seen == ["inventory"]


def test_scale_fleet_is_large_plausible_and_deterministic() -> None:
    assert parse_scale("100x100") == (100, 100)
    spec = generate_fleet(20, 50, seed=3)
    assert spec == generate_fleet(20, 50, seed=3)
    inv = SimBackend(spec).snapshot()
    assert len(inv.hosts) == 20 and len(inv.vms) == 1000
    assert {s.role.value for s in inv.sites} == {"primary", "recovery"}
    assert all(c.free_kib is not None and c.free_kib >= 0 for h in inv.hosts for c in h.numa)
    assert any(v.vnuma for v in inv.vms) and inv.replicas
    by_site = {h.name: h.site for h in inv.hosts}
    assert all(by_site[r.primary_host] != by_site[r.replica_host] for r in inv.replicas)


@pytest.mark.parametrize("text", ["100", "1x", "x5", "0x10", "1x1", "5000x1", "3x2000"])
def test_scale_rejects_bad_shapes(text: str) -> None:
    from backends.errors import BadInput

    with pytest.raises(BadInput, match="--scale"):
        parse_scale(text)


def test_each_host_has_an_image_pool_with_its_chains(spec: FleetSpec) -> None:
    inv = SimBackend(spec).snapshot()
    pool = next(p for p in inv.pools if p.host == "fra-hv02")
    chain = next(c for c in inv.chains if c.vm == "ci-runner-01")
    volumes = {v.path: v for v in pool.volumes}
    expected = [None, *(below.path for below in chain.layers[:-1])]
    assert [volumes[layer.path].backing for layer in chain.layers] == expected
