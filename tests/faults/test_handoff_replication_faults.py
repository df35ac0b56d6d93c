"""Faults in the middle of a device handoff (S4) and of a replication sync.

A handoff aborted at any moment gives the device back to its original owner and every held
request is acted on exactly once; an interrupted sync keeps only whole layers and the next
one resumes where it stopped, on the simulator and in the libvirt stream code (on fakes)."""

from __future__ import annotations

import random
import re
import threading
from typing import Any

import libvirt
import pytest
import xxhash

from backends.handoff import HandoffPhase, HoldingQueue
from backends.libvirt.replication import stream as streams
from backends.models import LayerState, Outcome
from backends.requests import HandoffRequest, ReplicateRequest
from backends.sim.handoff_op import SimHandoff
from tests.faults.figures import Figures
from tests.unit.test_handoff import owner_of
from tests.unit.test_handoff import run as run_handoff
from tests.unit.test_handoff import sim as handoff_sim
from tests.unit.test_sim_operations import run
from tests.unit.test_sim_replication import link
from tests.unit.test_sim_replication import sim as replication_sim


def lost_or_duplicated(queue: HoldingQueue) -> int:
    done = queue.completed_ids()
    return (queue.arrived - len(set(done))) + (len(done) - len(set(done)))


@pytest.mark.parametrize("seed", range(40))
def test_a_handoff_aborted_at_a_random_moment_returns_the_device_and_replays_every_held_request_once(
        seed: int, figures: Figures) -> None:
    rng = random.Random(seed)
    queue = HoldingQueue("vm-a")
    sources = ["flow-0", "flow-1", "flow-2"]
    abort_at = rng.choice([HandoffPhase.DRAINING, HandoffPhase.REASSIGNING, HandoffPhase.REPLAYING])
    begun = aborted = False
    with figures.fault(f"handoff aborted while {abort_at.value}"):
        for step in range(400):
            for source in sources:
                queue.arrive_many(source, rng.randint(0, 5))
            # slowly while the handoff runs, so each phase lasts a few steps
            queue.device_step(rng.randint(0, 3) if begun and not aborted else rng.randint(0, 12))
            if not begun and step == 10:
                queue.begin_handoff("vm-b")  # with requests in flight: it starts by draining
                begun = True
            elif begun and not aborted:
                if queue.phase is abort_at and rng.random() < 0.3:
                    queue.abort()
                    aborted = True
                elif queue.phase is HandoffPhase.REASSIGNING and abort_at is not HandoffPhase.REASSIGNING:
                    queue.reassign()
                elif queue.phase is HandoffPhase.REPLAYING:
                    queue.replay(rng.randint(1, 3))
            elif aborted and queue.busy:
                queue.settle()
        while queue.busy or queue.in_flight:
            queue.settle()
            queue.device_step(50)
        assert aborted, "the handoff never reached the phase to abort in"
        assert queue.owner == "vm-a", "the device did not go back to its original owner"
        bad = lost_or_duplicated(queue)
        figures.requests(queue.arrived, bad)
        assert bad == 0 and queue.held == 0 and queue.in_flight == 0
        for source in sources:  # in arrival order per source
            seqs = [queue.request(r).seq for r in queue.completed_ids() if queue.request(r).source == source]
            assert seqs == sorted(seqs)


@pytest.mark.parametrize("when", ["draining", "reassigning", "replaying"])
def test_a_simulated_handoff_cancelled_mid_way_loses_nothing(when: str, figures: Figures) -> None:
    backend = handoff_sim()
    with figures.fault(f"simulated handoff cancelled while {when}"):
        op = SimHandoff(backend, HandoffRequest("0000:17:00.0", "ml-infer-01", host="fra-gpu01"))
        result, _ = run_handoff(op, cancel_when=when)
        assert result.outcome is Outcome.CANCELLED and "none lost" in result.reason, result.reason
        assert owner_of(backend, "fra-gpu01", "0000:17:00.0") == "vm:ml-train-01"
        acted = int(re.search(r"([\d,]+) requests acted on", result.reason).group(1).replace(",", ""))  # type: ignore[union-attr]
        figures.requests(acted, 0)


@pytest.mark.parametrize("cancel_after", [3, 60, 150, 290, 400])
def test_a_simulated_sync_interrupted_anywhere_resumes_to_an_identical_replica(cancel_after: int,
                                                                               figures: Figures) -> None:
    backend, _ = replication_sim()
    with figures.fault(f"sync interrupted after {cancel_after} events"):
        result, _ = run(backend, ReplicateRequest("ci-runner-01", "dub-hv01"), cancel_after=cancel_after)
        partial = link(backend, "ci-runner-01")
        done = sum(1 for s in partial.layer_states if s is LayerState.PRESENT)
        assert len(partial.replica.layers) == done  # only whole layers count at the replica
        if result.outcome is Outcome.CANCELLED:
            assert "resumes" in result.reason
        result, _ = run(backend, ReplicateRequest("ci-runner-01"))
        assert result.outcome is Outcome.SUCCEEDED, result.reason
        shipped = int(result.reason.split()[0])
        assert shipped == sum(layer.allocated_bytes or 0 for layer in partial.primary.layers[done:])
        final = link(backend, "ci-runner-01")
        assert final.layer_states == (LayerState.PRESENT,) * len(final.primary.layers)
        names = [layer.path.rsplit("/", 1)[-1] for layer in final.primary.layers]
        assert [layer.path.rsplit("/", 1)[-1] for layer in final.replica.layers] == names


# -- the libvirt stream code, on fake streams --------------------------------------------------


class FakeDownload:
    """A sparse download stream of ``segments`` (bytes, or an int for a hole) that can drop mid-way."""

    def __init__(self, segments: list[bytes | int], fail_after: int | None = None) -> None:
        self.segments, self.fail_after, self.served = list(segments), fail_after, 0
        self.finished = self.aborted = False

    def recvFlags(self, _n: int, _flags: int) -> bytes | int:
        if self.fail_after is not None and self.served >= self.fail_after:
            raise libvirt.libvirtError("Cannot recv data: Connection reset by peer")
        if not self.segments:
            return b""
        self.served += 1
        head = self.segments[0]
        if isinstance(head, int):
            return -3
        return self.segments.pop(0)

    def recvHole(self, _flags: int) -> int:
        hole = self.segments.pop(0)
        assert isinstance(hole, int)
        return hole

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


class FakeUpload:
    def __init__(self) -> None:
        self.data = bytearray()
        self.finished = self.aborted = False

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def sendHole(self, length: int, _flags: int) -> None:
        self.data += bytes(length)

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


class FakeConn:
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def newStream(self, _flags: int) -> Any:
        return self.stream


class FakeVol:
    def download(self, *_args: Any) -> None:
        pass

    def upload(self, *_args: Any) -> None:
        pass


LAYER: list[bytes | int] = [b"RAWDISK-" * 8, 4096, b"x" * 1000, 8192, b"tail"]


def test_a_layer_stream_that_drops_mid_way_is_aborted_and_a_retry_ships_it_whole(figures: Figures) -> None:
    whole = b"".join(s if isinstance(s, bytes) else bytes(s) for s in LAYER)
    with figures.fault("the source host drops in the middle of a layer"):
        broken_down, broken_up = FakeDownload(LAYER, fail_after=3), FakeUpload()
        with pytest.raises(libvirt.libvirtError, match="Connection reset"):
            streams.ship_layer(FakeConn(broken_down), FakeVol(), FakeConn(broken_up), FakeVol(), None,
                               lambda _n: None, threading.Event())
        assert broken_up.aborted and not broken_up.finished  # the partial upload is not kept
        assert broken_down.aborted
        down, up = FakeDownload(LAYER), FakeUpload()
        read = streams.ship_layer(FakeConn(down), FakeVol(), FakeConn(up), FakeVol(), None, lambda _n: None,
                                  threading.Event())
        assert up.finished and not up.aborted and bytes(up.data) == whole
        assert read.checksum == f"xxh128:{xxhash.xxh3_128(whole).hexdigest()}"


def test_a_cancelled_layer_stream_is_aborted(figures: Figures) -> None:
    cancel = threading.Event()
    with figures.fault("a sync cancelled in the middle of a layer"):
        down, up = FakeDownload(LAYER), FakeUpload()

        def sent(_n: int) -> None:
            cancel.set()

        with pytest.raises(streams.Cancelled):
            streams.ship_layer(FakeConn(down), FakeVol(), FakeConn(up), FakeVol(), None, sent, cancel)
        assert up.aborted and down.aborted and not up.finished
