"""Turn a ``FleetSpec`` into model objects: CPU numbering, pinning, devices, chains, replicas.

Everything derives from the spec and its seed, so the same spec always yields the same
datacenter; times are offsets from the injected clock's ``now``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace

from backends import images
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
    VNumaCell,
)
from backends.sim.chains import Chains, Recipe
from backends.sim.spec import DeviceSpec, DiskSpec, FleetSpec, HostSpec, VmSpec

GIB = 1024 * 1024


@dataclass
class ReplicaState:
    """Mutable replication bookkeeping for one disk: which primary layers the replica has."""

    vm: str
    disk: str
    to: str
    rpo_s: float
    last_sync: float
    present: int  # primary layers 0..present-1 are at the replica
    shipping: bool
    # Content checksums of the replica's layers as written there, compared after each sync.
    sums: list[str] = field(default_factory=list)


@dataclass
class BuiltFleet:
    cells: dict[str, tuple[NumaCell, ...]]  # per host, free memory not yet computed
    vms: dict[str, Vm]
    devices: dict[tuple[str, str], PciDevice]
    chains: Chains  # each made when first looked up
    replicas: dict[tuple[str, str], ReplicaState]
    boot: dict[str, tuple[float, float]]  # vm → (boot time, mean CPU utilisation)
    services: dict[str, StorageService] = field(default_factory=dict)  # S8, by name


def build(spec: FleetSpec, now: float) -> BuiltFleet:
    shapes: dict[tuple[object, ...], tuple[NumaCell, ...]] = {}  # hosts alike share their (frozen) cells
    cells = {}
    for h in spec.hosts:
        shape = (h.cells, h.smt, h.sockets, h.distances)  # all that host_cells reads
        if shape not in shapes:
            shapes[shape] = host_cells(h)
        cells[h.name] = shapes[shape]
    cursors = {h.name: [0] * len(h.cells) for h in spec.hosts}
    devices = {}
    owned: dict[str, list[str]] = {}  # VM → the addresses of the devices it owns, in spec order
    for d in spec.devices:
        for dev in make_devices(d):
            devices[(dev.host, dev.address)] = dev
            if dev.owner.vm:
                owned.setdefault(dev.owner.vm, []).append(dev.address)
    vms: dict[str, Vm] = {}
    boot: dict[str, tuple[float, float]] = {}
    recipes: dict[tuple[str, str], Recipe] = {}
    for v in spec.vms:
        layers = sum(1 + d.overlays for d in v.disks)
        drawn = _draws(f"{spec.seed}:{v.name}", _VM_DRAWS.size + _LAYER_DRAW.size * layers)
        uuid, booted, util = _VM_DRAWS.unpack_from(drawn)
        vms[v.name] = make_vm(v, cells[v.host], cursors[v.host], _uuid(uuid), tuple(owned.get(v.name, ())))
        boot[v.name] = (now - _between(booted, 3_600, 90 * 86_400), _between(util, 0.05, 0.85))
        at = _VM_DRAWS.size
        for disk in v.disks:
            recipes[(v.name, disk.target)] = (make_chain, (v, disk, drawn, at))
            at += _LAYER_DRAW.size * (1 + disk.overlays)
    chains = Chains(recipes)
    for v in spec.vms:
        if v.images:
            taken = tuple(
                images.capture(held, f"0000:00:{0x10 + len(vms[v.name].devices) + i:02x}.0",
                               images.synthetic_registers(held), now - m.age_s)
                for i, m in enumerate(v.images) if (held := devices.get((m.host, m.address))) is not None
            )
            vms[v.name] = replace(vms[v.name], device_images=taken)
    replicas: dict[tuple[str, str], ReplicaState] = {}
    for v in spec.vms:
        if v.replica is None:
            continue
        for disk in v.disks:
            chain = chains[(v.name, disk.target)]
            state = replicas[(v.name, disk.target)] = ReplicaState(
                vm=v.name, disk=disk.target, to=v.replica.to, rpo_s=v.replica.rpo_s,
                last_sync=now - v.replica.lag_s,
                present=max(1, len(chain.layers) - v.replica.missing),
                shipping=v.replica.shipping and v.replica.missing > 0,
            )
            state.sums = [layer_sum(layer) for layer in chain.layers[: state.present]]
    services = {}
    for svc in spec.services:
        vm = vms[svc.vm]
        vf = next(a for a in vm.devices if devices[(vm.host, a)].is_vf)
        services[svc.name] = StorageService(svc.name, vm.name, vm.host, svc.identifier, vf, svc.protocol)
    return BuiltFleet(cells, vms, devices, chains, replicas, boot, services)


def layer_sum(layer: DiskLayer) -> str:
    """The simulator's content checksum of a layer: its identity and size stand for its bytes."""
    return hashlib.sha256(f"{layer.path}:{layer.allocated_bytes}".encode()).hexdigest()[:16]


def host_cells(h: HostSpec) -> tuple[NumaCell, ...]:
    """Linux-style numbering: first threads of every core, then their SMT siblings."""
    cores = [c.cpus // h.smt for c in h.cells]
    total_cores = sum(cores)
    sockets = h.sockets or len(h.cells)
    out = []
    offset = 0
    for i, c in enumerate(h.cells):
        socket = i * sockets // len(h.cells)
        cpus = []
        for t in range(h.smt):
            for k in range(offset, offset + cores[i]):
                siblings = tuple(k + s * total_cores for s in range(h.smt))
                cpus.append(Cpu(id=k + t * total_cores, socket=socket, core=k, siblings=siblings))
        offset += cores[i]
        pages = []
        if c.hugepages_2m:
            pages.append(HugePages(2048, c.hugepages_2m, c.hugepages_2m))
        if c.hugepages_1g:
            pages.append(HugePages(GIB, c.hugepages_1g, c.hugepages_1g))
        out.append(NumaCell(
            id=i, cpus=tuple(sorted(cpus, key=lambda cpu: cpu.id)), memory_kib=c.memory_kib,
            free_kib=None, hugepages=tuple(pages), distances=_distances(h, i),
        ))
    return tuple(out)


def _distances(h: HostSpec, i: int) -> tuple[tuple[int, int], ...]:
    row = h.distances[i] if h.distances else tuple(10 if j == i else 21 for j in range(len(h.cells)))
    return tuple(enumerate(row))


def make_vm(v: VmSpec, cells: tuple[NumaCell, ...], cursors: list[int], uuid: str,
            devices: tuple[str, ...] = ()) -> Vm:
    if not v.vnuma and not v.pinned:  # most VMs: nothing to lay out
        return Vm(v.name, uuid, v.host, v.state, v.vcpus, v.memory_kib, v.memory_kib * 3 // 2,
                  memory_nodeset=_ON_CELL[v.cell] if v.cell < len(_ON_CELL) else (v.cell,), devices=devices,
                  disks=_targets(v.disks))
    vnuma: list[VNumaCell] = []
    pins: list[VcpuPin] = []
    next_vcpu = 0
    groups: list[tuple[int, int]] = []  # (cell for vCPUs, count)
    for i, node in enumerate(v.vnuma):
        share = node.memory_kib // len(node.cells)
        backing = tuple(
            CellShare(c, share + (node.memory_kib - share * len(node.cells) if j == 0 else 0))
            for j, c in enumerate(node.cells)
        )
        vnuma.append(VNumaCell(i, tuple(range(next_vcpu, next_vcpu + node.vcpus)), node.memory_kib, backing))
        groups.append((node.cells[0], node.vcpus))
        next_vcpu += node.vcpus
    if not v.vnuma:
        groups.append((v.cpu_cell if v.cpu_cell is not None else v.cell, v.vcpus))
    if v.pinned:
        vcpu = 0
        for cell, count in groups:
            ids = cells[cell].cpu_ids
            for _ in range(count):
                pins.append(VcpuPin(vcpu, (ids[cursors[cell] % len(ids)],)))
                cursors[cell] += 1
                vcpu += 1
    return Vm(
        name=v.name, uuid=uuid, host=v.host, state=v.state, vcpus=v.vcpus,
        memory_kib=v.memory_kib, max_memory_kib=v.memory_kib * 3 // 2, vnuma=tuple(vnuma),
        pinning=tuple(pins), memory_nodeset=() if v.vnuma else (v.cell,), devices=devices, disks=_targets(v.disks),
    )


_ON_CELL = tuple((cell,) for cell in range(8))  # VMs on one cell share its (immutable) nodeset


def _targets(disks: tuple[DiskSpec, ...]) -> tuple[str, ...]:
    return tuple(d.target for d in disks)


# What a VM draws (its UUID's 128 bits, when it booted, how busy it is, then how full each layer of
# its disks is), from a hash of the seed and its name: the same on every build, whatever else the
# fleet holds, and cheaper than seeding a Mersenne Twister for each (at 10,000 VMs, 0.15 s of start).
_VM_DRAWS = struct.Struct("<16sQQ")
_LAYER_DRAW = struct.Struct("<Q")


def _draws(key: str, size: int) -> bytes:
    return hashlib.shake_128(key.encode()).digest(size)


def _between(draw: int, low: float, high: float) -> float:
    """A 64-bit draw as a float evenly in [low, high)."""
    return low + (high - low) * (draw / 2**64)


def _uuid(draw: bytes) -> str:
    h = draw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def make_devices(d: DeviceSpec) -> list[PciDevice]:
    domain, bus, _ = d.address.split(":")
    vf_addresses = tuple(f"{domain}:{bus}:{1 + i // 8:02x}.{i % 8}" for i in range(d.vfs))
    pf = PciDevice(
        address=d.address, host=d.host, vendor=d.vendor, product=d.product,
        device_class=d.device_class, driver=d.driver, iommu_group=d.iommu_group,
        owner=_owner(d.owner, d.driver), vfs=vf_addresses,
    )
    out = [pf]
    for i, address in enumerate(vf_addresses):
        vm = d.vf_owners.get(i)
        driver = "vfio-pci" if vm else d.vf_driver
        out.append(PciDevice(
            address=address, host=d.host, vendor=d.vendor, product=f"{d.product} Virtual Function",
            device_class=d.device_class, driver=driver, iommu_group=d.iommu_group + 1 + i,
            owner=_owner(vm or "host", driver), physfn=d.address,
        ))
    return out


def _owner(owner: str, driver: str) -> Owner:
    if owner == "host":
        return Owner(OwnerKind.HOST, driver=driver)
    if owner == "vfio":
        return Owner(OwnerKind.VFIO, driver=driver)
    return Owner(OwnerKind.VM, vm=owner, driver=driver)


def make_chain(v: VmSpec, disk: DiskSpec, drawn: bytes, at: int) -> DiskChain:
    """``disk``'s base and overlays, how full each is from the 64-bit draws in ``drawn`` at ``at``."""
    fills = (d for (d,) in _LAYER_DRAW.iter_unpack(drawn[at:at + _LAYER_DRAW.size * (1 + disk.overlays)]))
    size = disk.size_kib * 1024
    path = f"/var/lib/libvirt/images/{v.name}/{disk.target}-"
    layers = [DiskLayer(f"{path}base.qcow2", "qcow2", size, int(size * _between(next(fills), 0.25, 0.7)))]
    for i in range(disk.overlays):
        name = "active" if i == disk.overlays - 1 else f"d{i + 1}"
        layers.append(DiskLayer(f"{path}{name}.qcow2", "qcow2", size, int(size * _between(next(fills), 0.005, 0.08))))
    return DiskChain(vm=v.name, host=v.host, disk=disk.target, layers=tuple(layers))
