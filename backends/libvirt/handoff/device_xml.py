"""Device XML for a handoff: finding a disk or PCI device in a domain, and making it portable (pure)."""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET

from backends.libvirt.parse import pci_address

_BUS_PREFIX = {"scsi": "sd", "usb": "sd", "sata": "sd", "virtio": "vd", "ide": "hd", "xen": "xvd", "fdc": "fd"}


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
    """The ``<disk>`` of a domain whose target is ``target``."""
    root = ET.fromstring(domain_xml)
    return next((d for d in root.findall("devices/disk") if target_of(d) == target), None)


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
    """The disk target names (``sda``, ``vdb``…) the given domains use."""
    return {t for xml in domain_xmls for d in ET.fromstring(xml).findall("devices/disk") if (t := target_of(d))}


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


def target_of(disk: ET.Element) -> str | None:
    """A disk element's target name."""
    t = disk.find("target")
    return t.get("dev") if t is not None else None


def alias_of(el: ET.Element) -> str | None:
    """The alias libvirt gave a device element, None when it has none."""
    a = el.find("alias")
    return a.get("name") if a is not None else None
