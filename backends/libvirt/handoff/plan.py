"""Planning a handoff: checking the device, its owner and the receiver, and what to detach and attach."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import libvirt

from backends.base import find_vm
from backends.errors import BadInput, NotFound
from backends.libvirt.handoff.device_xml import (
    alias_of,
    disk_targets,
    find_disk,
    find_pci,
    free_target,
    hostdev_xml,
    portable_device_xml,
)
from backends.libvirt.handoff.host_disk import host_pool_of
from backends.libvirt.migrate import disk_sources
from backends.libvirt.ops import libvirt_reason
from backends.models import Inventory, OwnerKind, PciDevice, Vm
from backends.requests import HandoffRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend


@dataclass(frozen=True, slots=True)
class Plan:
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
    volume_path: str | None = None  # a disk's file or block source, when the host gives or takes it
    pool: str | None = None  # the host's storage pool holding that volume



def _running_receiver(inv: Inventory, name: str, host: str, owner: str | None) -> Vm:
    """The running VM ``name`` on ``host`` that is to receive the device."""
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


def _live_xml(conn: Any, vm: Vm) -> str:
    """The running guest's live definition."""
    try:
        dom = conn.lookupByUUIDString(vm.uuid)
        return str(dom.XMLDesc(0))
    except libvirt.libvirtError as exc:
        raise NotFound(f"{vm.name} is gone from {vm.host}: {libvirt_reason(exc)}",
                       hint="refresh and try again") from exc


def _config_xml(conn: Any, vm: Vm) -> str | None:
    """The persistent definition, or None for a transient guest (it has none to change)."""
    try:
        dom = conn.lookupByUUIDString(vm.uuid)
        return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) if dom.isPersistent() else None
    except libvirt.libvirtError as exc:
        raise NotFound(f"{vm.name} is gone from {vm.host}: {libvirt_reason(exc)}",
                       hint="refresh and try again") from exc


def plan_disk(backend: LibvirtBackend, inv: Inventory, request: HandoffRequest) -> tuple[Plan, str]:
    """The plan for handing disk ``VM/TARGET`` to another running VM, and the host it happens on."""
    vm_name, _, target = request.device.partition("/")
    if not vm_name or not target:
        raise BadInput(f"{request.device!r} is not a disk id", hint="write VM/TARGET, e.g. hvc-lab-mover/sdb")
    owner = find_vm(inv, vm_name, request.host)
    if not owner.active:
        raise BadInput(f"{owner.name} is {owner.state.value}: a handoff moves a disk between running VMs",
                       hint="start it, or edit its definition to move the disk")
    conn = backend.connected(owner.host).connection
    live = _live_xml(conn, owner)
    disk = find_disk(live, target)
    if disk is None:
        have = ", ".join(sorted(disk_targets(live))) or "none"
        raise NotFound(f"{owner.name} has no disk {target}", hint=f"its disks: {have}")
    if disk.get("device", "disk") not in ("disk", "lun", "cdrom"):
        raise BadInput(f"{request.device} is a {disk.get('device')}, not a disk")
    if request.to == "host":
        return _disk_to_host_plan(conn, owner, disk, target), owner.host
    receiver = _running_receiver(inv, request.to, owner.host, owner.name)
    receiver_live = _live_xml(conn, receiver)
    receiver_config = _config_xml(conn, receiver)
    source = disk.find("source")
    path = (source.get("file") or source.get("dev")) if source is not None else None
    if path and any(used == path for _, used in disk_sources(receiver_live)):
        raise BadInput(f"{receiver.name} already uses {path}", hint="detach it there first")
    device_xml = ET.tostring(disk, encoding="unicode")
    owner_config = _config_xml(conn, owner)
    in_config = owner_config is not None and _same_disk_in(owner_config, target, path)
    persist = in_config and receiver_config is not None
    target_el = disk.find("target")
    bus = target_el.get("bus") if target_el is not None else None
    new_target = free_target(target, bus, disk_targets(receiver_live, receiver_config or receiver_live))
    live_flag = int(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    config_flag = int(libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    plan = Plan(
        label=f"disk {target}" + (f" ({path})" if path else ""),
        owner=owner, receiver=receiver, device_xml=device_xml, alias=alias_of(disk),
        detach_flags=live_flag | (config_flag if in_config else 0),
        attach_xml=portable_device_xml(device_xml, target_dev=new_target),
        attach_flags=live_flag | (config_flag if persist else 0),
        restore_xml=portable_device_xml(device_xml, keep_address=True),
    )
    return plan, owner.host


def _disk_to_host_plan(conn: Any, owner: Vm, disk: ET.Element, target: str) -> Plan:
    """S2, VM → host: detach the disk from ``owner``; the host's pool is to show the volume again."""
    source = disk.find("source")
    path = (source.get("file") or source.get("dev")) if source is not None else None
    pool = host_pool_of(conn, path, owner.name, owner.host)
    device_xml = ET.tostring(disk, encoding="unicode")
    owner_config = _config_xml(conn, owner)
    in_config = owner_config is not None and _same_disk_in(owner_config, target, path)
    live_flag, config_flag = int(libvirt.VIR_DOMAIN_AFFECT_LIVE), int(libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    return Plan(label=f"disk {target} ({path})", owner=owner, receiver=None, device_xml=device_xml,
                alias=alias_of(disk), detach_flags=live_flag | (config_flag if in_config else 0), attach_xml=None,
                attach_flags=0, restore_xml=portable_device_xml(device_xml, keep_address=True),
                volume_path=path, pool=pool)


def _same_disk_in(domain_xml: str, target: str, path: str | None) -> bool:
    """Does ``domain_xml`` hold the disk ``target`` with the same source ``path``?"""
    disk = find_disk(domain_xml, target)
    if disk is None:
        return False
    src = disk.find("source")
    return path is None or (src is not None and (src.get("file") or src.get("dev")) == path)


def plan_pci(backend: LibvirtBackend, inv: Inventory, request: HandoffRequest) -> tuple[Plan, str]:
    """The plan for handing a PCI device to a running VM or to the host, and the host it is on."""
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
    conn = backend.connected(host).connection
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
        el = find_pci(_live_xml(conn, owner), device.address)
        if el is None:
            raise NotFound(f"{owner.name} does not hold {device.address} while it runs",
                           hint="refresh and try again")
        device_xml, alias = ET.tostring(el, encoding="unicode"), alias_of(el)
        owner_config = _config_xml(conn, owner)
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
        receiver = _running_receiver(inv, request.to, host, owner.name if owner else None)
        if device.iommu_group is None:
            raise BadInput(f"{device.address} is in no IOMMU group, so it cannot be assigned to a VM",
                           hint="enable the IOMMU (intel_iommu=on / amd_iommu=on) and reboot the host")
        if device.physfn is None and device.vfs:
            raise BadInput(f"{device.address} is an SR-IOV physical function with {len(device.vfs)} VFs",
                           hint="hand off one of its virtual functions instead")
        attach_xml = portable_device_xml(device_xml) if device_xml else hostdev_xml(device.address)
        persist = in_config and _config_xml(conn, receiver) is not None
        attach_flags = live_flag | (config_flag if persist else 0)
    plan = Plan(
        label=f"PCI device {device.address}", owner=owner, receiver=receiver, device_xml=device_xml,
        alias=alias, detach_flags=detach_flags, attach_xml=attach_xml, attach_flags=attach_flags,
        restore_xml=portable_device_xml(device_xml, keep_address=True) if device_xml else None,
        pci=device, pci_driver=device.driver,
    )
    return plan, host
