"""S3 on the simulator: set a running guest's memory with its balloon, through the residency tracker.

Shrinking takes pages from the guest; a page pinned by a DMA transfer is never taken (each
such refusal is counted and shown), and a target below what is pinned is refused before
anything changes. A guest with a direct-assigned device on a host without overcommit has all
its memory pinned (VFIO), so it cannot shrink at all.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput
from backends.models import JobKind, JobResult, Outcome, PhaseChanged
from backends.progress import Meter
from backends.requests import BalloonRequest
from backends.residency import check_balloon_target
from backends.sim.residency import PAGE_KIB
from backends.units import format_kib

if TYPE_CHECKING:
    from backends.sim.backend import SimBackend

PAGES_PER_S = 2048  # 4 GiB/s of balloon inflation or deflation
TICK_S = 0.25


class SimBalloon(Operation):
    def __init__(self, backend: SimBackend, request: BalloonRequest) -> None:
        vm = find_vm(backend.snapshot(), request.vm, request.host)
        target = request.memory_kib
        check_balloon_target(vm, target)
        res = vm.residency
        if target < vm.memory_kib and res is not None and res.pinned_kib is not None and target < res.pinned_kib:
            why = ("all its memory is pinned for DMA: it has direct-assigned devices and its host does not "
                   "overcommit, so VFIO pins every page" if res.locked else
                   f"{format_kib(res.pinned_kib)} is pinned by {res.dma_in_flight} DMA transfers in flight")
            raise BadInput(f"refusing to balloon {vm.name} to {format_kib(target)}: {why}",
                           hint=f"keep it at {format_kib(res.pinned_kib)} or more")
        self.backend, self.vm, self.target = backend, vm, target
        verb = "shrink" if target < vm.memory_kib else "grow"
        super().__init__(new_job(JobKind.BALLOON, (vm.name,), ("ballooning",),
                                 f"{verb} {vm.name} on {vm.host} from {format_kib(vm.memory_kib)} "
                                 f"to {format_kib(target)}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        clock, job, backend = self.backend.clock, self.job, self.backend
        started = clock.now()
        emit(PhaseChanged(job.id, "ballooning", job.description, at=started))
        meter = Meter(job.id, "pages", clock.now)
        shrink = self.target < self.vm.memory_kib
        total = abs(self.target - self.vm.memory_kib) // PAGE_KIB
        done = refused = 0
        while True:
            step = min(int(PAGES_PER_S * TICK_S), total - done)
            with backend.lock:
                vm = backend.state.vms[self.vm.name]
                guest = backend.residency.guests.get(vm.name) if backend.residency.tracked(vm) else None
                if guest is None:
                    moved = step
                elif shrink:
                    taken = guest.tracker.inflate(step)
                    moved, refused = taken.reclaimed, refused + taken.refused
                else:
                    moved = guest.tracker.deflate(step)
                done += moved
                memory = self.target if done >= total else vm.memory_kib + (-moved if shrink else moved) * PAGE_KIB
                backend.state.vms[vm.name] = replace(vm, memory_kib=memory)
            emit(meter.sample("ballooning", done, total - done, detail={"refused": refused}))
            if done >= total:
                break
            if moved < step:
                backend.refresh()
                return JobResult(job.id, Outcome.FAILED, f"stopped at {format_kib(memory)}: the rest of "
                                 f"{vm.name}'s memory is pinned for DMA ({refused} pages refused)",
                                 started, clock.now())
            if cancel.is_set():
                backend.refresh()
                return JobResult(job.id, Outcome.CANCELLED, f"cancelled; {vm.name} has {format_kib(memory)}",
                                 started, clock.now())
            clock.sleep(TICK_S)
        backend.refresh()
        note = f"; {refused} pinned pages were refused and others taken instead" if refused else ""
        return JobResult(job.id, Outcome.SUCCEEDED, f"{self.vm.name} has {format_kib(self.target)}{note}",
                         started, clock.now())
