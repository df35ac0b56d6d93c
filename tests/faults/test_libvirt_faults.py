"""Faults injected into the real libvirt backend (libvirt's test driver behind ``faulty.Faults``):
a host that drops mid-refresh and comes back, a slow host, a migration that fails mid-way,
a host that is gone when a handoff starts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.testfleet import fleet_uri, write_test_fleet
from backends.models import HostState, JobEvent, Outcome, VmState
from backends.requests import HandoffRequest, MigrateRequest
from tests.faults.faulty import Faults
from tests.faults.figures import Figures

A = "test:///default"


def wait_until(predicate: object, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False


@pytest.fixture
def fleet(tmp_path: Path) -> str:
    return fleet_uri(write_test_fleet(tmp_path / "fleet.xml", 12))


@pytest.fixture
def two_hosts(faults: Faults, fleet: str) -> Iterator[LibvirtBackend]:
    backend = LibvirtBackend([A, fleet], poll_s=3600)
    yield backend
    faults.down.clear()
    faults.slow.clear()
    backend.close()


def host_state(backend: LibvirtBackend, uri: str) -> HostState:
    return next(h.state for h in backend.snapshot().hosts if h.uri == uri)


def test_a_host_that_drops_mid_refresh_is_lost_the_other_keeps_refreshing_and_it_reconnects_with_backoff(
        two_hosts: LibvirtBackend, faults: Faults, fleet: str, figures: Figures) -> None:
    backend = two_hosts
    a = backend.hosts[0]
    assert host_state(backend, fleet) is HostState.CONNECTED
    with figures.fault("host B's daemon stops during a refresh"):
        faults.drop(fleet)
        opens_before = len(faults.opens.get(fleet, []))
        inv = backend.refresh()
        assert wait_until(lambda: host_state(backend, fleet) is HostState.LOST, 5)
        lost = next(h for h in backend.snapshot().hosts if h.uri == fleet)
        assert "Connection reset by peer" in (lost.error or "")
        assert all(vm.state is VmState.UNKNOWN for vm in backend.snapshot().vms if vm.host == lost.name)
        # host A keeps refreshing on its own thread while B is down
        generation = a.request_refresh()
        assert a.wait_generation(generation, 2) and a.view.state is HostState.CONNECTED
        inv = backend.refresh()
        assert [vm.name for vm in inv.vms if vm.host == A] == ["test"]
        # reconnect attempts back off: 1 s, then 2 s, …
        assert wait_until(lambda: len(faults.opens[fleet]) >= opens_before + 3, 6)
        t = faults.opens[fleet][opens_before:]
        gaps = [t[1] - t[0], t[2] - t[1]]
        assert 0.8 < gaps[0] < 1.6 and gaps[1] > 1.5 * gaps[0], gaps
        faults.restore(fleet)
        assert wait_until(lambda: host_state(backend, fleet) is HostState.CONNECTED, 8)
        assert len([vm for vm in backend.refresh().vms if vm.host == fleet]) == 12
    figures.notes.append(f"reconnect backoff gaps after a drop: {gaps[0]:.1f}s, {gaps[1]:.1f}s")


def test_a_slow_host_does_not_delay_the_other(two_hosts: LibvirtBackend, faults: Faults, fleet: str,
                                              figures: Figures) -> None:
    a, b = two_hosts.hosts
    with figures.fault("host B answers in 1 s per call"):
        faults.make_slow(fleet, 1.0)
        b_generation = b.request_refresh()
        started = time.monotonic()
        for _ in range(3):
            generation = a.request_refresh()
            assert a.wait_generation(generation, 2)
        a_took = (time.monotonic() - started) / 3
        assert not b.wait_generation(b_generation, 0)  # B is still in its first call
        assert a_took < 0.5, f"host A took {a_took:.2f}s per refresh while B was slow"
        faults.slow.clear()
        assert b.wait_generation(b_generation, 10) and b.view.state is HostState.CONNECTED
    figures.notes.append(f"host A refresh while host B takes 1 s per call: {a_took * 1000:.0f} ms")


def run(op: object) -> tuple[object, list[JobEvent]]:
    events: list[JobEvent] = []
    result = op.run(events.append, threading.Event())  # type: ignore[attr-defined]
    return result, events


def test_a_migration_that_fails_mid_way_leaves_the_guest_running_on_its_source(
        two_hosts: LibvirtBackend, faults: Faults, fleet: str, figures: Figures) -> None:
    backend = two_hosts
    reason = "operation failed: migration out job: Unable to read from monitor: Connection reset by peer"
    with figures.fault("the destination's daemon stops during a migration"):
        faults.fail(fleet, "dom.migrate3", reason, delay_s=0.5)
        op = backend.prepare(MigrateRequest("vm0005", A))
        stopper = threading.Timer(0.2, faults.drop, (A,))
        stopper.start()
        result, _ = run(op)
        stopper.join()
        assert result.outcome is Outcome.FAILED  # type: ignore[attr-defined]
        assert reason in result.reason and "vm0005 keeps running on" in result.reason  # type: ignore[attr-defined]
        assert wait_until(lambda: host_state(backend, A) is HostState.LOST, 5)
        (vm,) = [v for v in backend.refresh().vms if v.name == "vm0005"]
        assert vm.host == fleet and vm.state is VmState.RUNNING
        faults.restore(A)


def test_a_handoff_whose_host_is_gone_changes_nothing(two_hosts: LibvirtBackend, faults: Faults, fleet: str,
                                                      figures: Figures) -> None:
    backend = two_hosts
    with figures.fault("the host's daemon stops as a handoff starts"):
        op = backend.prepare(HandoffRequest("vm0002/vda", "vm0001"))
        faults.drop(fleet)
        result, _ = run(op)
        assert result.outcome is Outcome.FAILED and "nothing changed" in result.reason  # type: ignore[attr-defined]
        faults.restore(fleet)
        assert wait_until(lambda: host_state(backend, fleet) is HostState.CONNECTED, 8)
        chains = {c.disk for c in backend.refresh().chains if c.vm == "vm0002"}
        assert "vda" in chains


def test_a_handoff_the_owner_will_not_release_stays_with_the_owner(
        two_hosts: LibvirtBackend, faults: Faults, figures: Figures) -> None:
    backend = two_hosts
    with figures.fault("the owner refuses to release the device"):
        op = backend.prepare(HandoffRequest("vm0002/vda", "vm0001"))
        result, _ = run(op)  # the test driver itself refuses virDomainDetachDeviceFlags
        assert result.outcome is Outcome.FAILED  # type: ignore[attr-defined]
        assert "would not release" in result.reason and "it stays with vm0002" in result.reason  # type: ignore[attr-defined]
