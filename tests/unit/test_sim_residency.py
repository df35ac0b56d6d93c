"""S3 on the simulator: DMA traffic on an overcommitted host, and the balloon through the tracker."""

from __future__ import annotations

import threading

import pytest

from backends.errors import BadInput
from backends.models import Outcome, Progress
from backends.requests import BalloonRequest
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from backends.sim.residency import PAGE_KIB

GIB = 1 << 20


def sim() -> SimBackend:
    return SimBackend(load_fleet(demo_fleet_path()), ManualClock())


def test_dma_traffic_changes_residency_over_time_and_reclaims_of_pinned_pages_are_refused() -> None:
    backend = sim()
    first = backend.snapshot().vm("ml-train-01")
    assert first and first.residency and first.residency.pinned_kib == 0 and not first.residency.locked
    seen = []
    for _ in range(20):
        backend.clock.advance(5)
        vm = backend.refresh().vm("ml-train-01")
        assert vm and vm.residency and vm.residency.resident_kib is not None and vm.residency.pinned_kib is not None
        assert vm.residency.pinned_kib <= vm.residency.resident_kib <= vm.memory_kib
        seen.append(vm.residency)
    assert len({r.pinned_kib for r in seen}) > 3 and len({r.resident_kib for r in seen}) > 3
    assert seen[-1].refused_reclaims > 0 and seen[-1].dma_in_flight > 0
    counts = [r.refused_reclaims for r in seen]
    assert counts == sorted(counts)
    guest = backend.residency.guests["ml-train-01"]
    assert all(guest.tracker.is_resident(p) for p in guest.tracker.pinned_pages())


def test_the_simulation_is_repeatable() -> None:
    a, b = sim(), sim()
    for backend in (a, b):
        backend.clock.advance(40)
        backend.refresh()
    assert a.snapshot().vm("ml-train-02") == b.snapshot().vm("ml-train-02")


def test_a_vfio_guest_without_overcommit_is_fully_pinned_and_cannot_shrink() -> None:
    backend = sim()
    vm = backend.snapshot().vm("erp-db-01")
    assert vm and vm.residency and vm.residency.locked and vm.residency.pinned_kib == vm.memory_kib
    with pytest.raises(BadInput, match="all its memory is pinned"):
        backend.prepare(BalloonRequest("erp-db-01", vm.memory_kib - GIB))
    assert backend.snapshot().vm("erp-db-01") == vm


def test_shrinking_below_the_pinned_pages_is_refused_with_the_reason() -> None:
    backend = sim()
    backend.clock.advance(20)
    backend.refresh()
    backend.residency.guests["ml-train-02"].tracker.begin_dma(range(1024), tag="0000:ca:00.0")  # a 2 GiB buffer
    vm = backend.refresh().vm("ml-train-02")
    assert vm and vm.residency and vm.residency.pinned_kib and vm.residency.pinned_kib >= 2 * GIB
    with pytest.raises(BadInput, match=r"pinned by \d+ DMA transfers in flight"):
        backend.prepare(BalloonRequest("ml-train-02", vm.residency.pinned_kib - PAGE_KIB))
    assert backend.snapshot().vm("ml-train-02").memory_kib == vm.memory_kib  # type: ignore[union-attr]


def test_balloon_shrinks_through_the_tracker_skipping_pinned_pages() -> None:
    backend = sim()
    backend.clock.advance(20)
    backend.refresh()
    guest = backend.residency.guests["ml-train-01"]
    # Pin a page right where the balloon starts taking (the top of guest memory), as a transfer would.
    top = guest.tracker.usable - 1
    guest.tracker.begin_dma([top], tag="test")
    events: list[object] = []
    op = backend.prepare(BalloonRequest("ml-train-01", 192 * GIB))
    result = op.run(events.append, threading.Event())
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    vm = backend.snapshot().vm("ml-train-01")
    assert vm and vm.memory_kib == 192 * GIB
    assert guest.tracker.is_pinned(top) and not guest.tracker.is_ballooned(top)
    assert vm.residency and vm.residency.refused_reclaims >= 1 and "pinned pages were refused" in result.reason
    assert isinstance(events[-1], Progress) and events[-1].remaining == 0
    grow = backend.prepare(BalloonRequest("ml-train-01", 200 * GIB)).run(events.append, threading.Event())
    vm = backend.snapshot().vm("ml-train-01")
    assert grow.outcome is Outcome.SUCCEEDED and vm and vm.memory_kib == 200 * GIB


def test_balloon_refuses_bad_targets() -> None:
    backend = sim()
    with pytest.raises(BadInput, match="at most"):
        backend.prepare(BalloonRequest("web-01", 1024 * GIB))
    with pytest.raises(BadInput, match="already has"):
        backend.prepare(BalloonRequest("web-01", 16 * GIB))
    with pytest.raises(BadInput, match="shutoff"):
        backend.prepare(BalloonRequest("cache-01", 4 * GIB))
    done = backend.prepare(BalloonRequest("web-01", 12 * GIB)).run(lambda _e: None, threading.Event())
    assert done.outcome is Outcome.SUCCEEDED and backend.snapshot().vm("web-01").memory_kib == 12 * GIB  # type: ignore[union-attr]
