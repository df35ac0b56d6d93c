"""Pure functions turning libvirt XML documents into the frozen domain model.

Only ``xml.etree.ElementTree`` is used, so everything here is testable without a libvirt
connection. Missing elements become ``None`` or empty tuples; a string that is not XML at
all, or a document of the wrong kind, raises ``ValueError`` and the caller decides.
"""

from __future__ import annotations

import functools
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, replace

from backends.analysis import claims
from backends.images import from_domain as images_from_domain
from backends.libvirt.residency import domain_residency
from backends.models import (
    CellShare,
    Cpu,
    DiskChain,
    DiskLayer,
    HugePages,
    NumaCell,
    Owner,
    OwnerKind,
    PciDevice,
    StorageService,
    VcpuPin,
    Vm,
    VmState,
    VNumaCell,
)
from backends.units import parse_cpuset
from backends.xmlpath import find, findall

# Multipliers to bytes for libvirt's scaled-integer units (docs: formatdomain "memory").
_UNIT_BYTES: dict[str, int] = {"b": 1, "bytes": 1} | {
    name: scale
    for power, p in enumerate("kmgtpe", 1)
    for name, scale in ((p, 1024**power), (p + "ib", 1024**power), (p + "b", 1000**power))
}

_CHAIN_DEVICES = frozenset({"disk", "lun"})
_INACTIVE = frozenset({VmState.SHUTOFF, VmState.UNKNOWN})


@dataclass(frozen=True, slots=True)
class HostTopology:
    """Hostname-independent facts from a capabilities document; free memory is not in it."""

    cpu_model: str | None
    threads: int  # logical CPUs listed; 0 when the document lists none (ask getInfo)
    memory_kib: int | None  # sum of the cells' memory; None without <cells>
    cells: tuple[NumaCell, ...] = ()


@dataclass(frozen=True, slots=True)
class DomainFacts:
    """What one domain XML says: the VM (state UNKNOWN until the caller sets it) and its disks."""

    vm: Vm
    chains: tuple[DiskChain, ...] = ()
    services: tuple[StorageService, ...] = ()  # S8, from backends.libvirt.service_xml


# --- small helpers -----------------------------------------------------------------------


def _root(xml: str, tag: str, what: str) -> ET.Element:
    """Parse ``xml`` and check its root element is ``tag``."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"malformed {what} XML: {exc}") from exc
    if root.tag != tag:
        raise ValueError(f"expected <{tag}> in {what} XML, got <{root.tag}>")
    return root


def _int(text: str | None) -> int | None:
    """An integer written in decimal or 0x-hex, or None when absent or not a number."""
    if text is None:
        return None
    try:
        return int(text)  # the common case: decimal, surrounding blanks allowed
    except ValueError:
        pass
    try:
        return int(text, 16) if text.strip()[:2].lower() == "0x" else None
    except ValueError:
        return None


def _text(el: ET.Element | None) -> str | None:
    """Stripped text of an element, None when the element is absent or empty."""
    if el is None or el.text is None:
        return None
    return el.text.strip() or None


def _kib(value: str | None, unit: str | None, default_unit: str = "kib") -> int | None:
    """A scaled libvirt quantity converted to KiB (rounded down)."""
    number = _int(value)
    scale = _UNIT_BYTES.get((unit or default_unit).strip().lower())
    if number is None or scale is None:
        return None
    return number * scale // 1024


def _el_kib(el: ET.Element | None) -> int | None:
    """The KiB value of an element like ``<memory unit='KiB'>1024</memory>``."""
    return None if el is None else _kib(el.text, el.get("unit"))


@functools.lru_cache(maxsize=4096)
def _cpus(spec: str | None) -> tuple[int, ...]:
    """A cpuset/nodeset from a host's XML; malformed parts are skipped, not fatal. Cached: a
    fleet repeats the same few sets across thousands of domains."""
    return parse_cpuset(spec or "", strict=False)


def pci_address(el: ET.Element | None) -> str | None:
    """Format an ``<address domain bus slot function>`` element as ``dddd:bb:ss.f``."""
    if el is None:
        return None
    parts = [_int(el.get(k)) for k in ("bus", "slot", "function")]
    domain = _int(el.get("domain")) or 0
    if any(p is None for p in parts):
        return None
    bus, slot, function = (p or 0 for p in parts)
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


# --- capabilities ------------------------------------------------------------------------


def parse_capabilities(xml: str) -> HostTopology:
    """Read CPU model, logical CPUs, NUMA cells, hugepages and distances from capabilities."""
    host = _root(xml, "capabilities", "capabilities").find("host")
    if host is None:
        return HostTopology(cpu_model=None, threads=0, memory_kib=None)
    cpu_model = _text(host.find("cpu/model"))
    cells = tuple(_cell(c) for c in host.findall("topology/cells/cell"))
    if cells:
        threads = sum(len(c.cpus) for c in cells)
        return HostTopology(cpu_model, threads, sum(c.memory_kib for c in cells), cells)
    topo = host.find("cpu/topology")  # no cells: fall back to sockets x dies x cores x threads
    keys = ("sockets", "dies", "cores", "threads")
    counts = [_int(topo.get(k, "1")) for k in keys] if topo is not None else [None]
    threads = math.prod(n or 0 for n in counts) if None not in counts else 0
    return HostTopology(cpu_model, threads, None, ())


def _cell(el: ET.Element) -> NumaCell:
    """One ``<cell>`` of the host topology."""
    cpus = tuple(
        Cpu(
            id=cpu_id,
            socket=_int(c.get("socket_id")),
            core=_int(c.get("core_id")),
            siblings=_cpus(c.get("siblings")),
        )
        for c in el.findall("cpus/cpu")
        if (cpu_id := _int(c.get("id"))) is not None
    )
    # libvirt lists the cell's base (system) page size first; the others are huge pages.
    listed = [(_kib(p.get("size"), p.get("unit")), _int(p.text)) for p in el.findall("pages")]
    pages = tuple(
        HugePages(size_kib=size, total=count) for size, count in listed[1:] if size is not None and count is not None
    )
    distances = tuple(
        (sid, value)
        for s in el.findall("distances/sibling")
        if (sid := _int(s.get("id"))) is not None and (value := _int(s.get("value"))) is not None
    )
    return NumaCell(
        id=_int(el.get("id")) or 0,
        cpus=cpus,
        memory_kib=_el_kib(el.find("memory")) or 0,
        hugepages=pages,
        distances=distances,
    )


# --- domains -----------------------------------------------------------------------------


def domain_root(xml: str) -> ET.Element:
    """A domain XML parsed once, for ``parse_domain`` and ``parse_services`` to share."""
    return _root(xml, "domain", "domain")


def parse_domain(xml: str | ET.Element, host: str) -> DomainFacts:
    """Read a domain's sizing, vNUMA, placement, host devices and disk chains (from its XML, or
    from the root ``domain_root`` parsed)."""
    root = domain_root(xml) if isinstance(xml, str) else xml
    name = _text(root.find("name")) or ""
    vcpu_el = root.find("vcpu")
    vcpus = 0
    if vcpu_el is not None:
        vcpus = _int(vcpu_el.get("current")) or _int(vcpu_el.text) or 0
    max_kib = _el_kib(root.find("memory"))
    current_kib = _el_kib(root.find("currentMemory"))
    mem = find(root, "numatune", "memory")
    memory_nodeset = _cpus(mem.get("nodeset")) if mem is not None else ()
    memnodes = {
        cellid: _cpus(node.get("nodeset"))
        for node in findall(root, "numatune", "memnode")
        if (cellid := _int(node.get("cellid"))) is not None
    }
    vnuma = tuple(_vcell(c, i, memnodes, memory_nodeset) for i, c in enumerate(findall(root, "cpu", "numa", "cell")))
    devices_el = root.find("devices")
    devices: tuple[str, ...] = ()
    disks: list[str] = []
    chains: list[DiskChain] = []
    if devices_el is not None:
        devices = _assigned_pci(devices_el)
        for disk in devices_el.findall("disk"):
            if disk.get("device", "disk") not in _CHAIN_DEVICES:
                continue
            target = (t.get("dev") if (t := disk.find("target")) is not None else None) or ""
            if target:
                disks.append(target)
            layers = _layers(disk)
            if layers:
                chains.append(DiskChain(vm=name, host=host, disk=target, layers=layers))
    memory_kib = current_kib if current_kib is not None else (max_kib or 0)
    vm = Vm(
        name=name,
        uuid=_text(root.find("uuid")) or "",
        host=host,
        state=VmState.UNKNOWN,
        vcpus=vcpus,
        memory_kib=memory_kib,
        max_memory_kib=max_kib,
        vnuma=vnuma,
        pinning=_pinning(root, vcpus, vcpu_el),
        memory_nodeset=memory_nodeset,
        devices=devices,
        disks=tuple(disks),
        memory_mode=mem.get("mode", "strict") if mem is not None else None,
        hugepages=find(root, "memoryBacking", "hugepages") is not None,
        device_images=images_from_domain(root),
        residency=domain_residency(root, devices, memory_kib),
    )
    return DomainFacts(vm=vm, chains=tuple(chains))


def _vcell(el: ET.Element, index: int, memnodes: dict[int, tuple[int, ...]], fallback: tuple[int, ...]) -> VNumaCell:
    """One guest NUMA cell; without a memnode, libvirt places it by ``<memory nodeset>``."""
    cell_id = _int(el.get("id"))
    cell_id = index if cell_id is None else cell_id
    memory = _kib(el.get("memory"), el.get("unit")) or 0
    nodes = memnodes.get(cell_id, fallback)
    backing = tuple(CellShare(cell=n, memory_kib=memory if len(nodes) == 1 else None) for n in nodes)
    return VNumaCell(id=cell_id, vcpus=_cpus(el.get("cpus")), memory_kib=memory, backing=backing)


def _pinning(root: ET.Element, vcpus: int, vcpu_el: ET.Element | None) -> tuple[VcpuPin, ...]:
    """Explicit ``<vcpupin>``s, plus the ``<vcpu cpuset>`` default for the unpinned vCPUs."""
    pins: dict[int, tuple[int, ...]] = {}
    for pin in findall(root, "cputune", "vcpupin"):
        vcpu = _int(pin.get("vcpu"))
        if vcpu is not None:
            pins[vcpu] = _cpus(pin.get("cpuset"))
    default = _cpus(vcpu_el.get("cpuset")) if vcpu_el is not None else ()
    if default:
        for vcpu in range(vcpus):
            pins.setdefault(vcpu, default)
    return tuple(VcpuPin(vcpu=v, cpus=c) for v, c in sorted(pins.items()))


def _assigned_pci(devices: ET.Element) -> tuple[str, ...]:
    """PCI addresses a guest holds: ``<hostdev type='pci'>`` and ``<interface type='hostdev'>``."""
    found: list[str] = []
    for el in devices:
        if el.tag == "hostdev":
            if el.get("mode", "subsystem") != "subsystem" or el.get("type") != "pci":
                continue
        elif el.tag != "interface" or el.get("type") != "hostdev":
            continue
        address = find(el, "source", "address")
        if address is not None and address.get("type", "pci") != "pci":
            continue
        if (pci := pci_address(address)) is not None and pci not in found:
            found.append(pci)
    return tuple(found)


def _layers(disk: ET.Element) -> tuple[DiskLayer, ...]:
    """A disk's image chain, base first; the XML nests it top first through ``<backingStore>``."""
    driver = disk.find("driver")
    fmt = driver.get("type") if driver is not None else None
    layers: list[DiskLayer] = []
    node: ET.Element | None = disk
    while node is not None:
        path = _source_path(node)
        if path is None:
            break
        layers.append(DiskLayer(path=path, format=fmt))
        node = node.find("backingStore")
        if node is not None:
            format_el = node.find("format")
            fmt = format_el.get("type") if format_el is not None else None
    return tuple(reversed(layers))


def _source_path(node: ET.Element) -> str | None:
    """A human path for a disk or backing-store source, whatever its storage type."""
    src = node.find("source")
    if src is None:
        return None
    kind = node.get("type", "file")
    if kind == "network":
        name = src.get("name")
        return f"{src.get('protocol', 'network')}:{name}" if name else None
    if kind == "volume":
        pool, volume = src.get("pool"), src.get("volume")
        return f"{pool}/{volume}" if pool and volume else None
    return src.get("file") or src.get("dev") or src.get("dir") or None


# --- node devices ------------------------------------------------------------------------


def parse_nodedev(xml: str, host: str) -> PciDevice | None:
    """Read a PCI node device with its driver, IOMMU group and SR-IOV links; others give None."""
    root = _root(xml, "device", "node device")
    cap = next((c for c in root.findall("capability") if c.get("type") == "pci"), None)
    if cap is None:
        return None
    parts = [_int(_text(cap.find(k))) for k in ("domain", "bus", "slot", "function")]
    if any(p is None for p in parts[1:]):
        return None
    domain, bus, slot, function = (p or 0 for p in parts)
    driver = _text(root.find("driver/name"))
    group = cap.find("iommuGroup")
    physfn: str | None = None
    vfs: tuple[str, ...] = ()
    for sub in cap.findall("capability"):
        if sub.get("type") == "phys_function":
            physfn = pci_address(sub.find("address"))
        elif sub.get("type") == "virt_functions":
            vfs = tuple(a for el in sub.findall("address") if (a := pci_address(el)) is not None)
    kind = OwnerKind.UNBOUND if not driver else OwnerKind.VFIO if driver == "vfio-pci" else OwnerKind.HOST
    numa = root.find("capability/numa")
    return PciDevice(
        address=f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}",
        host=host,
        vendor=_id_name(cap.find("vendor")),
        product=_id_name(cap.find("product")),
        device_class=_text(cap.find("class")),
        driver=driver,
        iommu_group=_int(group.get("number")) if group is not None else None,
        owner=Owner(kind, driver=driver),
        physfn=physfn,
        vfs=vfs,
        name=_text(root.find("name")),
        numa_node=_int(numa.get("node")) if numa is not None else None,
    )


def _id_name(el: ET.Element | None) -> str | None:
    """A vendor or product name, falling back to its numeric id when libvirt has no name."""
    if el is None:
        return None
    return _text(el) or el.get("id")


def resolve_owners(devices: Iterable[PciDevice], vms: Iterable[Vm]) -> tuple[PciDevice, ...]:
    """Make each device a VM lists on its host owned by it; a live claimant beats a shut-off one.

    Among equals the first VM in ``vms`` wins; ``claims`` shows every claimant, for conflicts.
    """
    devs = tuple(devices)
    order = tuple(vms)
    by_name = {(vm.host, vm.name): vm for vm in order}
    owners = claims(devs, order)
    out: list[PciDevice] = []
    for d in devs:
        names = owners.get((d.host, d.address))
        if names:
            live = [n for n in names if by_name[(d.host, n)].state not in _INACTIVE]
            owner = (live or names)[0]
            d = replace(d, owner=Owner(OwnerKind.VM, vm=owner, driver=d.driver))
        out.append(d)
    return tuple(out)


def parse_pool(xml: str) -> tuple[str | None, str | None]:
    """A storage pool's type and target path."""
    root = _root(xml, "pool", "storage pool")
    return root.get("type"), _text(root.find("target/path"))


# libvirt's own volume XML, as its formatter writes it: read the two facts with two searches,
# not a parse (a pool of thousands of volumes made the per-volume parse a good part of a first load).
_TARGET = re.compile(r"<target>(.*?)</target>", re.S)
_FORMAT = re.compile(r"<format type='([^'<>&]*)'/>")
_BACKING = re.compile(r"<backingStore>\s*<path>([^<&]*)</path>")


def parse_volume(xml: str) -> tuple[str | None, str | None]:
    """A volume's format and the path of its backing volume (None for a base). XML that is not
    plainly libvirt's (entities, comments, CDATA, another shape) goes through the full parser."""
    text = xml.strip()
    if text.startswith("<volume") and text.endswith("</volume>") and "&" not in text and "<!" not in text:
        target = _TARGET.search(text)
        backing_at = text.find("<backingStore")
        if target is not None and (backing_at < 0 or backing_at > target.end()):
            fmt = _FORMAT.search(target.group(1))
            backing = _BACKING.search(text, target.end()) if backing_at >= 0 else None
            if (backing_at < 0 or backing is not None) and (fmt is not None or "<format" not in target.group(1)):
                return (fmt.group(1) if fmt else None), (backing.group(1).strip() or None) if backing else None
    root = _root(xml, "volume", "storage volume")
    fmt_el = root.find("target/format")
    return (fmt_el.get("type") if fmt_el is not None else None), _text(root.find("backingStore/path"))
