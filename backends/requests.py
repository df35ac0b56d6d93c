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


Request = (MigrateRequest | HandoffRequest | RebalanceRequest | LifecycleRequest | ReplicateRequest
           | FailoverRequest)
