"""The domain model: frozen dataclasses every backend returns and every view reads.

No libvirt objects, XML or Textual types cross this boundary. Memory is in KiB (libvirt's
unit), disk sizes in bytes, times in seconds since the epoch. ``None`` means "this host
cannot tell us", and views show it as unknown rather than inventing a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class SiteRole(StrEnum):
    PRIMARY = "primary"
    RECOVERY = "recovery"


class HostState(StrEnum):
    CONNECTED = "connected"
    LOST = "lost"


class VmState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    SUSPENDED = "suspended"
    MIGRATING = "migrating"
    UNKNOWN = "unknown"


_ACTIVE = frozenset({VmState.RUNNING, VmState.PAUSED, VmState.MIGRATING})  # a set: a tuple compares as strings


class OwnerKind(StrEnum):
    HOST = "host"  # bound to the host's own driver stack
    VFIO = "vfio"  # detached from the host, bound to vfio-pci, owned by no VM
    UNBOUND = "unbound"  # no driver at all
    VM = "vm"  # assigned to a guest


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    role: SiteRole


@dataclass(frozen=True, slots=True)
class Cpu:
    id: int
    socket: int | None = None
    core: int | None = None
    siblings: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class HugePages:
    size_kib: int
    total: int
    free: int | None = None


@dataclass(frozen=True, slots=True)
class NumaCell:
    id: int
    cpus: tuple[Cpu, ...]
    memory_kib: int
    free_kib: int | None = None
    hugepages: tuple[HugePages, ...] = ()
    # (other cell id, distance) pairs, including this cell itself (conventionally 10).
    distances: tuple[tuple[int, int], ...] = ()

    @property
    def cpu_ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.cpus)

    def distance_to(self, cell_id: int) -> int | None:
        return next((d for c, d in self.distances if c == cell_id), None)


@dataclass(frozen=True, slots=True)
class Host:
    """One hypervisor. ``name`` is unique in an inventory; ``hostname`` is what it reports."""

    name: str
    uri: str
    site: str
    cpu_model: str | None
    threads: int
    memory_kib: int
    state: HostState = HostState.CONNECTED
    numa: tuple[NumaCell, ...] = ()
    hostname: str | None = None
    hypervisor: str | None = None  # e.g. "QEMU 7.2.0"
    error: str | None = None  # why the host is lost, when it is

    @property
    def free_kib(self) -> int | None:
        frees = [c.free_kib for c in self.numa]
        if not frees or any(f is None for f in frees):
            return None
        return sum(f for f in frees if f is not None)


@dataclass(frozen=True, slots=True)
class CellShare:
    """Part of a vNUMA cell's memory placed on one physical cell; ``None`` when unknown."""

    cell: int
    memory_kib: int | None = None


@dataclass(frozen=True, slots=True)
class VNumaCell:
    id: int
    vcpus: tuple[int, ...]
    memory_kib: int
    backing: tuple[CellShare, ...] = ()  # empty: the host decides, placement unknown

    @property
    def backing_cells(self) -> tuple[int, ...]:
        return tuple(s.cell for s in self.backing)


@dataclass(frozen=True, slots=True)
class VcpuPin:
    vcpu: int
    cpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DeviceImage:
    """S1: a removed device's state kept as an image that answers the guest's reads as the hardware did.

    It belongs to the VM and travels with it (on libvirt: in the domain's ``<metadata>``, which
    migrates with the domain XML); attaching matching hardware restores the device from it.
    """

    address: str  # the guest-visible address the device had
    vendor: str | None
    product: str | None
    device_class: str | None
    source_host: str  # where the hardware was when the image was captured
    source_address: str  # the host PCI address it was captured from
    captured_at: float
    registers: str = ""  # captured register/config-space state, hex
    mmio_bytes: int = 0  # size of the MMIO window the image answers for


@dataclass(frozen=True, slots=True)
class Residency:
    """S3: a VM's memory as the hypervisor holds it; ``None`` fields: the host cannot tell."""

    resident_kib: int | None  # pages the hypervisor has resident for the guest
    pinned_kib: int | None  # pages pinned for DMA (all of it for a VFIO guest)
    dma_in_flight: int = 0  # transfers running now
    refused_reclaims: int = 0  # reclaims (balloon, swap) refused because their pages were pinned
    locked: bool = False  # the guest's memory is locked: the host cannot reclaim any of it


@dataclass(frozen=True, slots=True)
class Vm:
    name: str
    uuid: str
    host: str
    state: VmState
    vcpus: int
    memory_kib: int
    max_memory_kib: int | None = None
    vnuma: tuple[VNumaCell, ...] = ()
    pinning: tuple[VcpuPin, ...] = ()
    # Host-wide memory placement from <numatune><memory nodeset=… mode=…>; empty when unset.
    memory_nodeset: tuple[int, ...] = ()
    memory_mode: str | None = None  # strict, interleave, preferred, restrictive
    hugepages: bool = False  # guest memory backed by hugepages
    devices: tuple[str, ...] = ()  # PCI addresses of direct-assigned host devices
    disks: tuple[str, ...] = ()  # disk targets (vda, sdb, …)
    persistent: bool = True
    device_images: tuple[DeviceImage, ...] = ()  # S1: removed devices it still answers for
    residency: Residency | None = None  # S3

    @property
    def active(self) -> bool:
        """Running or paused: its memory is resident on the host."""
        return self.state in _ACTIVE

    def memory_by_cell(self) -> dict[int, int] | None:
        """KiB of this VM's memory on each physical cell, or None when the host cannot tell."""
        out: dict[int, int] = {}
        if self.vnuma:
            for node in self.vnuma:
                if len(node.backing) == 1 and node.backing[0].memory_kib is None:
                    out[node.backing[0].cell] = out.get(node.backing[0].cell, 0) + node.memory_kib
                    continue
                if not node.backing or any(s.memory_kib is None for s in node.backing):
                    return None
                for share in node.backing:
                    out[share.cell] = out.get(share.cell, 0) + (share.memory_kib or 0)
            return out
        if len(self.memory_nodeset) == 1:
            return {self.memory_nodeset[0]: self.memory_kib}
        return None

    def pinned_cpus(self) -> tuple[int, ...]:
        return tuple(sorted({c for pin in self.pinning for c in pin.cpus})) if self.pinning else ()


@dataclass(frozen=True, slots=True)
class Owner:
    kind: OwnerKind
    vm: str | None = None
    driver: str | None = None

    def __str__(self) -> str:
        if self.kind is OwnerKind.VM:
            return f"vm:{self.vm}"
        return f"{self.kind.value}:{self.driver}" if self.driver else self.kind.value


@dataclass(frozen=True, slots=True)
class PciDevice:
    address: str  # domain:bus:slot.function, e.g. 0000:3b:00.0
    host: str
    vendor: str | None
    product: str | None
    device_class: str | None  # e.g. "0x030000" or "VGA compatible controller"
    driver: str | None
    iommu_group: int | None
    owner: Owner
    physfn: str | None = None  # set on an SR-IOV virtual function
    vfs: tuple[str, ...] = ()  # set on an SR-IOV physical function
    name: str | None = None  # backend name, e.g. libvirt's pci_0000_3b_00_0
    numa_node: int | None = None  # the host cell the device is attached to

    @property
    def is_vf(self) -> bool:
        return self.physfn is not None


@dataclass(frozen=True, slots=True)
class DiskLayer:
    path: str
    format: str | None  # qcow2, raw, …; None when the host does not say
    virtual_bytes: int | None = None
    allocated_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class DiskChain:
    """One VM disk: layers ordered from the base to the active top."""

    vm: str
    host: str
    disk: str
    layers: tuple[DiskLayer, ...]

    @property
    def active(self) -> DiskLayer:
        return self.layers[-1]

    @property
    def base(self) -> DiskLayer:
        return self.layers[0]


class LayerState(StrEnum):
    PRESENT = "present"
    SHIPPING = "shipping"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class ReplicaLink:
    """A disk chain replicated to a recovery host; ``layer_states`` follows the primary layers."""

    vm: str
    disk: str
    primary_host: str
    replica_host: str
    primary: DiskChain
    replica: DiskChain
    layer_states: tuple[LayerState, ...]
    last_sync: float | None
    lag_s: float | None
    rpo_s: float

    @property
    def rpo_violated(self) -> bool:
        return self.lag_s is None or self.lag_s > self.rpo_s


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    path: str
    format: str | None
    capacity_bytes: int | None
    allocated_bytes: int | None
    backing: str | None = None  # path of the volume it is an overlay of


@dataclass(frozen=True, slots=True)
class StoragePool:
    name: str
    host: str
    kind: str | None  # dir, logical, netfs, …
    path: str | None
    capacity_bytes: int | None
    available_bytes: int | None
    volumes: tuple[Volume, ...] = ()


@dataclass(frozen=True, slots=True)
class StorageService:
    """S8: a VM exporting storage, bound to a network identifier carried on an SR-IOV VF.

    The identifier (a MAC address or WWN) stays with the service when it moves: the VF on the
    source is released, the service moves, and a VF on the destination takes the identifier.
    """

    name: str
    vm: str
    host: str
    identifier: str
    vf: str | None  # PCI address of the VF carrying it now; None while it moves
    protocol: str = "iscsi"  # iscsi, nvme-tcp, nfs, …


@dataclass(frozen=True, slots=True)
class Inventory:
    """A full snapshot of everything one backend manages."""

    sites: tuple[Site, ...]
    hosts: tuple[Host, ...]
    vms: tuple[Vm, ...]
    devices: tuple[PciDevice, ...]
    chains: Sequence[DiskChain]  # the simulator's are made when first read
    replicas: tuple[ReplicaLink, ...] = ()
    taken_at: float = 0.0
    pools: Sequence[StoragePool] = ()  # the simulator's too
    services: tuple[StorageService, ...] = ()  # S8
    # (host, VM name) → CPU time the running VM has used, in ns; absent when not known. A counter
    # that moves on every refresh, kept apart from the VMs so an unchanged VM stays the same object
    # from one snapshot to the next (views and analysis skip what is identical).
    cpu_time_ns: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def host(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)

    def vm(self, name: str) -> Vm | None:
        return next((v for v in self.vms if v.name == name), None)

    def vms_on(self, host: str) -> tuple[Vm, ...]:
        return tuple(v for v in self.vms if v.host == host)

    def devices_on(self, host: str) -> tuple[PciDevice, ...]:
        return tuple(d for d in self.devices if d.host == host)


# --- jobs -------------------------------------------------------------------------------


class JobKind(StrEnum):
    MIGRATE = "migrate"
    HANDOFF = "handoff"
    REBALANCE = "rebalance"
    REPLICATE = "replicate"
    FAILOVER = "failover"
    LIFECYCLE = "lifecycle"
    DETACH = "detach"  # S1: remove a device from a VM, leaving a backing image
    ATTACH = "attach"  # S1: attach hardware to a VM, restoring it from its image
    DEVICE_OP = "device-op"  # S7: a device operation under the policy authority
    BALLOON = "balloon"  # S3: change a running VM's memory
    SERVICE_MOVE = "service-move"  # S8: move a storage service, keeping its identifier


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: JobKind
    targets: tuple[str, ...]  # the VMs, devices and hosts it touches, for conflict checks
    phases: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Progress:
    """One sample of a job draining its queue; counts are in ``unit`` (pages, requests, bytes)."""

    job_id: str
    phase: str
    done: int
    remaining: int
    unit: str
    held: int = 0
    rate: float | None = None  # units per second
    eta_s: float | None = None
    at: float = 0.0
    detail: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        total = self.done + self.remaining
        return 1.0 if total <= 0 else min(1.0, max(0.0, self.done / total))


@dataclass(frozen=True, slots=True)
class PhaseChanged:
    job_id: str
    phase: str
    message: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class JobResult:
    job_id: str
    outcome: Outcome
    reason: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def duration_s(self) -> float:
        return max(0.0, self.finished_at - self.started_at)


JobEvent = Progress | PhaseChanged | JobResult


@dataclass(frozen=True, slots=True)
class LocalNode:
    """One NUMA node of the machine hvc runs on, as the kernel reports it."""

    id: int
    cpus: tuple[int, ...]
    memory_kib: int | None
    free_kib: int | None
    cpu_percent: float | None


@dataclass(frozen=True, slots=True)
class LocalStats:
    """The machine hvc runs on, seen by psutil and sysfs rather than libvirt."""

    hostname: str
    cpu_percent: float
    cpus: int
    memory_kib: int
    available_kib: int
    nodes: tuple[LocalNode, ...] = ()
