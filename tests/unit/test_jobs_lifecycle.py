"""Lifecycle operations on the simulator, run through the job runner."""

from __future__ import annotations

import threading

import pytest

from backends.base import Emit, Operation, new_job
from backends.errors import BadInput, Conflict, NotFound, ReadOnly
from backends.models import JobKind, JobResult, Outcome, PhaseChanged, Progress, VmState
from backends.requests import LifecycleAction, LifecycleRequest
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from console.jobs import JobRunner


def sim(read_only: bool = False) -> SimBackend:
    return SimBackend(load_fleet(demo_fleet_path()), ManualClock(), read_only=read_only)


@pytest.mark.parametrize(("vm", "action", "after"), [
    ("cache-01", LifecycleAction.START, VmState.RUNNING),
    ("web-01", LifecycleAction.SHUTDOWN, VmState.SHUTOFF),
    ("web-01", LifecycleAction.FORCE_OFF, VmState.SHUTOFF),
    ("web-01", LifecycleAction.PAUSE, VmState.PAUSED),
    ("ci-runner-01", LifecycleAction.RESUME, VmState.RUNNING),
    ("web-01", LifecycleAction.REBOOT, VmState.RUNNING),
])
def test_lifecycle_changes_state_with_progress(vm: str, action: LifecycleAction, after: VmState) -> None:
    backend = sim()
    runner = JobRunner()
    seen: list[object] = []
    runner.listen(lambda job, event: seen.append(event))
    record = runner.start(backend.prepare(LifecycleRequest(vm, action)))
    assert record.done.wait(5)
    assert record.result and record.result.outcome is Outcome.SUCCEEDED
    assert backend.snapshot().vm(vm).state is after  # type: ignore[union-attr]
    assert isinstance(seen[0], PhaseChanged) and isinstance(seen[-1], JobResult)
    fractions = [e.fraction for e in seen if isinstance(e, Progress)]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_freeing_memory_by_shutdown_shows_in_the_cell() -> None:
    backend = sim()
    before = backend.snapshot().host("fra-hv01").numa[0].free_kib  # type: ignore[union-attr]
    record = JobRunner().start(backend.prepare(LifecycleRequest("web-01", LifecycleAction.SHUTDOWN)))
    record.done.wait(5)
    after = backend.snapshot().host("fra-hv01").numa[0].free_kib  # type: ignore[union-attr]
    assert after - before == 16 << 20  # type: ignore[operator]


@pytest.mark.parametrize(("request_", "error", "message"), [
    (LifecycleRequest("web-01", LifecycleAction.START), BadInput, "cannot start web-01: it is running"),
    (LifecycleRequest("cache-01", LifecycleAction.PAUSE), BadInput, "cannot pause cache-01: it is shutoff"),
    (LifecycleRequest("nope", LifecycleAction.START), NotFound, "no VM called 'nope'"),
])
def test_nonsense_is_refused_before_anything_changes(request_: LifecycleRequest, error: type, message: str) -> None:
    backend = sim()
    before = backend.snapshot()
    with pytest.raises(error, match=message):
        backend.prepare(request_)
    assert backend.refresh() == before


def test_read_only_refuses_lifecycle() -> None:
    with pytest.raises(ReadOnly):
        sim(read_only=True).prepare(LifecycleRequest("web-01", LifecycleAction.SHUTDOWN))


class Blocking(Operation):
    def __init__(self, targets: tuple[str, ...], gate: threading.Event) -> None:
        super().__init__(new_job(JobKind.LIFECYCLE, targets, ("wait",), f"hold {targets[0]}"))
        self.gate = gate

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        while not self.gate.wait(0.01):
            if cancel.is_set():
                return JobResult(self.job.id, Outcome.CANCELLED, "cancelled")
        return JobResult(self.job.id, Outcome.SUCCEEDED)


class Exploding(Operation):
    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        raise RuntimeError("boom")


def test_a_second_job_on_the_same_vm_is_refused_naming_the_running_job() -> None:
    runner, gate = JobRunner(), threading.Event()
    first = runner.start(Blocking(("web-01",), gate))
    with pytest.raises(Conflict, match=f"web-01 is busy with job {first.job.id}"):
        runner.start(Blocking(("web-01", "fra-hv02"), gate))
    other = runner.start(Blocking(("web-02",), gate))  # unrelated targets run concurrently
    assert len(runner.running()) == 2
    assert runner.cancel(other.job.id) and other.done.wait(5)
    assert other.result and other.result.outcome is Outcome.CANCELLED
    gate.set()
    assert first.done.wait(5) and first.result and first.result.outcome is Outcome.SUCCEEDED
    runner.start(Blocking(("web-01",), gate)).done.wait(5)  # free again once finished


def test_an_operation_that_raises_still_ends_its_job_with_the_reason() -> None:
    record = JobRunner().start(Exploding(new_job(JobKind.LIFECYCLE, ("x",), ("p",), "explode")))
    assert record.done.wait(5)
    assert record.result and record.result.outcome is Outcome.FAILED and "boom" in record.result.reason
    assert record.events[-1] is record.result
