"""S8 service declarations in domain XML, and the VF interface that carries an identifier (pure).

See ``backends.libvirt.services`` for the XML shape and how a service moves.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from backends.libvirt.parse import pci_address
from backends.models import StorageService
from backends.xmlpath import find, findall

NS = "https://hvconsole.dev/xmlns/service/1"


def parse_services(xml: str | ET.Element, host: str) -> tuple[StorageService, ...]:
    """The storage services a domain XML (or its parsed root) declares, each with the VF carrying
    its identifier (or None)."""
    root = ET.fromstring(xml) if isinstance(xml, str) else xml
    vm = (root.findtext("name") or "").strip()
    interfaces = []  # (MAC, VF address) of every hostdev interface
    for iface in findall(root, "devices", "interface"):
        mac = iface.find("mac")
        if iface.get("type") == "hostdev" and mac is not None and mac.get("address"):
            interfaces.append((mac.get("address", "").lower(), pci_address(find(iface, "source", "address"))))
    out = []
    for el in findall(root, "metadata", f"{{{NS}}}service"):
        identifier = (el.get("identifier") or (interfaces[0][0] if interfaces else "")).strip().lower()
        if not el.get("name") or not identifier:
            continue  # a declaration without a name or any MAC to go by: nothing to show
        vf = next((address for mac, address in interfaces if mac == identifier), None)
        out.append(StorageService(el.get("name", ""), vm, host, identifier, vf, el.get("protocol") or "iscsi"))
    return tuple(out)


def interface_xml(mac: str, vf: str) -> str:
    """An ``<interface type='hostdev'>`` giving VF ``dddd:bb:ss.f`` to a guest with ``mac`` set on it."""
    domain, bus, rest = vf.split(":")
    slot, function = rest.split(".")
    return (f"<interface type='hostdev' managed='yes'><mac address='{mac}'/><source>"
            f"<address type='pci' domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{function}'/>"
            "</source></interface>")
