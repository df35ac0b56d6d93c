"""The validated description of a simulated datacenter, as read from a fleet file or generated."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.models import SiteRole, VmState


@dataclass(frozen=True, slots=True)
class CellSpec:
    cpus: int  # logical CPUs (threads) in the cell
    memory_kib: int
    hugepages_2m: int = 0
    hugepages_1g: int = 0


@dataclass(frozen=True, slots=True)
class HostSpec:
    name: str
    site: str
    cpu_model: str
    cells: tuple[CellSpec, ...]
    smt: int = 2
    sockets: int = 0  # 0: one socket per cell
    distances: tuple[tuple[int, ...], ...] = ()  # square matrix; empty: 10 local, 21 remote
    reserved_kib: int = 4 * 1024 * 1024  # kept by the host per cell
    overcommit: float = 1.0  # S3: above 1, guests may be promised more memory than the host has


@dataclass(frozen=True, slots=True)
class VNodeSpec:
    vcpus: int
    memory_kib: int
    cells: tuple[int, ...]  # physical cells backing it; several = split


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    to: str  # recovery host
    rpo_s: float = 300.0
    lag_s: float = 60.0
    missing: int = 0  # newest primary layers the replica lacks
    shipping: bool = False  # the first missing layer is being shipped


@dataclass(frozen=True, slots=True)
class DiskSpec:
    target: str
    size_kib: int
    overlays: int = 1  # differencing layers above the base


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """S1: the VM carries a backing image of this device (it was detached from it earlier)."""

    host: str
    address: str
    age_s: float = 86_400.0  # how long ago it was captured


@dataclass(frozen=True, slots=True)
class VmSpec:
    name: str
    host: str
    vcpus: int
    memory_kib: int
    state: VmState = VmState.RUNNING
    vnuma: tuple[VNodeSpec, ...] = ()
    cell: int = 0  # where the memory of a VM without vNUMA sits
    cpu_cell: int | None = None  # where its vCPUs run, when not with its memory
    pinned: bool = False
    disks: tuple[DiskSpec, ...] = ()
    replica: ReplicaSpec | None = None
    images: tuple[ImageSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    host: str
    address: str
    vendor: str
    product: str
    device_class: str
    driver: str
    iommu_group: int
    owner: str = "host"  # "host", "vfio", or a VM name
    vfs: int = 0  # SR-IOV virtual functions of this physical function
    vf_driver: str = "iavf"
    vf_owners: dict[int, str] = field(default_factory=dict)  # VF index → VM name


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """S8: a storage service exported by ``vm``, its identifier carried on the first VF the VM owns."""

    name: str
    vm: str
    identifier: str  # a locally administered unicast MAC, lower case
    protocol: str = "iscsi"


@dataclass(frozen=True, slots=True)
class SiteSpec:
    name: str
    role: SiteRole


@dataclass(frozen=True, slots=True)
class FleetSpec:
    sites: tuple[SiteSpec, ...]
    hosts: tuple[HostSpec, ...]
    vms: tuple[VmSpec, ...]
    devices: tuple[DeviceSpec, ...] = ()
    seed: int = 0
    name: str = "fleet"
    services: tuple[ServiceSpec, ...] = ()
