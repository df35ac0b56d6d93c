"""S2 for disks: planning the handoff of a storage volume between the host and a running VM.

A volume the host holds is named by its absolute path (``/var/lib/libvirt/images/data.qcow2``,
as ``virsh vol-list --details`` shows it); a disk a VM holds keeps its ``VM/TARGET`` id.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

import libvirt

from backends.errors import BadInput, NotFound
from backends.libvirt.handoff.device_xml import disk_targets, free_target
from backends.libvirt.migrate import disk_sources
from backends.libvirt.ops import libvirt_reason
from backends.models import Inventory
from backends.requests import HandoffRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend
    from backends.libvirt.handoff.plan import Plan


def is_host_volume_id(device: str) -> bool:
    """Is ``device`` a host volume's path (rather than ``VM/TARGET`` or a PCI address)?"""
    return device.startswith("/")


def find_volume(conn: Any, path: str) -> Any | None:
    """The storage volume at ``path`` on ``conn``, refreshing the pool whose directory holds it
    once if libvirt does not know it yet; None when no active pool has it."""
    try:
        return conn.storageVolLookupByPath(path)
    except libvirt.libvirtError:
        pass
    folder = os.path.dirname(path)
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        try:
            if ET.fromstring(pool.XMLDesc(0)).findtext("target/path") == folder:
                pool.refresh(0)
                return conn.storageVolLookupByPath(path)
        except libvirt.libvirtError:
            continue
    return None


def users_of(conn: Any, path: str) -> list[str]:
    """The domains on ``conn`` whose live or persistent definition has a disk on ``path``."""
    users: list[str] = []
    for dom in conn.listAllDomains(0):
        try:
            xmls = [dom.XMLDesc(0)]
            if dom.isActive() and dom.isPersistent():
                xmls.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError:
            continue
        if any(used == path for xml in xmls for _, used in disk_sources(xml)):
            users.append(dom.name())
    return users


def guest_disk_xml(vol: Any, path: str, receiver_xmls: tuple[str, ...]) -> str:
    """A ``<disk>`` for volume ``vol`` on the receiver's SCSI bus (else USB), with a free name."""
    live = receiver_xmls[0]
    controllers = {c.get("type") for c in ET.fromstring(live).findall("devices/controller")}
    bus = "scsi" if "scsi" in controllers else "usb" if "usb" in controllers else None
    if bus is None:
        raise BadInput("the receiver has neither a SCSI nor a USB controller to plug a disk into",
                       hint="add a virtio-scsi controller to its definition")
    fmt = ET.fromstring(vol.XMLDesc(0)).find("target/format")
    fmt_type = fmt.get("type") if fmt is not None else None
    block = vol.info()[0] == libvirt.VIR_STORAGE_VOL_BLOCK
    kind, attr = ("block", "dev") if block else ("file", "file")
    driver = f"<driver name='qemu' type='{fmt_type}'/>" if fmt_type and fmt_type not in ("none", "unknown") else ""
    target = free_target("sda", bus, disk_targets(*receiver_xmls))
    return (f"<disk type='{kind}' device='disk'>{driver}<source {attr}='{path}'/>"
            f"<target dev='{target}' bus='{bus}'/></disk>")


def plan_host_volume(backend: LibvirtBackend, inv: Inventory, request: HandoffRequest) -> tuple[Plan, str]:
    """Host → VM: the plan for plugging the host's volume at ``request.device`` into a running VM."""
    from backends.libvirt.handoff.plan import Plan, _config_xml, _live_xml, _running_receiver

    path = os.path.normpath(request.device)
    if request.to == "host":
        raise BadInput(f"{path} is already the host's", hint="name a running VM to give it to")
    hosts = [request.host] if request.host else sorted({v.host for v in inv.vms if v.name == request.to})
    if not hosts:
        raise NotFound(f"no VM called {request.to!r}", hint="see `hvc inventory` for the VMs")
    if len(hosts) > 1:
        raise BadInput(f"{request.to} exists on {', '.join(hosts)}", hint="say which host with --host")
    receiver = _running_receiver(inv, request.to, hosts[0], None)
    conn = backend.connected(receiver.host).connection
    try:
        vol = find_volume(conn, path)
        if vol is None:
            raise NotFound(f"no storage volume {path} on {receiver.host}",
                           hint="see `virsh vol-list POOL --details`; create it in a pool first")
        users = users_of(conn, path)
        pool = vol.storagePoolLookupByVolume().name()
    except libvirt.libvirtError as exc:
        raise NotFound(f"cannot read {path} on {receiver.host}: {libvirt_reason(exc)}",
                       hint="refresh and try again") from exc
    if users:
        raise BadInput(f"{path} is in use by {', '.join(users)} on {receiver.host}",
                       hint=f"hand it over as {users[0]}/TARGET, or detach it there first")
    config = _config_xml(conn, receiver)
    attach_xml = guest_disk_xml(vol, path, (_live_xml(conn, receiver),) + ((config,) if config else ()))
    plan = Plan(label=f"volume {path}", owner=None, receiver=receiver, device_xml=None, alias=None,
                detach_flags=0, attach_xml=attach_xml, attach_flags=int(libvirt.VIR_DOMAIN_AFFECT_LIVE),
                restore_xml=None, volume_path=path, pool=pool)
    return plan, receiver.host


def host_pool_of(conn: Any, path: str | None, vm_name: str, host: str) -> str:
    """VM → host: the pool that will hold the disk at ``path`` once the VM lets go (else BadInput)."""
    if not path:
        raise BadInput(f"this disk of {vm_name} has no file or block source for the host to hold",
                       hint="only file and block disks can be handed to the host")
    try:
        vol = find_volume(conn, path)
        pool = vol.storagePoolLookupByVolume().name() if vol is not None else None
    except libvirt.libvirtError:
        pool = None
    if pool is None:
        raise BadInput(f"{path} is in no storage pool on {host}, so the host would not hold it",
                       hint=f"define a pool for {os.path.dirname(path)} (`virsh pool-define-as`)")
    return str(pool)


def disk_with_source(domain_xml: str, path: str) -> ET.Element | None:
    """The ``<disk>`` of a domain whose file or block source is ``path``."""
    for disk in ET.fromstring(domain_xml).findall("devices/disk"):
        src = disk.find("source")
        if src is not None and path in (src.get("file"), src.get("dev")):
            return disk
    return None
