"""Operation requests: what an operator asked for, before any backend has checked it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from backends.models import JobKind


class LifecycleAction(StrEnum):
    START = "start"
    SHUTDOWN = "shutdown"
    REBOOT = "reboot"
    FORCE_OFF = "force-off"
    PAUSE = "pause"
    RESUME = "resume"

    @property
    def destructive(self) -> bool:
        return self in (LifecycleAction.SHUTDOWN, LifecycleAction.REBOOT, LifecycleAction.FORCE_OFF)


@dataclass(frozen=True, slots=True)
class MigrateRequest:
    vm: str
    to_host: str
    bandwidth_mib_s: int | None = None
    auto_converge: bool = False
    postcopy: bool = False
    kind = JobKind.MIGRATE


@dataclass(frozen=True, slots=True)
class HandoffRequest:
    device: str  # PCI address or backend device name
    to: str  # a VM name, or "host" for the host's driver stack
    host: str | None = None  # disambiguates a device address present on several hosts
    kind = JobKind.HANDOFF


@dataclass(frozen=True, slots=True)
class RebalanceRequest:
    vm: str
    vnode: int
    to_cell: int | None = None
    memory_kib: int | None = None
    kind = JobKind.REBALANCE


@dataclass(frozen=True, slots=True)
class LifecycleRequest:
    vm: str
    action: LifecycleAction
    host: str | None = None  # disambiguates a VM name present on several hosts
    kind = JobKind.LIFECYCLE


@dataclass(frozen=True, slots=True)
class ReplicateRequest:
    """Enable replication to a recovery host or site (``to``), or sync an existing link (``to`` None)."""

    vm: str
    to: str | None = None
    rpo_s: float = 300.0
    kind = JobKind.REPLICATE


@dataclass(frozen=True, slots=True)
class FailoverRequest:
    """Start the VM at its recovery site: on a throwaway overlay (test), or for real (planned)."""

    vm: str
    test: bool = True
    kind = JobKind.FAILOVER


@dataclass(frozen=True, slots=True)
class DetachRequest:
    """S1: remove a direct-assigned device from a VM; an image keeps answering for it."""

    vm: str
    device: str  # host PCI address or backend device name
    host: str | None = None
    kind = JobKind.DETACH


@dataclass(frozen=True, slots=True)
class AttachRequest:
    """S1: give a VM matching hardware on its host, restoring the device from its image."""

    vm: str
    device: str  # host PCI address or backend device name of the hardware to attach
    host: str | None = None
    kind = JobKind.ATTACH


@dataclass(frozen=True, slots=True)
class DeviceOpRequest:
    """S7: a device operation (flr, bus-reset, …) that the policy authority permits, denies or translates."""

    device: str
    op: str
    host: str | None = None
    kind = JobKind.DEVICE_OP


@dataclass(frozen=True, slots=True)
class BalloonRequest:
    """S3: set a running VM's current memory (the balloon target)."""

    vm: str
    memory_kib: int
    host: str | None = None
    kind = JobKind.BALLOON


@dataclass(frozen=True, slots=True)
class ServiceMoveRequest:
    """S8: move a storage service to another host, keeping its network identifier."""

    service: str
    to_host: str
    kind = JobKind.SERVICE_MOVE


Request = (MigrateRequest | HandoffRequest | RebalanceRequest | LifecycleRequest | ReplicateRequest
           | FailoverRequest | DetachRequest | AttachRequest | DeviceOpRequest | BalloonRequest
           | ServiceMoveRequest)
