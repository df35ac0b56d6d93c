"""Simulated S8 service move: release the VF, live-migrate the service's VM, bind the identifier again.

1. release: the VF carrying the identifier drains its in-flight storage requests and goes back
   to its PF's pool (an S4 handoff to the host, ``SimHandoff.drain``); the identifier is unbound.
2. handoff/precopy/switchover: the VM moves with the simulator's live migration (``SimMigrate``),
   whose events are re-labelled with this job's id.
3. bind: a free VF on the destination takes the same identifier and is given to the VM.

Until switchover a failure or cancel puts the identifier back on the source VF, with the VM
still there: the service is where it was. After switchover the move only binds, and a failure
there says plainly that the service runs on the destination without its identifier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from backends.base import Emit, Operation, new_job
from backends.errors import BadInput
from backends.models import (
    JobEvent,
    JobKind,
    JobResult,
    Outcome,
    Owner,
    OwnerKind,
    PhaseChanged,
    Progress,
)
from backends.requests import HandoffRequest, MigrateRequest, ServiceMoveRequest
from backends.services import free_vfs, resolve, service_vm
from backends.sim.handoff_op import SimHandoff, device_key
from backends.sim.migrate import SimMigrate

if TYPE_CHECKING:
    from backends.sim.backend import SimBackend

BIND_S = 0.4  # set the MAC on the VF through its PF, bind vfio-pci, attach it to the guest
BIND_STEPS = 4


class SimServiceMove(Operation):
    def __init__(self, backend: SimBackend, request: ServiceMoveRequest) -> None:
        inv = backend.snapshot()
        service, dest, vf = resolve(inv, request.service, request.to_host)
        vm = service_vm(inv, service)
        assert vm is not None and service.vf is not None  # resolve checked both
        self.backend, self.service, self.dest, self.dest_vf = backend, service, dest.name, vf.address
        self.source, self.source_vf = service.host, service.vf
        others = tuple(a for a in vm.devices if a != service.vf)
        phases = ("release", *(("handoff",) if others else ()), "precopy", "switchover", "bind")
        targets = (vm.name, vm.host, dest.name, device_key(vm.host, service.vf), device_key(dest.name, vf.address),
                   *(device_key(vm.host, a) for a in others), f"service/{service.name}")
        super().__init__(new_job(JobKind.SERVICE_MOVE, targets, phases,
                                 f"move {service.name} ({service.identifier}) {vm.host} → {dest.name}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        clock, job, svc = self.backend.clock, self.job, self.service
        started = clock.now()

        def result(outcome: Outcome, reason: str) -> JobResult:
            return JobResult(job.id, outcome, reason, started, clock.now())

        emit(PhaseChanged(job.id, "release", f"draining VF {self.source_vf} on {self.source}, then removing "
                                             f"{svc.identifier} from it", at=clock.now()))
        try:
            release = SimHandoff(self.backend, HandoffRequest(self.source_vf, "host", host=self.source))
        except BadInput as exc:
            return result(Outcome.FAILED, f"cannot release VF {self.source_vf}: {exc.message}; nothing changed")
        released = release.drain(emit, cancel, job_id=job.id, phase="release")
        if released.outcome is not Outcome.SUCCEEDED:
            return result(released.outcome, f"{released.reason}; {svc.identifier} stays on VF {self.source_vf} "
                                            f"on {self.source}")
        with self.backend.lock:
            self.backend.state.services[svc.name] = replace(svc, vf=None)
        self.backend.refresh()
        emit(PhaseChanged(job.id, "release", f"VF {self.source_vf} is back in its PF's pool; {svc.identifier} "
                                             "is unbound", at=clock.now()))

        def relabel(event: JobEvent) -> None:
            emit(replace(event, job_id=job.id))

        try:
            moved = SimMigrate(self.backend, MigrateRequest(svc.vm, self.dest)).run(relabel, cancel)
        except BadInput as exc:
            moved = result(Outcome.FAILED, f"cannot migrate {svc.vm}: {exc.message}")
        if moved.outcome is not Outcome.SUCCEEDED:
            self._bind(self.source, self.source_vf)
            return result(moved.outcome, f"{moved.reason}; {svc.identifier} restored on VF {self.source_vf} "
                                         f"on {self.source}")
        return self._bind_on_destination(emit, result)

    def _bind_on_destination(self, emit: Emit, result: Callable[[Outcome, str], JobResult]) -> JobResult:
        clock, job, svc = self.backend.clock, self.job, self.service
        vf = self.dest_vf
        if vf not in {d.address for d in free_vfs(self.backend.snapshot(), self.dest)}:
            spare = free_vfs(self.backend.snapshot(), self.dest)
            if not spare:
                return result(Outcome.FAILED, f"{svc.vm} now runs on {self.dest} but no VF there is free any more: "
                                              f"{svc.identifier} is unbound; free a VF on {self.dest} and move "
                                              "the service again")
            vf = spare[0].address
        emit(PhaseChanged(job.id, "bind", f"setting {svc.identifier} on VF {vf} on {self.dest} and giving it to "
                                          f"{svc.vm}", at=clock.now()))
        for i in range(BIND_STEPS):
            clock.sleep(BIND_S / BIND_STEPS)
            emit(Progress(job.id, "bind", i + 1, BIND_STEPS - i - 1, "steps", at=clock.now()))
        self._bind(self.dest, vf)
        return result(Outcome.SUCCEEDED, f"{svc.name} runs on {self.dest} with {svc.identifier} on VF {vf}; "
                                         f"VF {self.source_vf} on {self.source} is free")

    def _bind(self, host: str, address: str) -> None:
        """Give VF ``address`` on ``host`` to the service's VM and record the identifier on it."""
        state, svc = self.backend.state, self.service
        with self.backend.lock:
            device = state.devices[(host, address)]
            state.devices[(host, address)] = replace(device, owner=Owner(OwnerKind.VM, vm=svc.vm, driver="vfio-pci"),
                                                     driver="vfio-pci")
            vm = state.vms[svc.vm]
            if address not in vm.devices:
                state.vms[svc.vm] = replace(vm, devices=(*vm.devices, address))
            state.services[svc.name] = replace(svc, host=host, vf=address)
        self.backend.refresh()
