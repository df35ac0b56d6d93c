"""S7 on libvirt: a device operation the policy authority permitted, run as ``virNodeDeviceReset``.

libvirt has one device operation, reset, and it is not always local: it uses a function-level
reset when the device has one, else a power-management reset, else a *secondary bus reset*
of the bridge above it, which resets every device on that bus. libvirt's node device XML does
not say whether a device has FLR, so a reset is run only where the fallback cannot reach
another device: an SR-IOV virtual function (VFs must implement FLR), or a device alone on its
bus. libvirt also skips the reset for a device bound to vfio-pci (VFIO resets it itself when
a guest opens or releases it) and refuses one assigned to a running guest; both are refused
here with that reason. Power-state changes, config-space and option-ROM writes have no
libvirt API and are refused as unsupported.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import libvirt

from backends.base import Emit, Operation
from backends.errors import BadInput, Unsupported
from backends.libvirt.ops import job_connection, libvirt_reason, nodedev_name
from backends.models import Inventory, JobResult, Outcome, OwnerKind, PciDevice, PhaseChanged
from backends.policy.device_op import decide, device_op_job
from backends.requests import DeviceOpRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend


def bus_neighbours(inv: Inventory, device: PciDevice) -> list[str]:
    """Other functions on the device's bus: what a secondary bus reset would reset too."""
    bus = device.address.rsplit(":", 1)[0]
    return sorted(d.address for d in inv.devices_on(device.host)
                  if d.address != device.address and d.address.rsplit(":", 1)[0] == bus)


class LibvirtDeviceOp(Operation):
    def __init__(self, backend: LibvirtBackend, request: DeviceOpRequest) -> None:
        inv = backend.snapshot()
        device, decision = decide(inv, request, backend.policy_dir)
        run = decision.run or decision.op
        if run != "flr":
            raise Unsupported(f"libvirt has no API for {run}; the policy permits it but hvc cannot run it here",
                              hint="only flr (and bus-reset, translated to flr) run on libvirt")
        if device.owner.kind is OwnerKind.VM:
            raise BadInput(f"{device.address} on {device.host} is assigned to {device.owner.vm}; libvirt refuses "
                           "to reset a device a guest holds", hint="hand it to the host first (hvc handoff)")
        if device.driver == "vfio-pci":
            raise BadInput(f"{device.address} on {device.host} is bound to vfio-pci: libvirt skips the reset and "
                           "leaves it to VFIO, which resets it when a guest opens or releases it",
                           hint="nothing to do; hand it to the host driver to reset it through libvirt")
        neighbours = [] if device.is_vf else bus_neighbours(inv, device)
        if neighbours:
            raise BadInput(f"refusing flr on {device.address} ({device.host}): libvirt falls back to a secondary "
                           f"bus reset when a device lacks FLR, which would also reset {', '.join(neighbours)}, "
                           "and libvirt cannot tell whether it has FLR",
                           hint="reset it with the host's own tools if you know it has FLR")
        self.uri = backend.connected(device.host).uri
        self.backend, self.device, self.decision = backend, device, decision
        super().__init__(device_op_job(device, decision))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        started, job = time.time(), self.job
        emit(PhaseChanged(job.id, "flr", job.description, at=started))
        if cancel.is_set():
            return JobResult(job.id, Outcome.CANCELLED, "cancelled before anything was done", started, time.time())
        try:
            with job_connection(self.uri) as conn:
                conn.nodeDeviceLookupByName(nodedev_name(self.device)).reset()
        except libvirt.libvirtError as exc:
            return JobResult(job.id, Outcome.FAILED, libvirt_reason(exc), started, time.time())
        self.backend.refresh()
        return JobResult(job.id, Outcome.SUCCEEDED, "", started, time.time())
