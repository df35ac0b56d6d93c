"""The domain model's derived facts: memory placement, progress bounds, distances, owners."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.models import (
    CellShare,
    Cpu,
    DiskChain,
    DiskLayer,
    Host,
    LayerState,
    NumaCell,
    Owner,
    OwnerKind,
    Progress,
    ReplicaLink,
    Vm,
    VmState,
    VNumaCell,
)


def _vm(**kw: object) -> Vm:
    base: dict[str, object] = dict(name="v", uuid="u", host="h", state=VmState.RUNNING, vcpus=4,
                                   memory_kib=8 << 20)
    base.update(kw)
    return Vm(**base)  # type: ignore[arg-type]


def test_memory_by_cell_adds_vnuma_shares_per_physical_cell() -> None:
    vm = _vm(vnuma=(
        VNumaCell(0, (0, 1), 4 << 20, (CellShare(0, 4 << 20),)),
        VNumaCell(1, (2, 3), 4 << 20, (CellShare(0, 1 << 20), CellShare(1, 3 << 20))),
    ))
    assert vm.memory_by_cell() == {0: 5 << 20, 1: 3 << 20}


def test_memory_by_cell_is_unknown_when_a_split_is_not_reported() -> None:
    vm = _vm(vnuma=(VNumaCell(0, (0,), 8 << 20, (CellShare(0), CellShare(1))),))
    assert vm.memory_by_cell() is None
    assert _vm(memory_nodeset=(0, 1)).memory_by_cell() is None
    assert _vm().memory_by_cell() is None


def test_single_backing_cell_carries_the_whole_vnode_even_without_a_figure() -> None:
    vm = _vm(vnuma=(VNumaCell(0, (0,), 2 << 20, (CellShare(1),)),))
    assert vm.memory_by_cell() == {1: 2 << 20}
    assert _vm(memory_nodeset=(3,)).memory_by_cell() == {3: 8 << 20}


@given(st.integers(-10**9, 10**12), st.integers(-10**9, 10**12))
def test_progress_fraction_stays_between_0_and_1(done: int, remaining: int) -> None:
    p = Progress("j", "copy", done, remaining, "pages")
    assert 0.0 <= p.fraction <= 1.0


def test_cell_distance_lookup_and_host_free_memory() -> None:
    a = NumaCell(0, (Cpu(0), Cpu(1)), 100, 40, distances=((0, 10), (1, 21)))
    b = NumaCell(1, (Cpu(2),), 100, 60, distances=((0, 21), (1, 10)))
    assert a.distance_to(1) == 21 and a.distance_to(7) is None
    host = Host("h", "sim:///h", "s", None, 3, 200, numa=(a, b))
    assert host.free_kib == 100
    unknown = Host("h", "u", "s", None, 3, 200, numa=(a, NumaCell(1, (), 100)))
    assert unknown.free_kib is None


def test_owner_text_names_vm_or_driver() -> None:
    assert str(Owner(OwnerKind.VM, vm="db")) == "vm:db"
    assert str(Owner(OwnerKind.HOST, driver="ice")) == "host:ice"
    assert str(Owner(OwnerKind.VFIO)) == "vfio"


def test_replica_rpo_violation_and_unknown_lag() -> None:
    chain = DiskChain("v", "h", "vda", (DiskLayer("/b", "qcow2"),))
    link = ReplicaLink("v", "vda", "h", "r", chain, chain, (LayerState.PRESENT,), 0.0, 10.0, 300.0)
    assert not link.rpo_violated
    assert ReplicaLink("v", "vda", "h", "r", chain, chain, (), 0.0, 301.0, 300.0).rpo_violated
    assert ReplicaLink("v", "vda", "h", "r", chain, chain, (), None, None, 300.0).rpo_violated


def test_cpu_use_needs_two_samples_and_is_a_fraction_of_host_threads() -> None:
    from backends.sim.backend import SimBackend
    from backends.sim.clock import ManualClock
    from backends.sim.fleet import demo_fleet_path, load_fleet
    from backends.usage import cpu_use

    clock = ManualClock()
    backend = SimBackend(load_fleet(demo_fleet_path()), clock)
    first = backend.refresh()
    assert cpu_use(None, first) == {} and cpu_use(first, first) == {}
    clock.advance(10)
    use = cpu_use(first, backend.refresh())
    assert set(use) == {h.name for h in first.hosts}
    assert all(0.0 < u <= 1.0 for u in use.values())
    # fra-hv01's running VMs burn vCPUs × utilisation; the total is what the host's threads did
    hv01 = backend.snapshot().host("fra-hv01")
    assert hv01 is not None
    expected = sum(vm.vcpus * backend.state.boot[vm.name][1] for vm in backend.snapshot().vms_on("fra-hv01")
                   if vm.active) / hv01.threads
    assert use["fra-hv01"] == pytest.approx(expected)
