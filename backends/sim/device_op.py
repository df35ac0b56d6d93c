"""S7 on the simulator: a device operation the policy authority permitted (or translated).

The simulator keeps each device's power state and reset count and applies the effect: a
function-level reset returns the device to D0 and ends every DMA transfer it had in flight
(its guest's pages are unpinned); power-state puts it in D3hot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backends.base import Emit, Operation
from backends.models import JobResult, Outcome, PhaseChanged
from backends.policy.device_op import decide, device_op_job
from backends.requests import DeviceOpRequest

if TYPE_CHECKING:
    from backends.sim.backend import SimBackend

# Simulated seconds each operation takes (a reset waits the 100 ms PCIe allows the device).
_DURATION = {"flr": 0.1, "power-state": 0.01}


@dataclass
class DeviceState:
    power: str = "D0"
    resets: int = 0
    last: str = ""  # the last operation run, e.g. "flr"


class SimDeviceOp(Operation):
    def __init__(self, backend: SimBackend, request: DeviceOpRequest) -> None:
        self.device, self.decision = decide(backend.snapshot(), request, backend.policy_dir)
        self.backend = backend
        super().__init__(device_op_job(self.device, self.decision))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        clock, job, op = self.backend.clock, self.job, self.decision.run or self.decision.op
        started = clock.now()
        emit(PhaseChanged(job.id, op, job.description, at=started))
        if cancel.is_set():
            return JobResult(job.id, Outcome.CANCELLED, "cancelled before anything was done", started, clock.now())
        clock.sleep(_DURATION.get(op, 0.05))
        key = (self.device.host, self.device.address)
        with self.backend.lock:
            state = self.backend.device_state.setdefault(key, DeviceState())
            state.last = op
            if op == "flr":
                state.resets += 1
                state.power = "D0"
                ended = self.backend.residency.end_device(self.device.owner.vm, self.device.address)
            else:
                state.power = "D3hot"
                ended = 0
        note = f"; {ended} DMA transfer{'s' if ended != 1 else ''} it had in flight ended" if ended else ""
        emit(PhaseChanged(job.id, op, f"{self.device.address} is {state.power} after {op}{note}", at=clock.now()))
        self.backend.refresh()
        return JobResult(job.id, Outcome.SUCCEEDED, "", started, clock.now())
