"""S4 device handoff: the holding queue's invariants under every interleaving, and the simulator op."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.errors import BadInput, NotFound
from backends.handoff import HandoffError, HandoffPhase, HoldingQueue
from backends.models import JobEvent, JobResult, Outcome, PhaseChanged, Progress
from backends.requests import HandoffRequest
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from backends.sim.handoff_op import SimHandoff

SOURCES = ("a", "b", "c", "d")
OWNERS = ("vm1", "vm2", "vm3", "host")

# --- the pure mechanism: properties --------------------------------------------------------

step = st.one_of(
    st.tuples(st.just("arrive"), st.sampled_from(SOURCES), st.integers(1, 6)),
    st.tuples(st.just("act"), st.integers(0, 8)),
    st.tuples(st.just("begin"), st.sampled_from(OWNERS)),
    st.tuples(st.just("reassign")),
    st.tuples(st.just("replay"), st.none() | st.integers(0, 5)),
    st.tuples(st.just("abort")),
    st.tuples(st.just("settle")),
)


def check_order_and_once(queue: HoldingQueue) -> None:
    done = queue.completed_ids()
    assert sorted(done) == list(range(queue.arrived)), "a request was lost or acted on twice"
    last: dict[str, int] = {}
    for request, _owner in queue.log():
        assert request.seq > last.get(request.source, -1), f"{request} acted on out of order"
        last[request.source] = request.seq


def finish(queue: HoldingQueue) -> None:
    while queue.busy or queue.in_flight:
        queue.settle()
        queue.device_step(7)


@settings(max_examples=2000, deadline=None)
@given(st.lists(step, max_size=60))
def test_any_interleaving_acts_on_every_request_once_in_order_by_its_owner(steps: list[tuple[object, ...]]) -> None:
    queue = HoldingQueue("vm1")
    forwarded_to: dict[int, str] = {}  # arrived while no handoff ran: the owner it went to
    held_between: dict[int, tuple[str, str]] = {}  # arrived during a handoff: (origin, target)
    for op, *args in steps:
        before = (queue.phase, queue.owner, queue.in_flight, queue.held, queue.completed)
        try:
            if op == "arrive":
                source, count = str(args[0]), int(str(args[1]))
                ids = [queue.arrive(source)] if count == 1 else list(queue.arrive_many(source, count))
                for rid in ids:
                    if before[0] in (HandoffPhase.FORWARDING, HandoffPhase.DONE):
                        forwarded_to[rid] = queue.owner
                    else:
                        held_between[rid] = (str(queue.origin), str(queue.target))
            elif op == "act":
                owner, start = queue.owner, queue.completed
                queue.device_step(int(str(args[0])))
                assert queue.owner == owner  # acting never changes the owner
                assert all(o == owner for _, o in queue.log()[start:])
            elif op == "begin":
                queue.begin_handoff(str(args[0]))
            elif op == "reassign":
                queue.reassign()
                assert before[2] == 0, "reassigned with requests still in flight"
            elif op == "replay":
                queue.replay(None if args[0] is None else int(str(args[0])))
            elif op == "abort":
                queue.abort()
            else:
                queue.settle()
        except HandoffError:
            assert before == (queue.phase, queue.owner, queue.in_flight, queue.held, queue.completed)
        assert queue.lost == 0
        if queue.phase is HandoffPhase.REASSIGNING:
            assert queue.in_flight == 0
    finish(queue)
    check_order_and_once(queue)
    actor = queue.owners_by_request()
    for rid, owner in forwarded_to.items():
        assert actor[rid] == owner, f"request {rid} went to {owner} but {actor[rid]} acted on it"
    for rid, pair in held_between.items():
        assert actor[rid] in pair


@settings(max_examples=2000, deadline=None)
@given(
    arrivals=st.lists(st.tuples(st.sampled_from(SOURCES), st.integers(0, 4)), min_size=1, max_size=60),
    speed=st.integers(1, 6),
    replay_batch=st.integers(1, 10),
    begin_at=st.integers(0, 60),
    abort_at=st.none() | st.integers(0, 90),
)
def test_a_handoff_gives_later_requests_to_the_new_owner(
    arrivals: list[tuple[str, int]], speed: int, replay_batch: int, begin_at: int, abort_at: int | None,
) -> None:
    """Requests before the handoff go to VM1; after it, to VM2; an abort gives them all back."""
    queue = HoldingQueue("vm1")
    before_begin: set[int] = set()
    committed_at_abort = False
    for tick in range(max(len(arrivals), begin_at, abort_at or 0) + 1):
        if tick == begin_at:
            queue.begin_handoff("vm2")
        if tick == abort_at and queue.busy:
            committed_at_abort = queue.owner == "vm2"
            queue.abort()
        if tick < len(arrivals):
            source, count = arrivals[tick]
            ids = queue.arrive_many(source, count)
            if tick < begin_at:
                before_begin.update(ids)
        queue.device_step(speed)
        if queue.phase is HandoffPhase.REASSIGNING:
            queue.reassign()
        elif queue.phase is HandoffPhase.REPLAYING:
            queue.replay(replay_batch)
    finish(queue)
    check_order_and_once(queue)
    actor = queue.owners_by_request()
    aborted = queue.aborted
    assert queue.owner == ("vm1" if aborted else "vm2")
    for rid in range(queue.arrived):
        if rid in before_begin:
            assert actor[rid] == "vm1"
        elif not aborted:
            assert actor[rid] == "vm2"
        elif not committed_at_abort:
            assert actor[rid] == "vm1"
    owners = [o for _, o in queue.log()]
    changes = [i for i in range(1, len(owners)) if owners[i] != owners[i - 1]]
    assert len(changes) <= (2 if committed_at_abort else 1)


# --- the pure mechanism: cases -----------------------------------------------------------


def test_handoff_with_nothing_in_flight_goes_straight_to_reassigning() -> None:
    queue = HoldingQueue("vm1")
    queue.begin_handoff("vm2")
    assert queue.phase is HandoffPhase.REASSIGNING
    queue.reassign()
    assert (queue.phase, queue.owner, queue.replayed) == (HandoffPhase.DONE, "vm2", 0)
    queue.device_step(10)
    assert queue.log() == []


def test_held_requests_wait_for_the_drain_then_go_to_the_new_owner() -> None:
    queue = HoldingQueue("vm1")
    queue.arrive_many("a", 3)
    queue.begin_handoff("vm2")
    queue.arrive("a")
    queue.arrive("b")
    assert (queue.in_flight, queue.held, queue.phase) == (3, 2, HandoffPhase.DRAINING)
    with pytest.raises(HandoffError, match="3 requests in flight"):
        queue.reassign()
    queue.device_step(3)
    assert queue.phase is HandoffPhase.REASSIGNING
    queue.arrive("a")  # still held until the replay
    queue.reassign()
    assert (queue.replay(2), queue.phase) == (2, HandoffPhase.REPLAYING)
    queue.arrive("b")  # behind what is held, so b's order holds
    queue.replay()
    queue.device_step(100)
    assert [(r.source, r.seq, o) for r, o in queue.log()] == [
        ("a", 0, "vm1"), ("a", 1, "vm1"), ("a", 2, "vm1"),
        ("a", 3, "vm2"), ("b", 0, "vm2"), ("a", 4, "vm2"), ("b", 1, "vm2")]
    assert (queue.replayed, queue.completed, queue.phase) == (4, 7, HandoffPhase.DONE)


def test_abort_before_reassignment_gives_every_held_request_back() -> None:
    queue = HoldingQueue("vm1")
    queue.arrive_many("a", 4)
    queue.begin_handoff("vm2")
    queue.arrive_many("b", 5)
    queue.device_step(2)
    queue.abort()
    assert (queue.owner, queue.phase, queue.held, queue.in_flight) == ("vm1", HandoffPhase.DONE, 0, 7)
    finish(queue)
    check_order_and_once(queue)
    assert {o for _, o in queue.log()} == {"vm1"} and queue.replayed == 5


def test_abort_after_reassignment_reverses_the_handoff_without_loss() -> None:
    queue = HoldingQueue("vm1")
    queue.begin_handoff("vm2")
    queue.arrive_many("a", 6)
    queue.reassign()
    queue.replay(2)
    queue.device_step(1)  # vm2 acted on one replayed request
    queue.abort()
    assert (queue.phase, queue.target) == (HandoffPhase.DRAINING, "vm1")
    with pytest.raises(HandoffError, match="already being undone"):
        queue.abort()
    finish(queue)
    check_order_and_once(queue)
    assert [o for _, o in queue.log()] == ["vm2", "vm2", "vm1", "vm1", "vm1", "vm1"]
    assert queue.owner == "vm1"


def test_a_second_handoff_while_one_runs_is_refused() -> None:
    queue = HoldingQueue("vm1")
    queue.arrive("a")
    queue.begin_handoff("vm2")
    with pytest.raises(HandoffError, match="a handoff from vm1 to vm2 is already draining"):
        queue.begin_handoff("vm3")
    with pytest.raises(HandoffError, match="already owns"):
        HoldingQueue("vm1").begin_handoff("vm1")
    with pytest.raises(HandoffError, match="no handoff to abort"):
        HoldingQueue("vm1").abort()
    with pytest.raises(HandoffError, match="nothing to replay"):
        HoldingQueue("vm1").replay()


def test_empty_queues_are_harmless() -> None:
    queue = HoldingQueue("vm1")
    assert queue.device_step(5) == 0 and queue.arrive_many("a", 0) == range(0)
    queue.settle()
    assert (queue.arrived, queue.in_flight, queue.held, queue.completed, queue.lost) == (0, 0, 0, 0, 0)


def test_benchmark_loses_nothing() -> None:
    from backends.handoff import benchmark

    rate, lost = benchmark(20_000)
    assert lost == 0 and rate > 0


# --- the simulator operation -------------------------------------------------------------


def sim() -> SimBackend:
    return SimBackend(load_fleet(demo_fleet_path()), ManualClock())


def run(op: SimHandoff, cancel_when: str | None = None) -> tuple[JobResult, list[JobEvent]]:
    events: list[JobEvent] = []
    cancel = threading.Event()

    def emit(event: JobEvent) -> None:
        events.append(event)
        if isinstance(event, PhaseChanged) and event.phase == cancel_when:
            cancel.set()

    return op.run(emit, cancel), events


def owner_of(backend: SimBackend, host: str, address: str) -> str:
    return str(next(d.owner for d in backend.snapshot().devices if (d.host, d.address) == (host, address)))


TO_VM = ("building vfio stack", "draining", "attaching to VM", "host relinquished", "replaying")  # S2
TO_HOST = ("building host stack", "draining", "returning to host", "VM relinquished", "replaying")  # S2
VM_TO_VM = ("draining", "reassigning", "replaying")  # S4


@pytest.mark.parametrize(("host", "address", "to", "owner_after", "driver_after", "vms", "phases"), [
    ("fra-hv01", "0000:18:01.2", "nfv-fw-01", "vm:nfv-fw-01", "vfio-pci", ("nfv-fw-01",), TO_VM),
    ("fra-hv01", "0000:18:01.0", "host", "host:iavf", "iavf", ("nfv-fw-01",), TO_HOST),
    ("fra-gpu01", "0000:17:00.0", "ml-infer-01", "vm:ml-infer-01", "vfio-pci", ("ml-train-01", "ml-infer-01"),
     VM_TO_VM),
])
def test_handoff_moves_the_device_and_loses_nothing(
    host: str, address: str, to: str, owner_after: str, driver_after: str, vms: tuple[str, ...],
    phases: tuple[str, ...],
) -> None:
    backend = sim()
    op = SimHandoff(backend, HandoffRequest(address, to, host=host))
    result, events = run(op)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert "none lost" in result.reason
    assert tuple(e.phase for e in events if isinstance(e, PhaseChanged)) == phases
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].remaining == 0 and progress[-1].unit == "requests"
    assert max(p.held for p in progress) > 0 and progress[-1].detail["replayed"] > 0  # type: ignore[operator]
    assert all(p.done <= q.done for p, q in itertools.pairwise(progress))
    inv = backend.snapshot()
    device = next(d for d in inv.devices if (d.host, d.address) == (host, address))
    assert (str(device.owner), device.driver) == (owner_after, driver_after)
    assert [v.name for v in inv.vms if address in v.devices and v.host == host] == ([] if to == "host" else [to])
    assert op.job.targets == (f"{host}/{address}", *vms)
    assert op.job.phases == phases


@pytest.mark.parametrize("when", ["draining", "reassigning", "replaying"])
def test_cancel_mid_way_keeps_the_owner_and_loses_nothing(when: str) -> None:
    backend = sim()
    before = backend.snapshot()
    result, events = run(SimHandoff(backend, HandoffRequest("0000:17:00.0", "ml-infer-01", host="fra-gpu01")),
                         cancel_when=when)
    assert result.outcome is Outcome.CANCELLED, result.reason
    assert f"cancelled while {when}" in result.reason and "none lost" in result.reason
    assert "stays with ml-train-01" in result.reason
    assert owner_of(backend, "fra-gpu01", "0000:17:00.0") == "vm:ml-train-01"
    after = backend.snapshot()
    assert after.devices == before.devices and [v.devices for v in after.vms] == [v.devices for v in before.vms]
    assert "aborting" in [e.phase for e in events if isinstance(e, PhaseChanged)]
    last = [e for e in events if isinstance(e, Progress)][-1]
    assert last.remaining == 0 and last.detail["owner"] == "ml-train-01"


def test_a_device_nobody_drives_hands_off_at_once_through_the_backend() -> None:
    backend = sim()
    op = backend.prepare(HandoffRequest("0000:3b:00.0", "web-03", host="fra-hv02"))  # detached, on vfio-pci
    assert isinstance(op, SimHandoff)
    result, events = run(op)
    assert result.outcome is Outcome.SUCCEEDED and "0 requests acted on" in result.reason
    assert [e.phase for e in events if isinstance(e, PhaseChanged)] == ["draining", "reassigning", "replaying"]
    assert owner_of(backend, "fra-hv02", "0000:3b:00.0") == "vm:web-03"


def test_drain_reports_as_a_phase_of_another_job() -> None:
    backend = sim()
    op = SimHandoff(backend, HandoffRequest("0000:18:01.0", "host", host="fra-hv01"))
    events: list[JobEvent] = []
    result = op.drain(events.append, threading.Event(), job_id="migrate-x", phase="handoff")
    assert result.outcome is Outcome.SUCCEEDED and result.job_id == "migrate-x"
    assert {e.job_id for e in events} == {"migrate-x"}
    assert {e.phase for e in events if isinstance(e, PhaseChanged | Progress)} == {"handoff"}
    assert "0000:18:01.0 returning to host" in " ".join(e.message for e in events if isinstance(e, PhaseChanged))


@pytest.mark.parametrize(("request_", "error", "message"), [
    (HandoffRequest("0000:18:01.2", "web-03", host="fra-hv01"), BadInput,
     "web-03 runs on fra-hv02, not on fra-hv01 where the device is"),
    (HandoffRequest("0000:18:01.0", "nfv-fw-01", host="fra-hv01"), BadInput, "already belongs to nfv-fw-01"),
    (HandoffRequest("0000:18:01.2", "host", host="fra-hv01"), BadInput, "already belongs to host"),
    (HandoffRequest("0000:99:00.0", "host"), NotFound, "no PCI device '0000:99:00.0'"),
    (HandoffRequest("0000:18:00.0", "host"), BadInput, "0000:18:00.0 exists on fra-hv01, fra-hv02, fra-gpu01"),
    (HandoffRequest("0000:18:00.0", "web-01", host="fra-hv01"), BadInput, "VFs 0000:18:01.0, 0000:18:01.1"),
    (HandoffRequest("0000:3b:00.0", "cache-01", host="fra-hv01"), BadInput, "cache-01 is shutoff"),
    (HandoffRequest("0000:3b:00.0", "ghost", host="fra-hv01"), NotFound, "no VM called 'ghost'"),
    (HandoffRequest("0000:3b:00.0", "host", host="mars"), NotFound, "no host called 'mars'"),
])
def test_nonsense_is_refused_before_anything_changes(
    request_: HandoffRequest, error: type[Exception], message: str,
) -> None:
    backend = sim()
    before = backend.snapshot()
    with pytest.raises(error, match=message):
        SimHandoff(backend, request_)
    after = backend.snapshot()
    assert after.devices == before.devices and after.vms == before.vms


def test_runs_repeat_exactly() -> None:
    def trace() -> list[tuple[int, int, int]]:
        _, events = run(SimHandoff(sim(), HandoffRequest("0000:17:00.0", "ml-infer-01", host="fra-gpu01")))
        return [(p.done, p.remaining, p.held) for p in events if isinstance(p, Progress)]

    assert trace() == trace()



@pytest.mark.parametrize("stage", ["building vfio stack", "attaching to VM", "host relinquished"])
def test_s2_a_failure_at_any_stage_returns_the_device_to_the_host(stage: str) -> None:
    backend = sim()
    before = backend.snapshot()
    backend.faults[stage] = "injected: the stack refused"
    result, events = run(SimHandoff(backend, HandoffRequest("0000:18:01.2", "nfv-fw-01", host="fra-hv01")))
    assert result.outcome is Outcome.FAILED, result.reason
    assert f"failed while {stage}: injected" in result.reason
    assert "back with host" in result.reason or "stays with host" in result.reason
    assert stage == "building vfio stack" or "none lost" in result.reason
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases[: TO_VM.index(stage) + 1] == list(TO_VM[: TO_VM.index(stage) + 1])
    assert "replaying" not in phases[: phases.index(stage)]  # nothing reached the VM before its stage
    assert owner_of(backend, "fra-hv01", "0000:18:01.2") == "host:iavf"
    after = backend.snapshot()
    assert after.devices == before.devices and [v.devices for v in after.vms] == [v.devices for v in before.vms]
    progress = [e for e in events if isinstance(e, Progress)]
    assert not progress or progress[-1].detail["owner"] == "host"
    assert backend.faults == {}  # the fault was used once


def test_s2_vm_to_host_failing_to_relinquish_keeps_it_with_the_vm() -> None:
    backend = sim()
    backend.faults["VM relinquished"] = "injected: the guest still maps it"
    result, _ = run(SimHandoff(backend, HandoffRequest("0000:18:01.0", "host", host="fra-hv01")))
    assert result.outcome is Outcome.FAILED and "back with nfv-fw-01" in result.reason and "none lost" in result.reason
    assert owner_of(backend, "fra-hv01", "0000:18:01.0") == "vm:nfv-fw-01"
