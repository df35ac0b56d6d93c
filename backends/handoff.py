"""S4, the pure mechanism: hand a device from one owner to another without losing a request.

A device serves a stream of requests from several sources. Normally each arriving request is
*forwarded* to the current owner's device queue (``in_flight``) and the device *acts* on
them in order. ``begin_handoff(target)`` starts a handoff: new arrivals go to a *holding
queue* instead, while the device keeps acting on what it was already given (*draining*).
When nothing is in flight the device is *reassigned* to the target, then held requests are
*replayed* (forwarded to the new owner in arrival order); once the holding queue is empty,
arrivals are forwarded directly again.

``abort()`` before the reassignment gives everything held back to the original owner; after
it, the handoff is reversed the same lossless way (drain the new owner, reassign back, replay).

Everything is driven by discrete calls, with no clock and no threads, so tests and the
simulator decide time. Invariants for every interleaving: each request is acted on exactly
once, in arrival order per source, and only by the owner of the device at that moment.
Requests are plain ints (ids) in deques, so a full handoff passes well over 10⁶ requests/s.
"""

from __future__ import annotations

import time
from collections import deque
from enum import StrEnum
from typing import NamedTuple

from backends.errors import Conflict


class HandoffPhase(StrEnum):
    FORWARDING = "forwarding"  # no handoff yet: arrivals go to the owner's device queue
    DRAINING = "draining"  # arrivals are held; the device finishes what it was given
    REASSIGNING = "reassigning"  # nothing in flight: the device may change owner
    REPLAYING = "replaying"  # the new owner has it; held requests are forwarded to it
    DONE = "done"  # the handoff (or its abort) is over: arrivals are forwarded again


BUSY = frozenset({HandoffPhase.DRAINING, HandoffPhase.REASSIGNING, HandoffPhase.REPLAYING})


class HandoffError(Conflict):
    """A handoff step asked for at the wrong moment (the queue is left unchanged)."""


class Request(NamedTuple):
    id: int
    source: str
    seq: int  # 0, 1, 2, … per source, in arrival order


class HoldingQueue:
    """One device, its owner, its in-flight queue and its holding queue."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.phase = HandoffPhase.FORWARDING
        self.target: str | None = None
        self.origin: str | None = None  # the owner when the current handoff began
        self.aborted = False
        self.replayed = 0
        self._in_flight: deque[int] = deque()
        self._held: deque[int] = deque()
        self._source: list[str] = []  # by request id
        self._seq: list[int] = []  # by request id
        self._next_seq: dict[str, int] = {}
        self._done: list[int] = []  # request ids, in the order the device acted on them
        self._epochs: list[tuple[int, str]] = [(0, owner)]  # (index into _done, owner from then on)

    # -- counts --------------------------------------------------------------------------

    @property
    def arrived(self) -> int:
        return len(self._source)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def completed(self) -> int:
        return len(self._done)

    @property
    def lost(self) -> int:
        """Requests that arrived but are nowhere: always 0 (kept as a checked number)."""
        return self.arrived - self.completed - self.in_flight - self.held

    @property
    def busy(self) -> bool:
        return self.phase in BUSY

    # -- the stream ----------------------------------------------------------------------

    def arrive(self, source: str) -> int:
        """A request from ``source`` arrives; returns its id."""
        rid = len(self._source)
        seq = self._next_seq.get(source, 0)
        self._next_seq[source] = seq + 1
        self._source.append(source)
        self._seq.append(seq)
        if self.phase in BUSY:
            self._held.append(rid)
        else:
            self._in_flight.append(rid)
        return rid

    def arrive_many(self, source: str, count: int) -> range:
        """``count`` requests from ``source`` arrive back to back; returns their ids."""
        first = len(self._source)
        seq = self._next_seq.get(source, 0)
        self._next_seq[source] = seq + count
        self._source.extend([source] * count)
        self._seq.extend(range(seq, seq + count))
        ids = range(first, first + count)
        (self._held if self.phase in BUSY else self._in_flight).extend(ids)
        return ids

    def device_step(self, n: int) -> int:
        """The device acts on up to ``n`` in-flight requests, oldest first; returns how many."""
        queue = self._in_flight
        k = min(max(0, n), len(queue))
        if k == len(queue):
            self._done.extend(queue)
            queue.clear()
        else:
            popleft = queue.popleft
            self._done.extend([popleft() for _ in range(k)])
        if self.phase is HandoffPhase.DRAINING and not queue:
            self.phase = HandoffPhase.REASSIGNING
        return k

    # -- the handoff ---------------------------------------------------------------------

    def begin_handoff(self, target: str) -> None:
        """From now on arrivals are held; reassign once the device has drained."""
        if self.busy:
            raise HandoffError(f"a handoff from {self.origin} to {self.target} is already {self.phase.value}",
                               hint="wait for it to finish or abort it")
        if target == self.owner:
            raise HandoffError(f"{target} already owns the device", hint="pick another target")
        self.origin, self.target, self.aborted = self.owner, target, False
        self.phase = HandoffPhase.DRAINING if self._in_flight else HandoffPhase.REASSIGNING

    def reassign(self) -> None:
        """Give the drained device to the target; held requests are then replayed to it."""
        if self.phase is not HandoffPhase.REASSIGNING or self.target is None:
            raise HandoffError(f"cannot reassign while {self.phase.value}: {self.in_flight} requests in flight",
                               hint="let the device drain first")
        self.owner = self.target
        self._epochs.append((len(self._done), self.owner))
        self.phase = HandoffPhase.REPLAYING if self._held else HandoffPhase.DONE

    def replay(self, n: int | None = None) -> int:
        """Forward up to ``n`` (default: all) held requests to the new owner, in arrival order."""
        if self.phase is not HandoffPhase.REPLAYING:
            raise HandoffError(f"nothing to replay while {self.phase.value}",
                               hint="held requests are replayed after the reassignment")
        held = self._held
        k = len(held) if n is None else min(max(0, n), len(held))
        if k == len(held):
            self._in_flight.extend(held)
            held.clear()
        else:
            popleft = held.popleft
            self._in_flight.extend([popleft() for _ in range(k)])
        self.replayed += k
        if not held:
            self.phase = HandoffPhase.DONE
        return k

    def settle(self) -> None:
        """Do whatever the handoff is waiting for except device work: reassign, replay all."""
        if self.phase is HandoffPhase.REASSIGNING:
            self.reassign()
        if self.phase is HandoffPhase.REPLAYING:
            self.replay()

    def abort(self) -> None:
        """Give the device back to the owner it had when the handoff began; nothing is lost.

        Before the reassignment the held requests go straight back to the original owner,
        behind what is still in flight. After it, the handoff runs in reverse: the new
        owner drains what was replayed to it, then the device goes back and the rest of the
        holding queue (and whatever arrives meanwhile) is replayed to the original owner.
        """
        if not self.busy or self.origin is None:
            raise HandoffError("no handoff to abort", hint="the device is not being handed off")
        if self.aborted:
            raise HandoffError(f"the handoff is already being undone (back to {self.origin})")
        self.aborted = True
        if self.phase is HandoffPhase.REPLAYING:
            self.target = self.origin
            self.phase = HandoffPhase.DRAINING if self._in_flight else HandoffPhase.REASSIGNING
            return
        self.target = None
        self.replayed += len(self._held)
        self._in_flight.extend(self._held)
        self._held.clear()
        self.phase = HandoffPhase.DONE

    # -- what happened -------------------------------------------------------------------

    def request(self, rid: int) -> Request:
        return Request(rid, self._source[rid], self._seq[rid])

    def completed_ids(self) -> list[int]:
        """Request ids in the order the device acted on them."""
        return list(self._done)

    def log(self) -> list[tuple[Request, str]]:
        """Every completed request, in order, with the owner that acted on it."""
        out: list[tuple[Request, str]] = []
        bounds = [*self._epochs[1:], (len(self._done), "")]
        for (start, owner), (end, _) in zip(self._epochs, bounds, strict=True):
            out.extend((self.request(rid), owner) for rid in self._done[start:end])
        return out

    def owners_by_request(self) -> dict[int, str]:
        """Request id → the owner that acted on it (compact form of ``log``)."""
        out: dict[int, str] = {}
        bounds = [*self._epochs[1:], (len(self._done), "")]
        for (start, owner), (end, _) in zip(self._epochs, bounds, strict=True):
            out.update(dict.fromkeys(self._done[start:end], owner))
        return out


def benchmark(total: int = 1_000_000, sources: int = 8, burst: int = 16) -> tuple[float, int]:
    """Push ``total`` requests through a full handoff; returns (requests/s, lost).

    Each round every source sends ``burst`` requests (one ``arrive`` call each when
    ``burst`` is 1) and the device acts on 1.5× what arrived, so the drain converges.
    """
    queue = HoldingQueue("vm1")
    names = [f"flow-{i}" for i in range(sources)]
    act = max(1, burst * sources * 3 // 2)
    begin_at, arrived, started = total // 3, 0, time.perf_counter()
    while arrived < total:
        for name in names:
            n = min(burst, total - arrived)
            if burst == 1 and n:
                queue.arrive(name)
            else:
                queue.arrive_many(name, n)
            arrived += n
        queue.device_step(act)
        if queue.phase is HandoffPhase.FORWARDING and arrived >= begin_at:
            queue.begin_handoff("vm2")
        elif queue.phase is HandoffPhase.REASSIGNING:
            queue.reassign()
        elif queue.phase is HandoffPhase.REPLAYING:
            queue.replay(act * 4)
    while queue.busy or queue.in_flight:
        queue.settle()
        queue.device_step(act)
    elapsed = time.perf_counter() - started
    done = queue.completed_ids()
    unique = set(done)
    lost = (total - len(unique & set(range(total)))) + (len(done) - len(unique))  # missing + duplicated
    assert queue.owner == "vm2" and queue.replayed > 0
    return total / elapsed, lost


def main() -> None:
    import sys

    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    for burst, how in ((1, "one arrive() per request"), (16, "bursts of 16 per source")):
        rate, lost = benchmark(total, burst=burst)
        print(f"{total:,} requests through a full handoff, {how}: {rate:,.0f} requests/s, lost {lost}")


if __name__ == "__main__":
    main()
