"""Simulated S1: detach a device into a backing image on its VM, attach matching hardware to restore it.

Detach captures the device's registers into a ``DeviceImage`` on the VM (it answers the
guest's reads from then on), takes the device off the VM and leaves it on vfio-pci, free.
The image is part of the VM, so a migration carries it. Attach needs a free device on the
VM's current host that matches the image (vendor, product, class); the registers are written
back and the image is retired. Nothing changes until the last step; a cancel before it
leaves everything as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from backends import images
from backends.base import Emit, Operation, find_device, find_vm, new_job
from backends.errors import BadInput
from backends.models import (
    DeviceImage,
    JobKind,
    JobResult,
    Outcome,
    Owner,
    OwnerKind,
    PhaseChanged,
    Progress,
    Vm,
)
from backends.requests import AttachRequest, DetachRequest
from backends.sim.handoff_op import device_key

if TYPE_CHECKING:
    from backends.sim.backend import SimBackend

STEP_S = 0.05
CHUNK = 64  # register bytes captured or restored per step
VFIO = "vfio-pci"


def guest_address(vm: Vm, address: str) -> str:
    """Where the simulated guest sees a host device: slot 0x10 onwards, in the order it got them."""
    index = vm.devices.index(address) if address in vm.devices else len(vm.devices)
    return f"0000:00:{0x10 + index:02x}.0"




class _Steps:
    """Phase announcements and byte-count progress on the simulated clock."""

    def __init__(self, backend: SimBackend, job_id: str, emit: Emit, cancel: threading.Event) -> None:
        self.clock, self.job_id, self.emit, self.cancel = backend.clock, job_id, emit, cancel
        self.started = self.clock.now()

    def phase(self, name: str, message: str) -> None:
        self.emit(PhaseChanged(self.job_id, name, message, at=self.clock.now()))

    def bytes(self, name: str, total: int) -> bool:
        """Move ``total`` register bytes in chunks; False when cancelled first."""
        done = 0
        while done < total or total == 0:
            if self.cancel.is_set():
                return False
            self.clock.sleep(STEP_S)
            done = min(total, done + CHUNK)
            self.emit(Progress(self.job_id, name, done, total - done, "bytes", at=self.clock.now()))
            if total == 0:
                break
        return True

    def pause(self, name: str) -> bool:
        if self.cancel.is_set():
            return False
        self.clock.sleep(STEP_S * 2)
        self.emit(Progress(self.job_id, name, 1, 0, "steps", at=self.clock.now()))
        return True

    def result(self, outcome: Outcome, reason: str) -> JobResult:
        return JobResult(self.job_id, outcome, reason, self.started, self.clock.now())


class SimDetach(Operation):
    """Take ``request.device`` off ``request.vm``, leaving a backing image on the VM."""

    def __init__(self, backend: SimBackend, request: DetachRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm, request.host)
        device = find_device(inv, request.device, vm.host)
        if device.owner.kind is not OwnerKind.VM or device.owner.vm != vm.name:
            raise BadInput(f"{device.address} on {vm.host} is not {vm.name}'s (owner {device.owner})",
                           hint=f"{vm.name} holds: {', '.join(vm.devices) or 'no devices'}")
        self.backend, self.vm, self.device = backend, vm, device
        super().__init__(new_job(JobKind.DETACH, (device_key(vm.host, device.address), vm.name),
                                 ("capturing", "detaching", "releasing"),
                                 f"detach {device.address} from {vm.name} on {vm.host} into a backing image"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        vm, dev = self.vm, self.device
        steps = _Steps(self.backend, self.job.id, emit, cancel)
        registers = images.synthetic_registers(dev)
        image = images.capture(dev, guest_address(vm, dev.address), registers, steps.clock.now())
        steps.phase("capturing", f"reading {len(registers)} bytes of {dev.address}'s registers into an image")
        if not steps.bytes("capturing", len(registers)):
            return steps.result(Outcome.CANCELLED, "cancelled while capturing; nothing changed")
        steps.phase("detaching", f"{vm.name}'s reads of {image.address} now go to the image; removing the device")
        if not steps.pause("detaching"):
            return steps.result(Outcome.CANCELLED, "cancelled before the device was removed; nothing changed")
        steps.phase("releasing", f"{dev.address} stays on {VFIO}, free for any VM on {vm.host}")
        problem = self._apply(image)
        if problem:
            return steps.result(Outcome.FAILED, f"{problem}; nothing changed")
        return steps.result(Outcome.SUCCEEDED, f"{dev.address} left {vm.name}; {vm.name} is backed by an image "
                                               f"of {images.describe_image(image)} at {image.address}")

    def _apply(self, image: DeviceImage) -> str:
        state, dev = self.backend.state, self.device
        with self.backend.lock:
            current = state.devices.get((dev.host, dev.address))
            vm = state.vms.get(self.vm.name)
            if current is None or current.owner != dev.owner or vm is None or vm.host != dev.host:
                return f"{dev.address} or {self.vm.name} changed meanwhile"
            state.devices[(dev.host, dev.address)] = replace(current, owner=Owner(OwnerKind.VFIO, driver=VFIO),
                                                             driver=VFIO)
            state.vms[vm.name] = replace(vm, devices=tuple(a for a in vm.devices if a != dev.address),
                                         device_images=(*vm.device_images, image))
        self.backend.refresh()
        return ""


class SimAttach(Operation):
    """Give ``request.vm`` the free device ``request.device`` on its host, restoring it from its image."""

    def __init__(self, backend: SimBackend, request: AttachRequest) -> None:
        inv = backend.snapshot()
        vm, device, image = images.check_attach(inv, request)
        self.backend, self.vm, self.device, self.image = backend, vm, device, image
        super().__init__(new_job(JobKind.ATTACH, (device_key(vm.host, device.address), vm.name),
                                 ("binding", "attaching", "restoring"),
                                 f"attach {device.address} to {vm.name} on {vm.host}, restoring {image.address}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        vm, dev, image = self.vm, self.device, self.image
        steps = _Steps(self.backend, self.job.id, emit, cancel)
        stages: tuple[tuple[str, str, Callable[[], bool]], ...] = (
            ("binding", f"binding {dev.address} to {VFIO} (was {dev.driver or 'unbound'})",
             lambda: steps.pause("binding")),
            ("attaching", f"giving {dev.address} to {vm.name} at {image.address}", lambda: steps.pause("attaching")),
            ("restoring", f"writing the image's {len(image.registers) // 2} register bytes back; the hardware "
                          f"answers from now on", lambda: steps.bytes("restoring", len(image.registers) // 2)),
        )
        for name, message, work in stages:
            steps.phase(name, message)
            if not work():
                return steps.result(Outcome.CANCELLED, f"cancelled while {name}; {dev.address} stays with the "
                                                       f"host and {vm.name} keeps its image")
        problem = self._apply()
        if problem:
            return steps.result(Outcome.FAILED, f"{problem}; nothing changed")
        return steps.result(Outcome.SUCCEEDED, f"{vm.name} has {dev.address} at {image.address}, restored from "
                                               f"the image captured on {image.source_host}")

    def _apply(self) -> str:
        state, dev = self.backend.state, self.device
        with self.backend.lock:
            current = state.devices.get((dev.host, dev.address))
            vm = state.vms.get(self.vm.name)
            if current is None or current.owner.kind is OwnerKind.VM:
                return f"{dev.address} was taken meanwhile"
            if vm is None or vm.host != dev.host or self.image not in vm.device_images:
                return f"{self.vm.name} moved or lost its image meanwhile"
            state.devices[(dev.host, dev.address)] = replace(
                current, owner=Owner(OwnerKind.VM, vm=vm.name, driver=VFIO), driver=VFIO)
            state.vms[vm.name] = replace(vm, devices=(*vm.devices, dev.address),
                                         device_images=tuple(i for i in vm.device_images if i != self.image))
        self.backend.refresh()
        return ""
