"""S3 on libvirt: ballooning a running guest, refused when its memory is pinned.

``virDomainSetMemoryFlags(kib, VIR_DOMAIN_AFFECT_LIVE)`` sets the balloon target. For a guest
with direct-assigned devices or locked memory the pages would never be reclaimed (VFIO keeps
them pinned and QEMU inhibits the balloon), so a target below what is pinned is refused in
``prepare`` with that reason, and nothing is changed.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import libvirt

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput
from backends.libvirt.ops import job_connection, libvirt_reason
from backends.models import JobKind, JobResult, Outcome, PhaseChanged
from backends.requests import BalloonRequest
from backends.residency import check_balloon_target
from backends.units import format_kib

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend


class LibvirtBalloon(Operation):
    """``virDomainSetMemoryFlags(kib, VIR_DOMAIN_AFFECT_LIVE)``, refused for pinned guests."""

    def __init__(self, backend: LibvirtBackend, request: BalloonRequest) -> None:
        vm = find_vm(backend.snapshot(), request.vm, request.host)
        check_balloon_target(vm, request.memory_kib)
        res = vm.residency
        if res is not None and res.locked and request.memory_kib < (res.pinned_kib or 0):
            why = (f"it has {len(vm.devices)} direct-assigned PCI device{'s' if len(vm.devices) != 1 else ''}, "
                   "so VFIO pins all its memory and QEMU inhibits the balloon" if vm.devices
                   else "its memory is locked (<memoryBacking><locked/>)")
            raise BadInput(f"refusing to balloon {vm.name} to {format_kib(request.memory_kib)}: {why}; "
                           f"{format_kib(res.pinned_kib)} is pinned and none of it would be reclaimed",
                           hint=f"keep it at {format_kib(res.pinned_kib)} or more, or detach its devices first")
        self.uri = backend.connected(vm.host).uri
        self.backend, self.vm, self.target = backend, vm, request.memory_kib
        verb = "shrink" if self.target < vm.memory_kib else "grow"
        super().__init__(new_job(JobKind.BALLOON, (vm.name,), ("ballooning",),
                                 f"{verb} {vm.name} on {vm.host} from {format_kib(vm.memory_kib)} "
                                 f"to {format_kib(self.target)}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        started, job = time.time(), self.job
        emit(PhaseChanged(job.id, "ballooning", job.description, at=started))
        try:
            with job_connection(self.uri) as conn:
                dom = conn.lookupByUUIDString(self.vm.uuid)
                dom.setMemoryFlags(self.target, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                now = int(dom.info()[2])
        except libvirt.libvirtError as exc:
            return JobResult(job.id, Outcome.FAILED, libvirt_reason(exc), started, time.time())
        self.backend.refresh()
        # The guest's balloon driver gets there in its own time; say where it is now.
        return JobResult(job.id, Outcome.SUCCEEDED, f"balloon target {format_kib(self.target)}; "
                         f"the guest has {format_kib(now)} now", started, time.time())
