"""S3 on the simulator: DMA traffic against the residency tracker of each guest on an
overcommitted host, stepped on the injected clock.

A host is overcommitted when its fleet entry sets ``overcommit`` above 1: it promises guests
more memory than it has and keeps resident only what they touch, reclaiming the rest under
pressure. Every second of simulated time, each device assigned to a guest there starts a few
transfers (pinning their pages, faulting missing ones in) and finishes older ones; the guest
touches pages; the host reclaims some, and is refused the pinned ones. On a host without
overcommit a guest with a direct-assigned device has all its memory pinned (as VFIO does),
and a guest without one has nothing to report beyond its memory (all resident, none pinned).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from backends.models import Residency, Vm
from backends.residency import ResidencyTracker

PAGE_KIB = 2048  # the simulator tracks guest memory in 2 MiB pages
TICK_S = 1.0
MAX_CATCH_UP = 120  # ticks replayed after a long pause; older traffic is skipped
WORKING_SET = 0.6  # fraction of guest memory resident when tracking starts


@dataclass
class GuestTraffic:
    tracker: ResidencyTracker
    rng: random.Random
    tick: int  # the last tick stepped
    ends: dict[int, int] = field(default_factory=dict)  # transfer id → tick it ends
    devices: tuple[str, ...] = ()


class SimResidency:
    """Per-VM trackers for guests on overcommitted hosts; built lazily, dropped when a guest stops."""

    def __init__(self, seed: int, overcommit: dict[str, float]) -> None:
        self.seed = seed
        self.overcommit = overcommit  # host → ratio
        self.guests: dict[str, GuestTraffic] = {}

    def tracked(self, vm: Vm) -> bool:
        return vm.active and self.overcommit.get(vm.host, 1.0) > 1.0

    def residency(self, vm: Vm, now: float) -> Residency | None:
        if not vm.active:
            self.guests.pop(vm.name, None)
            return None
        if not self.tracked(vm):
            self.guests.pop(vm.name, None)
            # All its memory resident and, with a direct-assigned device, all of it pinned (VFIO);
            # without one there is nothing to say beyond its memory size.
            return Residency(vm.memory_kib, vm.memory_kib, locked=True) if vm.devices else None
        guest = self.guest(vm, now)
        self.step(guest, now)
        return guest.tracker.residency(PAGE_KIB)

    def end_device(self, vm: str | None, device: str) -> int:
        """End the transfers ``device`` had in flight for ``vm`` (it was reset); returns how many."""
        guest = self.guests.get(vm or "")
        if guest is None:
            return 0
        ending = [t.id for t in guest.tracker.transfers() if t.tag == device]
        for tid in ending:
            guest.tracker.end_dma(tid)
            guest.ends.pop(tid, None)
        return len(ending)

    def guest(self, vm: Vm, now: float) -> GuestTraffic:
        guest = self.guests.get(vm.name)
        if guest is None:
            rng = random.Random(f"{self.seed}:{vm.name}:dma")
            total = (vm.max_memory_kib or vm.memory_kib) // PAGE_KIB
            usable = vm.memory_kib // PAGE_KIB
            cut = int(256 * WORKING_SET)  # a random byte below it: the page starts resident
            start = rng.randbytes(usable).translate(bytes(int(b < cut) for b in range(256)))
            tracker = ResidencyTracker(total, start, ballooned=range(usable, total))
            guest = GuestTraffic(tracker, rng, int(now // TICK_S))
            self.guests[vm.name] = guest
        guest.devices = vm.devices
        return guest

    def step(self, guest: GuestTraffic, now: float) -> None:
        target = int(now // TICK_S)
        if target - guest.tick > MAX_CATCH_UP:
            guest.tick = target - MAX_CATCH_UP
        while guest.tick < target:
            guest.tick += 1
            _tick(guest)


def _tick(guest: GuestTraffic) -> None:
    t, rng, now = guest.tracker, guest.rng, guest.tick
    for tid, end in list(guest.ends.items()):
        if end <= now:
            t.end_dma(tid)
            del guest.ends[tid]
    usable = t.usable
    if usable <= 0:
        return
    for device in guest.devices:
        for _ in range(rng.randint(0, 3)):
            length = rng.randint(1, 16)
            first = rng.randrange(max(1, usable - length))
            pages = [p for p in range(first, min(first + length, t.pages)) if not t.is_ballooned(p)]
            if pages:
                guest.ends[t.begin_dma(pages, device).id] = now + rng.randint(1, 3)
    touched = max(1, usable // 4000)
    t.touch(p for p in (rng.randrange(usable) for _ in range(touched)) if not t.is_ballooned(p))
    # Reclaim pressure: the host takes back pages at random, and may only take unpinned ones; its
    # scan sometimes reaches a buffer under DMA, and those pages are refused.
    victims = [rng.randrange(usable) for _ in range(touched)]
    transfers = t.transfers()
    if transfers and rng.random() < 0.3:
        victims.extend(rng.choice(transfers).pages)
    t.reclaim(p for p in victims if not t.is_ballooned(p))
