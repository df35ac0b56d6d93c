"""Handing a device from one running guest to another on the same libvirt host, or to the host.

Device ids:

- ``VM/TARGET`` (``hvc-lab-mover/sdb``): a disk of a running VM, handed to another running
  VM on the same host (a disk cannot go to "host").
- a PCI address (``0000:3b:00.0``) or node-device name (``pci_0000_3b_00_0``): a
  direct-assigned host device (``<hostdev type='pci'>`` or ``<interface type='hostdev'>``),
  handed to a running VM on its host or to ``host`` (the host's own driver).

Phases: **detaching** (``detachDeviceFlags`` with LIVE, plus CONFIG when the owner's
definition holds the device too), **draining** (until libvirt's DEVICE_REMOVED event names
the device's alias, or the live XML no longer lists it; bounded by ``DRAIN_TIMEOUT_S``: a
PCI unplug waits for the guest OS to acknowledge it, SCSI and USB unplugs do not),
**binding** / **releasing** for PCI devices (``nodeDeviceDetachFlags(…, "vfio")`` before a
VM gets it, ``nodeDeviceReAttach`` when the host gets it back), **attaching** (the same
device XML without its alias, guest address and boot order; a disk keeps its target name
when free on the receiver, else the next free one).

Nothing is lost on failure: if the receiver refuses the device, it goes back to its owner
(or, for a device taken from the host, back to the host's driver) and the result names both
reasons. A cancel before detaching changes nothing; a cancel after it puts the device back.
"""

from __future__ import annotations

import contextlib
import string
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import libvirt

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput, HostUnreachable, NotFound
from backends.libvirt.ops import libvirt_reason, open_job_connection
from backends.libvirt.parse import pci_address
from backends.models import Inventory, JobKind, JobResult, Outcome, OwnerKind, PciDevice, PhaseChanged, Vm
from backends.progress import Meter
from backends.requests import HandoffRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend
    from backends.libvirt.host import HostConnection

DRAIN_TIMEOUT_S = 30.0
XML_POLL_S = 1.0  # fallback check of the live XML while waiting for DEVICE_REMOVED
VFIO = "vfio-pci"
_BUS_PREFIX = {"scsi": "sd", "usb": "sd", "sata": "sd", "virtio": "vd", "ide": "hd", "xen": "xvd", "fdc": "fd"}


# --- XML helpers (pure; unit-tested) ------------------------------------------------------


def portable_device_xml(xml: str, *, target_dev: str | None = None, keep_address: bool = False) -> str:
    """A device element as another guest (or its owner again) can take it: without the alias
    libvirt gave it, its boot order, source ``index`` attributes, and (unless ``keep_address``)
    its guest address. A hostdev's *host* address (under ``<source>``) is kept."""
    el = ET.fromstring(xml)
    for parent in el.iter():
        for child in list(parent):
            if child.tag in ("alias", "boot") or (child.tag == "address" and parent is el and not keep_address):
                parent.remove(child)
    for node in el.iter():
        if node.tag in ("source", "backingStore"):
            node.attrib.pop("index", None)
    if target_dev is not None:
        target = el.find("target")
        if target is None:
            raise ValueError("the device has no <target> to rename")
        target.set("dev", target_dev)
    return ET.tostring(el, encoding="unicode")


def hostdev_xml(address: str, managed: bool = True) -> str:
    """A ``<hostdev>`` for the PCI device at ``dddd:bb:ss.f``."""
    try:
        domain, bus, rest = address.split(":")
        slot, function = rest.split(".")
        parts = [int(domain, 16), int(bus, 16), int(slot, 16), int(function, 16)]
    except ValueError as exc:
        raise ValueError(f"{address!r} is not a PCI address like 0000:3b:00.0") from exc
    return (f"<hostdev mode='subsystem' type='pci' managed='{'yes' if managed else 'no'}'><source>"
            f"<address domain='0x{parts[0]:04x}' bus='0x{parts[1]:02x}' slot='0x{parts[2]:02x}' "
            f"function='0x{parts[3]:x}'/></source></hostdev>")


def find_disk(domain_xml: str, target: str) -> ET.Element | None:
    root = ET.fromstring(domain_xml)
    return next((d for d in root.findall("devices/disk") if _target(d) == target), None)


def find_pci(domain_xml: str, address: str) -> ET.Element | None:
    """The ``<hostdev type='pci'>`` or ``<interface type='hostdev'>`` holding ``address``."""
    devices = ET.fromstring(domain_xml).find("devices")
    for el in devices if devices is not None else ():
        kind = (el.tag, el.get("type"))
        pci = kind in (("hostdev", "pci"), ("interface", "hostdev"))
        if pci and pci_address(el.find("source/address")) == address:
            return el
    return None


def disk_targets(*domain_xmls: str) -> set[str]:
    return {t for xml in domain_xmls for d in ET.fromstring(xml).findall("devices/disk") if (t := _target(d))}


def disk_files(domain_xml: str) -> set[str]:
    out = set()
    for d in ET.fromstring(domain_xml).findall("devices/disk"):
        src = d.find("source")
        if src is not None and (path := src.get("file") or src.get("dev")):
            out.add(path)
    return out


def dev_name(prefix: str, index: int) -> str:
    """libvirt's disk naming: sda … sdz, sdaa …"""
    letters = ""
    index += 1
    while index > 0:
        index, rem = divmod(index - 1, 26)
        letters = string.ascii_lowercase[rem] + letters
    return prefix + letters


def free_target(wanted: str, bus: str | None, used: set[str]) -> str:
    """``wanted`` if no disk of the receiver uses it, else the first free name of its family."""
    if wanted not in used:
        return wanted
    prefix = next((p for p in ("xvd", "sd", "vd", "hd", "fd") if wanted.startswith(p)), None)
    prefix = prefix or _BUS_PREFIX.get(bus or "", "sd")
    return next(name for i in range(18278) if (name := dev_name(prefix, i)) not in used)


def _target(disk: ET.Element) -> str | None:
    t = disk.find("target")
    return t.get("dev") if t is not None else None


def _alias(el: ET.Element) -> str | None:
    a = el.find("alias")
    return a.get("name") if a is not None else None


# --- the operation ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """What moves from where to where; ``owner`` None means the host's driver stack."""

    label: str  # "disk sdb" or "PCI device 0000:3b:00.0"
    owner: Vm | None
    receiver: Vm | None
    device_xml: str | None  # as the owner's live XML shows it (None: it is the host's)
    alias: str | None
    detach_flags: int
    attach_xml: str | None  # for the receiver (None: to the host)
    attach_flags: int
    restore_xml: str | None  # for the owner if the receiver refuses it
    pci: PciDevice | None = None
    pci_driver: str | None = None  # the host driver the device had when the job started


class LibvirtHandoff(Operation):
    def __init__(self, backend: LibvirtBackend, request: HandoffRequest) -> None:
        inv = backend.snapshot()
        self.backend = backend
        if "/" in request.device:
            self.plan, host = self._plan_disk(inv, request)
        else:
            self.plan, host = self._plan_pci(inv, request)
        self.host_name = host
        owner = self.plan.owner.name if self.plan.owner else "the host"
        receiver = self.plan.receiver.name if self.plan.receiver else "the host"
        targets = tuple(n for n in (request.device, self.plan.owner and self.plan.owner.name,
                                    self.plan.receiver and self.plan.receiver.name) if n)
        phases: tuple[str, ...] = ("detaching", "draining") if self.plan.owner else ()
        if self.plan.pci is not None:
            phases += ("binding", "attaching") if self.plan.receiver else ("releasing",)
        else:
            phases += ("attaching",)
        super().__init__(new_job(JobKind.HANDOFF, targets, phases,
                                 f"hand {self.plan.label} from {owner} to {receiver} on {host}"))

    # -- validation ----------------------------------------------------------------------

    def _connection(self, host: str) -> HostConnection:
        conn = self.backend.host_for(host)
        if conn is None or conn.connection is None:
            raise HostUnreachable(f"{host} is not connected", hint="wait for it to come back")
        return conn

    def _running_receiver(self, inv: Inventory, name: str, host: str, owner: str | None) -> Vm:
        here = [v for v in inv.vms if v.name == name and v.host == host]
        if not here:
            elsewhere = [v.host for v in inv.vms if v.name == name]
            if elsewhere:
                raise BadInput(f"{name} is on {', '.join(elsewhere)}, not {host}",
                               hint="a device moves only between VMs of one host; migrate one of them first")
            raise NotFound(f"no VM called {name!r} on {host}", hint="see `hvc inventory` for the VMs")
        receiver = find_vm(inv, name, host)
        if receiver.name == owner:
            raise BadInput(f"{name} already has it", hint="name another VM, or 'host'")
        if not receiver.active:
            raise BadInput(f"{name} is {receiver.state.value}; a handoff needs a running receiver",
                           hint=f"start it first (`hvc start {name}`)")
        return receiver

    def _live_xml(self, conn: Any, vm: Vm, inactive: bool = False) -> str:
        try:
            dom = conn.lookupByUUIDString(vm.uuid)
            return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))
        except libvirt.libvirtError as exc:
            raise NotFound(f"{vm.name} is gone from {vm.host}: {libvirt_reason(exc)}",
                           hint="refresh and try again") from exc

    def _config_xml(self, conn: Any, vm: Vm) -> str | None:
        """The persistent definition, or None for a transient guest (it has none to change)."""
        try:
            dom = conn.lookupByUUIDString(vm.uuid)
            return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) if dom.isPersistent() else None
        except libvirt.libvirtError as exc:
            raise NotFound(f"{vm.name} is gone from {vm.host}: {libvirt_reason(exc)}",
                           hint="refresh and try again") from exc

    def _plan_disk(self, inv: Inventory, request: HandoffRequest) -> tuple[_Plan, str]:
        vm_name, _, target = request.device.partition("/")
        if not vm_name or not target:
            raise BadInput(f"{request.device!r} is not a disk id", hint="write VM/TARGET, e.g. hvc-lab-mover/sdb")
        owner = find_vm(inv, vm_name, request.host)
        if not owner.active:
            raise BadInput(f"{owner.name} is {owner.state.value}: a handoff moves a disk between running VMs",
                           hint="start it, or edit its definition to move the disk")
        if request.to == "host":
            raise BadInput("a disk cannot be handed to the host", hint=f"name a running VM on {owner.host}")
        conn = self._connection(owner.host).connection
        live = self._live_xml(conn, owner)
        disk = find_disk(live, target)
        if disk is None:
            have = ", ".join(sorted(disk_targets(live))) or "none"
            raise NotFound(f"{owner.name} has no disk {target}", hint=f"its disks: {have}")
        if disk.get("device", "disk") not in ("disk", "lun", "cdrom"):
            raise BadInput(f"{request.device} is a {disk.get('device')}, not a disk")
        receiver = self._running_receiver(inv, request.to, owner.host, owner.name)
        receiver_live = self._live_xml(conn, receiver)
        receiver_config = self._config_xml(conn, receiver)
        source = disk.find("source")
        path = (source.get("file") or source.get("dev")) if source is not None else None
        if path and path in disk_files(receiver_live):
            raise BadInput(f"{receiver.name} already uses {path}", hint="detach it there first")
        device_xml = ET.tostring(disk, encoding="unicode")
        owner_config = self._config_xml(conn, owner)
        in_config = owner_config is not None and self._same_disk_in(owner_config, target, path)
        persist = in_config and receiver_config is not None
        target_el = disk.find("target")
        bus = target_el.get("bus") if target_el is not None else None
        new_target = free_target(target, bus, disk_targets(receiver_live, receiver_config or receiver_live))
        live_flag = int(libvirt.VIR_DOMAIN_AFFECT_LIVE)
        config_flag = int(libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        plan = _Plan(
            label=f"disk {target}" + (f" ({path})" if path else ""),
            owner=owner, receiver=receiver, device_xml=device_xml, alias=_alias(disk),
            detach_flags=live_flag | (config_flag if in_config else 0),
            attach_xml=portable_device_xml(device_xml, target_dev=new_target),
            attach_flags=live_flag | (config_flag if persist else 0),
            restore_xml=portable_device_xml(device_xml, keep_address=True),
        )
        return plan, owner.host

    @staticmethod
    def _same_disk_in(domain_xml: str, target: str, path: str | None) -> bool:
        disk = find_disk(domain_xml, target)
        if disk is None:
            return False
        src = disk.find("source")
        return path is None or (src is not None and (src.get("file") or src.get("dev")) == path)

    def _plan_pci(self, inv: Inventory, request: HandoffRequest) -> tuple[_Plan, str]:
        wanted = request.device.lower()
        found = [d for d in inv.devices if wanted in (d.address, (d.name or "").lower())
                 and (request.host is None or d.host == request.host)]
        if not found:
            raise NotFound(f"no PCI device {request.device}" + (f" on {request.host}" if request.host else ""),
                           hint="see `hvc inventory` for devices, or write VM/TARGET for a disk")
        if len(found) > 1:
            raise BadInput(f"{request.device} exists on {', '.join(d.host for d in found)}",
                           hint="say which host with --host")
        device = found[0]
        host = device.host
        conn = self._connection(host).connection
        live_flag, config_flag = int(libvirt.VIR_DOMAIN_AFFECT_LIVE), int(libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        owner: Vm | None = None
        device_xml: str | None = None
        alias: str | None = None
        detach_flags = 0
        in_config = False
        if device.owner.kind is OwnerKind.VM:
            owner = find_vm(inv, device.owner.vm or "", host)
            if not owner.active:
                raise BadInput(f"{device.address} belongs to {owner.name}, which is {owner.state.value}",
                               hint=f"remove it from {owner.name}'s definition (`virsh detach-device --config`) "
                                    f"to free it")
            el = find_pci(self._live_xml(conn, owner), device.address)
            if el is None:
                raise NotFound(f"{owner.name} does not hold {device.address} while it runs",
                               hint="refresh and try again")
            device_xml, alias = ET.tostring(el, encoding="unicode"), _alias(el)
            owner_config = self._config_xml(conn, owner)
            in_config = owner_config is not None and find_pci(owner_config, device.address) is not None
            detach_flags = live_flag | (config_flag if in_config else 0)
        receiver: Vm | None = None
        attach_xml: str | None = None
        attach_flags = 0
        if request.to == "host":
            if owner is None and device.owner.kind is OwnerKind.HOST:
                raise BadInput(f"{device.address} is already the host's (driver {device.driver})",
                               hint="name a running VM to give it to")
        else:
            receiver = self._running_receiver(inv, request.to, host, owner.name if owner else None)
            if device.iommu_group is None:
                raise BadInput(f"{device.address} is in no IOMMU group, so it cannot be assigned to a VM",
                               hint="enable the IOMMU (intel_iommu=on / amd_iommu=on) and reboot the host")
            if device.physfn is None and device.vfs:
                raise BadInput(f"{device.address} is an SR-IOV physical function with {len(device.vfs)} VFs",
                               hint="hand off one of its virtual functions instead")
            attach_xml = portable_device_xml(device_xml) if device_xml else hostdev_xml(device.address)
            persist = in_config and self._config_xml(conn, receiver) is not None
            attach_flags = live_flag | (config_flag if persist else 0)
        plan = _Plan(
            label=f"PCI device {device.address}", owner=owner, receiver=receiver, device_xml=device_xml,
            alias=alias, detach_flags=detach_flags, attach_xml=attach_xml, attach_flags=attach_flags,
            restore_xml=portable_device_xml(device_xml, keep_address=True) if device_xml else None,
            pci=device, pci_driver=device.driver,
        )
        return plan, host

    # -- running -------------------------------------------------------------------------

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        job = self.job
        started = time.time()
        steps = len(job.phases)
        meter = Meter(job.id, "steps", time.time)
        done = 0

        def result(outcome: Outcome, reason: str = "") -> JobResult:
            self.backend.refresh()
            return JobResult(job.id, outcome, reason, started, time.time())

        def step(phase: str, message: str) -> None:
            emit(PhaseChanged(job.id, phase, message, at=time.time()))

        def advance(phase: str, **detail: float | int | str) -> None:
            nonlocal done
            done += 1
            emit(meter.sample(phase, done, steps - done, detail=detail))

        if cancel.is_set():
            return result(Outcome.CANCELLED, "cancelled before anything changed")
        host = self.backend.host_for(self.host_name)
        if host is None:
            return result(Outcome.FAILED, f"{self.host_name} is gone from the inventory; nothing changed")
        try:
            conn = open_job_connection(host.uri)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"cannot reach {self.host_name}: {libvirt_reason(exc)}; nothing changed")
        try:
            return self._run(conn, host.uri, cancel, result, step, advance)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def _run(self, conn: Any, uri: str, cancel: threading.Event, result: Callable[..., JobResult],
             step: Callable[[str, str], None], advance: Callable[..., None]) -> JobResult:
        plan = self.plan
        try:
            owner_dom = conn.lookupByUUIDString(plan.owner.uuid) if plan.owner else None
            receiver_dom = conn.lookupByUUIDString(plan.receiver.uuid) if plan.receiver else None
            nodedev = conn.nodeDeviceLookupByName(_nodedev_name(plan.pci)) if plan.pci else None
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"{libvirt_reason(exc)}; nothing changed")
        owner_name = plan.owner.name if plan.owner else "the host"

        # detaching + draining
        if plan.owner is not None and owner_dom is not None:
            assert plan.device_xml is not None
            with self.backend.events(plan.owner.name, ("device_removed",), (uri,)) as tap:
                step("detaching", f"asking {owner_name} to release {plan.label}")
                t0 = time.monotonic()
                try:
                    owner_dom.detachDeviceFlags(plan.device_xml, plan.detach_flags)
                except libvirt.libvirtError as exc:
                    return result(Outcome.FAILED, f"{owner_name} would not release {plan.label}: "
                                                  f"{libvirt_reason(exc)}; it stays with {owner_name}")
                advance("detaching")
                step("draining", f"waiting for {owner_name} to let go of {plan.alias or plan.label} "
                                 f"(up to {DRAIN_TIMEOUT_S:.0f}s)")
                how = self._drained(tap, owner_dom, plan)
                waited = time.monotonic() - t0
            if how is None:
                return result(Outcome.FAILED, f"{owner_name} did not release {plan.label} within "
                                              f"{DRAIN_TIMEOUT_S:.0f}s (a PCI unplug needs the guest OS to "
                                              f"acknowledge it); it stays attached to {owner_name} with the "
                                              f"unplug request pending")
            advance("draining", released_after_ms=round(waited * 1000), seen_by=how)
        if cancel.is_set():
            back = self._give_back(conn, owner_dom, nodedev)
            return result(Outcome.CANCELLED, f"cancelled after {owner_name} released it; {back}")

        # binding / releasing (PCI only)
        if plan.pci is not None and nodedev is not None:
            if plan.receiver is None:
                step("releasing", f"returning {plan.pci.address} to the host's driver")
                driver = _driver(nodedev)
                if driver in (VFIO, None):
                    try:
                        nodedev.reAttach()
                    except libvirt.libvirtError as exc:
                        return result(Outcome.FAILED, f"the host's driver did not take {plan.pci.address} back: "
                                                      f"{libvirt_reason(exc)}; it is detached from {owner_name} "
                                                      f"and left with {driver or 'no driver'}")
                advance("releasing", driver=_driver(nodedev) or "none")
                return result(Outcome.SUCCEEDED, f"{plan.pci.address} is with the host's driver "
                                                 f"({_driver(nodedev) or 'none'})")
            step("binding", f"binding {plan.pci.address} to {VFIO} for {plan.receiver.name}")
            if _driver(nodedev) != VFIO:
                try:
                    nodedev.detachFlags("vfio", 0)
                except libvirt.libvirtError as exc:
                    back = self._give_back(conn, owner_dom, nodedev)
                    return result(Outcome.FAILED, f"binding {plan.pci.address} to {VFIO} failed: "
                                                  f"{libvirt_reason(exc)}; {back}")
            advance("binding", driver=VFIO)

        # attaching
        assert plan.receiver is not None and receiver_dom is not None and plan.attach_xml is not None
        step("attaching", f"giving {plan.label} to {plan.receiver.name}")
        try:
            receiver_dom.attachDeviceFlags(plan.attach_xml, plan.attach_flags)
        except libvirt.libvirtError as exc:
            why = libvirt_reason(exc)
            back = self._give_back(conn, owner_dom, nodedev)
            return result(Outcome.FAILED, f"{plan.receiver.name} refused {plan.label}: {why}; {back}")
        advance("attaching")
        where = ""
        if plan.pci is None:
            target = ET.fromstring(plan.attach_xml).find("target")
            where = f" as {target.get('dev')}" if target is not None else ""
        return result(Outcome.SUCCEEDED, f"{plan.receiver.name} has {plan.label}{where}")

    def _drained(self, tap: Any, owner_dom: Any, plan: _Plan) -> str | None:
        """How the release was seen ("event" or "xml"), or None after ``DRAIN_TIMEOUT_S``."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            event = tap.get(min(XML_POLL_S, left))
            if event is not None and event.args and (plan.alias is None or event.args[0] == plan.alias):
                return "event"
            if not self._still_there(owner_dom, plan):
                return "xml"
        return None

    def _still_there(self, owner_dom: Any, plan: _Plan) -> bool:
        try:
            live = owner_dom.XMLDesc(0)
        except libvirt.libvirtError:
            return False  # the owner is gone, and the device with it
        if plan.pci is not None:
            return find_pci(live, plan.pci.address) is not None
        assert plan.device_xml is not None
        return find_disk(live, _target(ET.fromstring(plan.device_xml)) or "") is not None

    def _give_back(self, conn: Any, owner_dom: Any, nodedev: Any) -> str:
        """Undo the detach: the device returns to its owner (or the host); says what happened."""
        plan = self.plan
        if plan.owner is not None and owner_dom is not None and plan.restore_xml is not None:
            try:
                owner_dom.attachDeviceFlags(plan.restore_xml, plan.detach_flags)
                return f"{plan.label} went back to {plan.owner.name}"
            except libvirt.libvirtError as exc:
                return (f"giving it back to {plan.owner.name} failed too: {libvirt_reason(exc)}; it is attached "
                        f"to neither VM (its XML: {plan.restore_xml})")
        if plan.pci is not None and nodedev is not None and plan.pci_driver not in (VFIO, None):
            try:
                if _driver(nodedev) == VFIO:
                    nodedev.reAttach()
                return f"{plan.pci.address} is back with the host's driver ({_driver(nodedev)})"
            except libvirt.libvirtError as exc:
                return f"returning it to the host's driver failed too: {libvirt_reason(exc)}; it stays on {VFIO}"
        return "nothing else changed"


def _nodedev_name(device: PciDevice | None) -> str:
    assert device is not None
    return device.name or "pci_" + device.address.replace(":", "_").replace(".", "_")


def _driver(nodedev: Any) -> str | None:
    try:
        name = ET.fromstring(nodedev.XMLDesc(0)).findtext("driver/name")
    except libvirt.libvirtError:
        return None
    return name.strip() if name else None
