"""Generate a node XML for libvirt's ``test:///<path>`` driver, to exercise parsing at scale.

The file holds host CPU facts, N domains (running, paused and shut off; vNUMA with
``<numatune>`` memnodes; vCPU pinning; disks with 1–3 layer ``<backingStore>`` chains; a
network interface), a storage pool whose volumes carry the same backing chains, and PCI node
devices including an SR-IOV physical function with its virtual functions.

Limits of the test driver (libvirt 9.0), seen when loading the generated file:

- capabilities list *no* NUMA cells (``<cells num='0'>``) and ``getCellsFreeMemory`` fails;
  ``getInfo``/``nodeinfo`` report the ``<cpu>`` facts (64 CPUs, 2 nodes) instead;
- node device XML loses ``<driver>`` (the driver normally comes from sysfs), so every PCI
  device reads back with no driver and therefore as a VFIO-owned device;
- ``virsh nodedev-list`` fails with "unsupported flags"; ``listAllDevices(0)`` works.
"""

from __future__ import annotations

import random
import uuid
from itertools import pairwise
from pathlib import Path

from backends.libvirt.service_xml import NS as SERVICE_NS
from backends.libvirt.service_xml import interface_xml

POOL_NAME = "images"
POOL_PATH = "/var/lib/libvirt/images"
HOST_CPUS = 64  # 2 sockets x 16 cores x 2 threads
HOST_NODES = 2
GIB_KIB = 1024 * 1024
GIB = 1024**3

_GOLDEN = (
    ("debian-12-base.qcow2", "qcow2"),
    ("rhel-9.4-base.qcow2", "qcow2"),
    ("ubuntu-24.04-base.raw", "raw"),
)
# An Intel 82599 PF at 3b:00.0 with six VFs, interleaved as the hardware exposes them.
SRIOV_PF = "0000:3b:00.0"
SRIOV_VFS = tuple(f"0000:3b:{0x10 + i // 4:02x}.{(i % 4) * 2:x}" for i in range(6))
SERVICE, SERVICE_MAC = "vm0000-nvme", "02:5e:00:00:00:01"  # carried on SRIOV_VFS[0] by vm0000
GPU = "0000:af:00.0"
GPU_AUDIO = "0000:af:00.1"
# (address, class, vendor id, vendor, product id, product, iommu group)
_PLAIN_DEVICES = (
    ("0000:18:00.0", "0x020000", "0x14e4", "Broadcom Inc.", "0x16d8", "BCM57416 NetXtreme-E 10GBase-T", 20),
    ("0000:5e:00.0", "0x010802", "0x144d", "Samsung Electronics Co Ltd", "0xa824", "NVMe SSD Controller PM173X", 31),
    (GPU, "0x030000", "0x10de", "NVIDIA Corporation", "0x1eb8", "TU104GL [Tesla T4]", 70),
    (GPU_AUDIO, "0x040300", "0x10de", "NVIDIA Corporation", "0x10f8", "TU104 HD Audio Controller", 70),
)


def write_test_fleet(path: Path, domains: int, *, seed: int = 0) -> Path:
    """Write a deterministic test-driver node XML with ``domains`` guests and return its path."""
    rng = random.Random(seed)
    volumes: dict[str, str] = {}
    for name, fmt in _GOLDEN:
        volumes[name] = _volume(name, fmt, 20 * GIB, 4 * GIB, None)
    parts = [
        "<node>\n",
        "<cpu><mhz>2400</mhz><model>Intel(R) Xeon(R) Gold 6326</model><active>64</active>"
        f"<nodes>{HOST_NODES}</nodes><sockets>2</sockets><cores>16</cores><threads>2</threads>"
        "</cpu>\n",
        f"<memory>{512 * GIB_KIB}</memory>\n",
    ]
    parts.extend(_domain(i, rng, volumes) for i in range(domains))
    parts.append(_network())
    parts.append(
        f"<pool type='dir'><name>{POOL_NAME}</name><uuid>{_uuid(rng)}</uuid>"
        f"<capacity unit='bytes'>{4096 * GIB}</capacity>"
        f"<allocation unit='bytes'>{1024 * GIB}</allocation>"
        f"<available unit='bytes'>{3072 * GIB}</available>"
        f"<target><path>{POOL_PATH}</path></target>\n"
    )
    parts.extend(volumes.values())
    parts.append("</pool>\n")
    parts.append(_devices())
    parts.append("</node>\n")
    path = path.absolute()
    path.write_text("".join(parts), encoding="utf-8")
    return path


def fleet_uri(path: Path) -> str:
    """The libvirt URI that opens a generated node file."""
    return f"test://{path.absolute()}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _volume(name: str, fmt: str, capacity: int, allocation: int, backing: str | None) -> str:
    """One ``<volume>`` of the pool, with its backing file when it is an overlay."""
    back = ""
    if backing is not None:
        back_fmt = "raw" if backing.endswith(".raw") else "qcow2"
        back = f"<backingStore><path>{POOL_PATH}/{backing}</path><format type='{back_fmt}'/></backingStore>"
    return (
        f"  <volume type='file'><name>{name}</name><key>{POOL_PATH}/{name}</key>"
        f"<capacity unit='bytes'>{capacity}</capacity>"
        f"<allocation unit='bytes'>{allocation}</allocation>"
        f"<target><path>{POOL_PATH}/{name}</path><format type='{fmt}'/></target>{back}</volume>\n"
    )


def _disk(vm: str, target: str, rng: random.Random, volumes: dict[str, str]) -> str:
    """A disk with a 1–3 layer chain; its images are added to the pool as volumes."""
    depth = rng.choice((1, 2, 2, 3))
    size = rng.choice((10, 20, 40, 80)) * GIB
    if depth == 1:
        chain = [(f"{vm}-{target}.raw", "raw")]
        volumes[chain[0][0]] = _volume(chain[0][0], "raw", size, size, None)
    else:
        chain = [rng.choice(_GOLDEN)]  # base first
        if depth == 3:
            chain.append((f"{vm}-{target}-snap1.qcow2", "qcow2"))
        chain.append((f"{vm}-{target}.qcow2", "qcow2"))
        for (below, _), (name, fmt) in pairwise(chain):
            used = rng.randrange(1, 8) * GIB // 4
            volumes[name] = _volume(name, fmt, 20 * GIB, used, below)
    top_name, top_fmt = chain[-1]
    nested = "<backingStore/>"
    for name, fmt in chain[:-1]:  # wrap from the base outwards: the top's child is innermost
        nested = (
            f"<backingStore type='file'><format type='{fmt}'/>"
            f"<source file='{POOL_PATH}/{name}'/>{nested}</backingStore>"
        )
    return (
        f"    <disk type='file' device='disk'><driver name='qemu' type='{top_fmt}'/>"
        f"<source file='{POOL_PATH}/{top_name}'/>{nested}"
        f"<target dev='{target}' bus='virtio'/></disk>\n"
    )


def _hostdevs(index: int) -> str:
    """Fixed PCI assignments: VFs to the first guests, and the GPU claimed twice on purpose."""
    addresses: list[str] = []
    if index < len(SRIOV_VFS) - 2:  # the last two VFs stay free
        addresses.append(SRIOV_VFS[index])
    if index in (4, 7):  # vm0004 runs with the GPU; shut-off vm0007 is configured with it too
        addresses.extend((GPU, GPU_AUDIO))
    out = []
    for a in addresses:
        dom, bus, rest = a.split(":")
        slot, fn = rest.split(".")
        if index == 0 and a == SRIOV_VFS[0]:  # vm0000 exports a storage service on its VF (S8)
            out.append(f"    {interface_xml(SERVICE_MAC, a)}\n")
            continue
        out.append(
            "    <hostdev mode='subsystem' type='pci' managed='yes'><source>"
            f"<address domain='0x{dom}' bus='0x{bus}' slot='0x{slot}' function='0x{fn}'/>"
            "</source></hostdev>\n"
        )
    return "".join(out)


def _domain(index: int, rng: random.Random, volumes: dict[str, str]) -> str:
    """One guest; about a third have vNUMA, a quarter pinning, a fifth are shut off."""
    name = f"vm{index:04d}"
    cells = rng.choice((2, 3, 4)) if index % 3 == 0 else 0
    vcpus = cells * rng.choice((1, 2, 4)) if cells else rng.choice((1, 2, 4, 8))
    mem_gib = (cells * rng.choice((1, 2, 4))) if cells else rng.choice((1, 2, 4, 8, 16))
    body = [
        f"<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\n"
        f"  <name>{name}</name><uuid>{_uuid(rng)}</uuid>\n"
        f"  <memory unit='KiB'>{mem_gib * GIB_KIB}</memory>"
        f"<currentMemory unit='KiB'>{mem_gib * GIB_KIB}</currentMemory>\n"
        f"  <vcpu placement='static'>{vcpus}</vcpu>\n"
    ]
    if index == 0:
        body.append(f"  <metadata><hvc:service xmlns:hvc='{SERVICE_NS}' name='{SERVICE}' protocol='nvme-tcp'/>"
                    "</metadata>\n")
    if index % 4 == 1:
        first = rng.randrange(0, HOST_CPUS // 2, 2)
        pins = "".join(f"<vcpupin vcpu='{v}' cpuset='{first + v},{first + v + HOST_CPUS // 2}'/>" for v in range(vcpus))
        body.append(f"  <cputune>{pins}</cputune>\n")
    numa = ""
    if cells:
        per_cpus, per_kib = vcpus // cells, mem_gib * GIB_KIB // cells
        numa = (
            "<cpu><numa>"
            + "".join(
                f"<cell id='{c}' cpus='{c * per_cpus}-{(c + 1) * per_cpus - 1}' memory='{per_kib}' unit='KiB'/>"
                for c in range(cells)
            )
            + "</numa></cpu>"
        )
        memnodes = "".join(
            f"<memnode cellid='{c}' mode='strict' nodeset='{c % HOST_NODES}'/>"
            for c in range(cells)
            if c < HOST_NODES or index % 2 == 0  # odd guests leave extra cells to <memory>
        )
        body.append(f"  <numatune><memory mode='strict' nodeset='0-{HOST_NODES - 1}'/>{memnodes}</numatune>\n")
    body.append(f"  <os><type arch='x86_64'>hvm</type></os>{numa}\n  <devices>\n")
    body.append(_disk(name, "vda", rng, volumes))
    if rng.random() < 0.4:
        body.append(_disk(name, "vdb", rng, volumes))
    mac = ":".join(f"{b:02x}" for b in (0x52, 0x54, 0x00, index >> 16 & 255, index >> 8 & 255))
    body.append(
        f"    <interface type='network'><mac address='{mac}:{index & 255:02x}'/>"
        "<source network='default'/><model type='virtio'/></interface>\n"
    )
    body.append(_hostdevs(index))
    body.append("  </devices>\n")
    roll = 1.0 if index == 4 else rng.random()
    if index == 7 or roll < 0.2:
        body.append("  <test:runstate>5</test:runstate>\n")  # VIR_DOMAIN_SHUTOFF
    elif roll < 0.25:
        body.append("  <test:runstate>3</test:runstate>\n")  # VIR_DOMAIN_PAUSED
    body.append("</domain>\n")
    return "".join(body)


def _network() -> str:
    return (
        "<network><name>default</name><uuid>dd8fe884-6c02-601e-7551-cca97df1c5df</uuid>"
        "<bridge name='virbr0'/><forward/><ip address='192.168.122.1' netmask='255.255.255.0'>"
        "<dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>\n"
    )


def _pci_xml(
    address: str,
    cls: str,
    ids: tuple[str, str, str, str],
    group: int,
    extra: str = "",
    parent: str = "computer",
) -> str:
    """One PCI ``<device>``; ``extra`` holds SR-IOV sub-capabilities."""
    dom, bus, rest = address.split(":")
    slot, fn = rest.split(".")
    vendor_id, vendor, product_id, product = ids
    name = f"pci_{dom}_{bus}_{slot}_{fn}"
    return (
        f"<device><name>{name}</name><parent>{parent}</parent><capability type='pci'>"
        f"<class>{cls}</class><domain>{int(dom, 16)}</domain><bus>{int(bus, 16)}</bus>"
        f"<slot>{int(slot, 16)}</slot><function>{int(fn, 16)}</function>"
        f"<product id='{product_id}'>{product}</product><vendor id='{vendor_id}'>{vendor}</vendor>"
        f"{extra}<iommuGroup number='{group}'>{_addr(address)}</iommuGroup>"
        f"<numa node='{0 if int(bus, 16) < 0x80 else 1}'/></capability></device>\n"
    )


def _addr(address: str) -> str:
    dom, bus, rest = address.split(":")
    slot, fn = rest.split(".")
    return f"<address domain='0x{dom}' bus='0x{bus}' slot='0x{slot}' function='0x{fn}'/>"


def _devices() -> str:
    """The system device, plain PCI devices, and the SR-IOV PF with its VFs."""
    parts = [
        "<device><name>computer</name><capability type='system'><hardware>"
        "<vendor>Libvirt</vendor><version>Test fleet</version>"
        "<uuid>11111111-2222-3333-4444-555555555555</uuid></hardware></capability></device>\n"
    ]
    for address, cls, vid, vendor, pid, product, group in _PLAIN_DEVICES:
        parts.append(_pci_xml(address, cls, (vid, vendor, pid, product), group))
    intel = ("0x8086", "Intel Corporation")
    vfs = "".join(_addr(a) for a in SRIOV_VFS)
    parts.append(
        _pci_xml(
            SRIOV_PF,
            "0x020000",
            (*intel, "0x10fb", "82599ES 10-Gigabit SFI/SFP+ Network"),
            40,
            f"<capability type='virt_functions' maxCount='63'>{vfs}</capability>",
        )
    )
    pf_name = "pci_" + SRIOV_PF.replace(":", "_").replace(".", "_")
    for i, vf in enumerate(SRIOV_VFS):
        parts.append(
            _pci_xml(
                vf,
                "0x020000",
                (*intel, "0x10ed", "82599 Ethernet Controller Virtual Function"),
                90 + i,
                f"<capability type='phys_function'>{_addr(SRIOV_PF)}</capability>",
                parent=pf_name,
            )
        )
    return "".join(parts)
