"""Live migration and vNUMA rebalancing on the simulator: pre-checks, progress, outcomes."""

from __future__ import annotations

import threading

import pytest

from backends.errors import BadInput, NotFound
from backends.models import JobResult, Outcome, PhaseChanged, Progress
from backends.requests import MigrateRequest, RebalanceRequest, Request
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet

GIB = 1 << 20


def sim() -> SimBackend:
    return SimBackend(load_fleet(demo_fleet_path()), ManualClock())


def run(backend: SimBackend, request: Request, cancel_after: int | None = None) -> tuple[JobResult, list[object]]:
    events: list[object] = []
    cancel = threading.Event()

    def emit(event: object) -> None:
        events.append(event)
        if cancel_after is not None and len(events) >= cancel_after:
            cancel.set()

    return backend.prepare(request).run(emit, cancel), events


def test_migration_moves_the_vm_and_its_memory() -> None:
    backend = sim()
    before = backend.snapshot()
    result, events = run(backend, MigrateRequest("pg-main-01", "dub-hv01"))
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    vm = backend.snapshot().vm("pg-main-01")
    assert vm and vm.host == "dub-hv01"
    assert [n.backing_cells for n in vm.vnuma] == [(0,), (1,)]  # each vNUMA cell kept its cell number
    dest_before, dest_after = before.host("dub-hv01"), backend.snapshot().host("dub-hv01")
    assert dest_before and dest_after
    assert [b.free_kib - a.free_kib for b, a in zip(dest_before.numa, dest_after.numa, strict=True)] == [
        64 * GIB, 64 * GIB]  # type: ignore[operator]
    assert all(c.host == "dub-hv01" for c in backend.snapshot().chains if c.vm == "pg-main-01")
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.phase for p in events if isinstance(p, PhaseChanged)] == ["precopy", "switchover"]
    assert progress[-1].detail["expected_downtime_ms"] <= 300
    assert all(0 <= p.fraction <= 1 for p in progress)


def test_a_vm_that_owns_devices_hands_them_off_before_switchover() -> None:
    backend = sim()
    result, events = run(backend, MigrateRequest("nfv-fw-01", "fra-hv02"))
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases.index("handoff") < phases.index("precopy") < phases.index("switchover")
    inv = backend.snapshot()
    assert inv.vm("nfv-fw-01").devices == ()  # type: ignore[union-attr]
    vf = next(d for d in inv.devices if d.host == "fra-hv01" and d.address == "0000:18:01.0")
    assert vf.owner.kind.value == "host"


def test_a_guest_dirtying_faster_than_the_link_needs_auto_converge() -> None:
    slow = MigrateRequest("pg-main-01", "dub-hv01", bandwidth_mib_s=256)
    result, _ = run(sim(), slow)
    assert result.outcome is Outcome.FAILED and "--auto-converge" in result.reason
    backend = sim()
    result, events = run(backend, MigrateRequest("pg-main-01", "dub-hv01", bandwidth_mib_s=256, auto_converge=True))
    assert result.outcome is Outcome.SUCCEEDED
    assert max(e.detail["throttle_percent"] for e in events if isinstance(e, Progress)) > 0  # type: ignore[type-var]


def test_cancelled_migration_leaves_the_vm_on_its_source() -> None:
    backend = sim()
    result, _ = run(backend, MigrateRequest("web-01", "fra-hv02"), cancel_after=5)
    assert result.outcome is Outcome.CANCELLED and "keeps running on fra-hv01" in result.reason
    assert backend.snapshot().vm("web-01").host == "fra-hv01"  # type: ignore[union-attr]


@pytest.mark.parametrize(("request_", "message"), [
    (MigrateRequest("web-01", "fra-hv01"), "web-01 is already on fra-hv01"),
    (MigrateRequest("web-01", "mars"), "no host called 'mars'"),
    (MigrateRequest("cache-01", "fra-hv02"), "cache-01 is shutoff; live migration needs a running VM"),
    (MigrateRequest("ml-train-01", "dub-hv02"), "dub-hv02 has no NUMA cell with 128G free for vNUMA cell 0"),
    (MigrateRequest("erp-db-01", "dub-hv02"), "dub-hv02 has no NUMA cell with 96.0G free for vNUMA cell 0"),
    (RebalanceRequest("analytics-01", 3, to_cell=0), "analytics-01 has no vNUMA cell 3"),
    (RebalanceRequest("analytics-01", 0, to_cell=7), "fra-hv02 has no cell 7"),
    (RebalanceRequest("analytics-01", 0, to_cell=1), "already on cell 1"),
    (RebalanceRequest("erp-db-01", 0, to_cell=1), "cell 1 of fra-hv04 has 0K free, 96.0G would move there"),
    (RebalanceRequest("pg-main-01", 0, memory_kib=200 * GIB), "above its maximum 192G"),
    (RebalanceRequest("pg-main-01", 0), "say either --to-cell CELL or --memory SIZE"),
])
def test_nonsense_is_refused_before_anything_changes(request_: Request, message: str) -> None:
    backend = sim()
    before = backend.snapshot()
    with pytest.raises(BadInput, match=message):
        backend.prepare(request_)
    assert backend.refresh().vms == before.vms


def test_unknown_vm_is_not_found() -> None:
    with pytest.raises(NotFound):
        sim().prepare(MigrateRequest("ghost", "fra-hv02"))


def test_rebalance_moves_remote_memory_next_to_its_vcpus() -> None:
    backend = sim()
    result, events = run(backend, RebalanceRequest("analytics-01", 0, to_cell=0))
    assert result.outcome is Outcome.SUCCEEDED
    assert backend.snapshot().vm("analytics-01").memory_nodeset == (0,)  # type: ignore[union-attr]
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[0].remaining + progress[0].done == 64 * GIB // 4 and progress[-1].remaining == 0
    from backends.analysis import vm_flags

    inv = backend.snapshot()
    assert vm_flags(inv.vm("analytics-01"), inv.host("fra-hv02")) == []  # type: ignore[arg-type]


def test_rebalance_grows_and_shrinks_one_vnuma_cell() -> None:
    backend = sim()
    result, _ = run(backend, RebalanceRequest("pg-main-01", 1, memory_kib=96 * GIB))
    assert result.outcome is Outcome.SUCCEEDED
    vm = backend.snapshot().vm("pg-main-01")
    assert vm and vm.vnuma[1].memory_kib == 96 * GIB and vm.memory_kib == 160 * GIB
    result, _ = run(backend, RebalanceRequest("pg-main-01", 1, memory_kib=32 * GIB))
    vm = backend.snapshot().vm("pg-main-01")
    assert result.outcome is Outcome.SUCCEEDED and vm and vm.memory_kib == 96 * GIB


def test_split_vnuma_cell_can_be_gathered_onto_one_cell() -> None:
    backend = sim()
    result, _ = run(backend, RebalanceRequest("pg-replica-01", 1, to_cell=0))
    assert result.outcome is Outcome.SUCCEEDED
    vm = backend.snapshot().vm("pg-replica-01")
    assert vm and vm.vnuma[1].backing_cells == (0,) and vm.vnuma[1].backing[0].memory_kib == 48 * GIB
