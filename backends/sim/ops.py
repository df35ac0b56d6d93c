"""Operations on the simulated datacenter; each runs on the injected clock."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from backends.base import Emit, Operation, find_vm, new_job
from backends.lifecycle import RESULT, allowed, check
from backends.models import JobKind, JobResult, Outcome, PhaseChanged, Progress
from backends.requests import LifecycleAction, LifecycleRequest

if TYPE_CHECKING:
    from backends.sim.backend import SimBackend

# Simulated seconds each action takes: a guest OS shutting down is not instant.
_DURATION = {LifecycleAction.START: 2.0, LifecycleAction.SHUTDOWN: 4.0, LifecycleAction.REBOOT: 5.0}
_STEPS = 10


class SimLifecycle(Operation):
    def __init__(self, backend: SimBackend, request: LifecycleRequest) -> None:
        vm = find_vm(backend.snapshot(), request.vm, request.host)
        check(vm, request.action)
        self.backend, self.vm, self.action = backend, vm, request.action
        super().__init__(new_job(JobKind.LIFECYCLE, (vm.name,), (request.action.value,),
                                 f"{request.action.value} {vm.name} on {vm.host}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        clock, job = self.backend.clock, self.job
        started = clock.now()
        emit(PhaseChanged(job.id, self.action.value, job.description, at=started))
        step = _DURATION.get(self.action, 0.5) / _STEPS
        for i in range(_STEPS):
            if cancel.is_set():
                return JobResult(job.id, Outcome.CANCELLED, "cancelled before the VM changed state",
                                 started, clock.now())
            clock.sleep(step)
            emit(Progress(job.id, self.action.value, i + 1, _STEPS - i - 1, "steps", at=clock.now()))
        with self.backend.lock:
            current = self.backend.state.vms[self.vm.name]
            if not allowed(current, self.action):
                return JobResult(job.id, Outcome.FAILED, f"{self.vm.name} became {current.state.value} meanwhile",
                                 started, clock.now())
            self.backend.state.vms[self.vm.name] = replace(current, state=RESULT[self.action])
        self.backend.refresh()
        return JobResult(job.id, Outcome.SUCCEEDED, "", started, clock.now())
