"""S1 on libvirt: detach a direct-assigned PCI device into a backing image kept in the domain's metadata.

The image lives in ``<metadata>`` under ``backends.images.NS`` (``setMetadata`` with LIVE and,
for a persistent guest, CONFIG), so it migrates with the domain XML. Detach phases:
**capturing** (the device's configuration space from sysfs when hvc runs on that host, else
the identity the node device reports), **imaging** (write the image), **detaching**
(``detachDeviceFlags``), **draining** (until the live XML no longer lists it). If libvirt
refuses the detach, the image is taken out again: the device stays with the VM.

Attach phases: **binding** (``nodeDeviceDetachFlags(…, "vfio")`` when the device is not on
vfio-pci yet), **attaching** (a ``<hostdev>`` at the guest address the image stands for),
**restoring** (the image is retired: the hardware answers from now on). A refused attach
gives the device back to the host's driver and keeps the image.
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from backends import images
from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput, NotFound
from backends.libvirt.handoff.device_xml import find_pci, hostdev_xml
from backends.libvirt.ops import bound_driver, libvirt_reason, nodedev_name, open_job_connection
from backends.libvirt.parse import pci_address
from backends.models import (
    DeviceImage,
    JobKind,
    JobResult,
    Outcome,
    Owner,
    OwnerKind,
    PciDevice,
    PhaseChanged,
    Vm,
)
from backends.requests import AttachRequest, DetachRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend

DRAIN_TIMEOUT_S = 30.0
POLL_S = 0.25
SYSFS = Path("/sys/bus/pci/devices")
VFIO = "vfio-pci"


def read_images(dom: Any) -> tuple[DeviceImage, ...]:
    """The images in a domain's metadata (none when it has no hvc metadata)."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, images.NS, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return ()
        raise
    return images.from_xml(text)


def write_images(dom: Any, kept: tuple[DeviceImage, ...]) -> None:
    """Replace the domain's images (live, and in its definition when it has one); none removes the element."""
    flags = (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0) | (
        libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0)
    if kept:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, images.to_xml(kept), images.PREFIX, images.NS, flags)
    else:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, images.NS, flags)


def local_config_space(uri: str, address: str) -> bytes | None:
    """The device's configuration space when hvc runs on the host of ``uri`` and may read it."""
    if "//" in uri and uri.split("//", 1)[1].split("/", 1)[0] not in ("", "localhost"):
        return None  # a remote host: its sysfs is not ours
    path = SYSFS / address / "config"
    try:
        return path.read_bytes()[: images.CONFIG_BYTES]
    except OSError:
        return None








class _Job:
    """What both operations share: a job connection, phase events and results."""

    job: Any
    backend: LibvirtBackend
    vm: Vm

    def _start(self, emit: Emit, body: Callable[[Any, Any, Callable[[str, str], None]], JobResult]) -> JobResult:
        started = time.time()

        def step(phase: str, message: str) -> None:
            emit(PhaseChanged(self.job.id, phase, message, at=time.time()))

        host = self.backend.host_for(self.vm.host)
        if host is None:
            return self._done(Outcome.FAILED, f"{self.vm.host} is gone from the inventory; nothing changed", started)
        try:
            conn = open_job_connection(host.uri)
        except libvirt.libvirtError as exc:
            return self._done(Outcome.FAILED, f"cannot reach {self.vm.host}: {libvirt_reason(exc)}; nothing changed",
                              started)
        try:
            dom = conn.lookupByUUIDString(self.vm.uuid)
            result = body(conn, dom, step)
            return self._done(result.outcome, result.reason, started)
        except libvirt.libvirtError as exc:
            return self._done(Outcome.FAILED, f"{libvirt_reason(exc)}; nothing changed", started)
        finally:
            host.forget(self.vm.uuid)
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def _done(self, outcome: Outcome, reason: str, started: float) -> JobResult:
        self.backend.refresh()
        return JobResult(self.job.id, outcome, reason, started, time.time())

    def _result(self, outcome: Outcome, reason: str) -> JobResult:
        return JobResult(self.job.id, outcome, reason)


class LibvirtDetach(_Job, Operation):
    """Remove a direct-assigned PCI device from a VM, leaving an image of it in the VM's metadata."""

    def __init__(self, backend: LibvirtBackend, request: DetachRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm, request.host)
        wanted = request.device.lower()
        device = next((d for d in inv.devices_on(vm.host) if wanted in (d.address, (d.name or "").lower())), None)
        address = device.address if device else wanted
        if address not in vm.devices:
            raise BadInput(f"{vm.name} does not hold {request.device}",
                           hint=f"it holds: {', '.join(vm.devices) or 'no PCI devices'}")
        if device is None:  # assigned, but the host does not list it: the image keeps its address only
            device = PciDevice(address, vm.host, None, None, None, None, None, Owner(OwnerKind.VM, vm=vm.name))
        conn = backend.connected(vm.host).connection
        try:
            dom = conn.lookupByUUIDString(vm.uuid)
            xml = dom.XMLDesc(0 if vm.active else libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError as exc:
            raise NotFound(f"{vm.name} is gone from {vm.host}: {libvirt_reason(exc)}", hint="refresh") from exc
        el = find_pci(xml, device.address)
        if el is None:
            raise NotFound(f"{vm.name}'s definition does not hold {device.address}", hint="refresh and try again")
        self.backend, self.vm, self.device = backend, vm, device
        self.device_xml = ET.tostring(el, encoding="unicode")
        self.guest_address = pci_address(el.find("address")) or device.address
        super().__init__(new_job(JobKind.DETACH, (device.address, vm.name),
                                 ("capturing", "imaging", "detaching", "draining"),
                                 f"detach {device.address} from {vm.name} on {vm.host} into a backing image"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        if cancel.is_set():
            return self._done(Outcome.CANCELLED, "cancelled before anything changed", time.time())
        return self._start(emit, self._detach)

    def _detach(self, conn: Any, dom: Any, step: Callable[[str, str], None]) -> JobResult:
        vm, dev = self.vm, self.device
        host = self.backend.host_for(vm.host)
        step("capturing", f"reading {dev.address}'s configuration space")
        registers = local_config_space(host.uri if host else "", dev.address)
        how = f"{len(registers)} register bytes" if registers else "identity only (config space not readable here)"
        image = images.capture(dev, self.guest_address, registers or b"", time.time())
        before = read_images(dom)
        step("imaging", f"writing an image of {images.describe(dev)} ({how}) into {vm.name}'s metadata")
        write_images(dom, (*before, image))
        live = libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0
        config = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() and find_pci(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), dev.address) is not None else 0
        step("detaching", f"asking {vm.name} to release {dev.address}")
        try:
            dom.detachDeviceFlags(self.device_xml, live | config)
        except libvirt.libvirtError as exc:
            why = libvirt_reason(exc)
            try:
                write_images(dom, before)
                back = "the image was taken out again"
            except libvirt.libvirtError as undo:
                back = f"taking the image out failed too ({libvirt_reason(undo)}): it stays in the metadata"
            return self._result(Outcome.FAILED, f"{vm.name} would not release {dev.address}: {why}; it stays "
                                                f"with {vm.name}; {back}")
        step("draining", f"waiting for {vm.name} to let go of {dev.address} (up to {DRAIN_TIMEOUT_S:.0f}s)")
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while live and find_pci(dom.XMLDesc(0), dev.address) is not None:
            if time.monotonic() > deadline:
                return self._result(Outcome.FAILED, f"{vm.name} has not released {dev.address} within "
                                                    f"{DRAIN_TIMEOUT_S:.0f}s (the guest OS must acknowledge a PCI "
                                                    "unplug); the unplug stays pending and the image is in place")
            time.sleep(POLL_S)
        return self._result(Outcome.SUCCEEDED, f"{dev.address} left {vm.name}; {vm.name} is backed by an image of "
                                               f"{images.describe(dev)} at {image.address} ({how})")


class LibvirtAttach(_Job, Operation):
    """Attach PCI hardware matching one of a VM's images; the image is retired once it is attached."""

    def __init__(self, backend: LibvirtBackend, request: AttachRequest) -> None:
        inv = backend.snapshot()
        vm, device, image = images.check_attach(inv, request)
        if device.iommu_group is None:
            raise BadInput(f"{device.address} is in no IOMMU group, so it cannot be assigned to a VM",
                           hint="enable the IOMMU (intel_iommu=on / amd_iommu=on) and reboot the host")
        self.backend, self.vm, self.device, self.image = backend, vm, device, image
        super().__init__(new_job(JobKind.ATTACH, (device.address, vm.name), ("binding", "attaching", "restoring"),
                                 f"attach {device.address} to {vm.name} on {vm.host}, restoring {image.address}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        if cancel.is_set():
            return self._done(Outcome.CANCELLED, "cancelled before anything changed", time.time())
        return self._start(emit, self._attach)

    def _attach(self, conn: Any, dom: Any, step: Callable[[str, str], None]) -> JobResult:
        vm, dev, image = self.vm, self.device, self.image
        nodedev = conn.nodeDeviceLookupByName(nodedev_name(dev))
        host_driver = bound_driver(nodedev)
        step("binding", f"binding {dev.address} to {VFIO} (now {host_driver or 'unbound'})")
        if host_driver != VFIO:
            try:
                nodedev.detachFlags("vfio", 0)
            except libvirt.libvirtError as exc:
                return self._result(Outcome.FAILED, f"binding {dev.address} to {VFIO} failed: {libvirt_reason(exc)}; "
                                                    f"it stays with {host_driver or 'no driver'}; {vm.name} keeps "
                                                    "its image")
        step("attaching", f"giving {dev.address} to {vm.name} at {image.address}")
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0)
        try:
            dom.attachDeviceFlags(hostdev_at(dev.address, image.address), flags)
        except libvirt.libvirtError as exc:
            back = ""
            if host_driver not in (VFIO, None):
                try:
                    nodedev.reAttach()
                    back = f"; {dev.address} is back with {host_driver}"
                except libvirt.libvirtError as undo:
                    back = f"; returning it to {host_driver} failed too ({libvirt_reason(undo)}): it stays on {VFIO}"
            return self._result(Outcome.FAILED, f"{vm.name} refused {dev.address}: {libvirt_reason(exc)}{back}; "
                                                f"{vm.name} keeps its image")
        step("restoring", f"the hardware answers for {image.address} now; retiring the image")
        try:
            write_images(dom, tuple(i for i in read_images(dom) if i != image))
        except libvirt.libvirtError as exc:
            return self._result(Outcome.FAILED, f"{vm.name} has {dev.address}, but its image could not be retired: "
                                                f"{libvirt_reason(exc)}; remove it with `virsh metadata`")
        return self._result(Outcome.SUCCEEDED, f"{vm.name} has {dev.address} at {image.address}, restored in place "
                                               f"of the image captured on {image.source_host}")


def hostdev_at(address: str, guest_address: str) -> str:
    """A managed ``<hostdev>`` for host device ``address``, seen by the guest at ``guest_address``."""
    el = ET.fromstring(hostdev_xml(address))
    try:
        domain, bus, rest = guest_address.split(":")
        slot, function = rest.split(".")
    except ValueError:
        return hostdev_xml(address)
    ET.SubElement(el, "address", {"type": "pci", "domain": f"0x{int(domain, 16):04x}", "bus": f"0x{int(bus, 16):02x}",
                                  "slot": f"0x{int(slot, 16):02x}", "function": f"0x{int(function, 16):x}"})
    return ET.tostring(el, encoding="unicode")
