"""The backend contract shared by the simulator and libvirt.

A backend manages a set of hosts. It yields full snapshots (``Inventory``), tells watchers
that something changed, and turns a request into an ``Operation``: ``prepare`` validates
everything and changes nothing; ``Operation.run`` then does the work as a job, emitting
progress events and returning the final result. Calls may block (libvirt does); callers run
them off any UI loop.
"""

from __future__ import annotations

import importlib
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from backends.errors import BadInput, NotFound, ReadOnly, Unsupported
from backends.models import Inventory, Job, JobEvent, JobKind, JobResult, PciDevice, Vm
from backends.requests import Request


class Capability(StrEnum):
    INVENTORY = "inventory"
    EVENTS = "events"
    LIFECYCLE = "lifecycle"
    MIGRATE = "migrate"
    HANDOFF = "handoff"
    REBALANCE = "rebalance"
    REPLICATE = "replicate"
    FAILOVER = "failover"
    DEVICES = "devices"  # S1 detach/attach with backing images
    DEVICE_OP = "device-op"  # S7
    BALLOON = "balloon"  # S3
    SERVICES = "services"  # S8


MUTATING = frozenset(
    {
        Capability.LIFECYCLE,
        Capability.MIGRATE,
        Capability.HANDOFF,
        Capability.REBALANCE,
        Capability.REPLICATE,
        Capability.FAILOVER,
        Capability.DEVICES,
        Capability.DEVICE_OP,
        Capability.BALLOON,
        Capability.SERVICES,
    }
)

_CAPABILITY_OF_KIND = {
    JobKind.MIGRATE: Capability.MIGRATE,
    JobKind.HANDOFF: Capability.HANDOFF,
    JobKind.REBALANCE: Capability.REBALANCE,
    JobKind.REPLICATE: Capability.REPLICATE,
    JobKind.FAILOVER: Capability.FAILOVER,
    JobKind.LIFECYCLE: Capability.LIFECYCLE,
    JobKind.DETACH: Capability.DEVICES,
    JobKind.ATTACH: Capability.DEVICES,
    JobKind.DEVICE_OP: Capability.DEVICE_OP,
    JobKind.BALLOON: Capability.BALLOON,
    JobKind.SERVICE_MOVE: Capability.SERVICES,
}


@dataclass(frozen=True, slots=True)
class Change:
    """Something changed on ``host`` (None: anywhere); ``what`` is host, vm, device or job."""

    what: str
    host: str | None = None
    name: str | None = None


Emit = Callable[[JobEvent], None]
_job_numbers = itertools.count(1)


def new_job(kind: JobKind, targets: tuple[str, ...], phases: tuple[str, ...], description: str) -> Job:
    """A job with a process-unique id such as ``migrate-3``."""
    return Job(f"{kind.value}-{next(_job_numbers)}", kind, targets, phases, description)
Watcher = Callable[[Change], None]


def find_vm(inv: Inventory, name: str, host: str | None = None) -> Vm:
    """The VM called ``name`` (on ``host`` if given); names may repeat across hosts."""
    found = [v for v in inv.vms if v.name == name and (host is None or v.host == host)]
    if not found:
        where = f" on {host}" if host else ""
        raise NotFound(f"no VM called {name!r}{where}", hint="see `hvc inventory` for the VMs")
    if len(found) > 1:
        active = [v for v in found if v.active]
        if len(active) == 1:
            return active[0]
        raise BadInput(f"{name!r} exists on {', '.join(v.host for v in found)}", hint="say which host")
    return found[0]


def find_device(inv: Inventory, wanted: str, host: str | None = None) -> PciDevice:
    """The PCI device with address or backend name ``wanted`` (on ``host`` if given)."""
    if host is not None and inv.host(host) is None:
        raise NotFound(f"no host called {host!r}", hint="see `hvc inventory` for the hosts")
    key = wanted.lower()
    found = [d for d in inv.devices
             if key in (d.address, (d.name or "").lower()) and (host is None or d.host == host)]
    if not found:
        where = f" on {host}" if host else ""
        raise NotFound(f"no PCI device {wanted!r}{where}", hint="see `hvc inventory` for the devices")
    if len(found) > 1:
        raise BadInput(f"{wanted} exists on {', '.join(d.host for d in found)}", hint="say which with --host")
    return found[0]


class Operation(ABC):
    """A validated operation, ready to run once as a job."""

    def __init__(self, job: Job) -> None:
        self.job = job

    @abstractmethod
    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        """Do the work, emitting progress; on failure or cancel leave a known state."""


class Backend(ABC):
    """What every backend provides; see the module docstring."""

    name: str = "backend"
    capabilities: frozenset[Capability] = frozenset({Capability.INVENTORY})
    policy_dir: Path | None = None  # S7: the operator's device policies, replacing shipped ones by name

    def __init__(self, *, read_only: bool = False) -> None:
        self.read_only = read_only
        self._watchers: list[Watcher] = []
        self._watch_lock = threading.Lock()

    # -- inventory ---------------------------------------------------------------------

    @abstractmethod
    def snapshot(self) -> Inventory:
        """The latest full snapshot (cheap: served from what was last refreshed)."""

    @abstractmethod
    def refresh(self) -> Inventory:
        """Poll every host now and return the new snapshot."""

    # -- change events -----------------------------------------------------------------

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` (from any thread) on each change; returns an unsubscribe."""
        with self._watch_lock:
            self._watchers.append(watcher)

        def unwatch() -> None:
            with self._watch_lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)

        return unwatch

    def _notify(self, change: Change) -> None:
        with self._watch_lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher(change)

    # -- operations --------------------------------------------------------------------

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def prepare(self, request: Request) -> Operation:
        """Check ``request`` against capabilities, read-only mode and the current state."""
        capability = _CAPABILITY_OF_KIND[request.kind]
        if capability not in self.capabilities:
            raise Unsupported(
                f"the {self.name} backend cannot {request.kind.value}",
                hint="use a backend that supports it (see `hvc inventory --json` capabilities)",
            )
        if self.read_only and capability in MUTATING:
            raise ReadOnly(
                f"refusing to {request.kind.value}: the connection is read-only",
                hint="run without --read-only to make changes",
            )
        return self._prepare(request)

    # Request type → the Operation class that checks and runs it, per backend (see ``lazy_operation``).
    operations: ClassVar[dict[type, Callable[[Any, Any], Operation]]] = {}

    def _prepare(self, request: Request) -> Operation:
        make = self.operations.get(type(request))
        if make is None:
            raise Unsupported(f"the {self.name} backend cannot {request.kind.value}")
        return make(self, request)

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections and threads; the backend is unusable afterwards."""


def lazy_operation(module: str, name: str) -> Callable[[Any, Any], Operation]:
    """An operation factory that imports ``module`` on its first use and builds ``name`` from it:
    what only reads (``hvc inventory``, the console's start) does not pay for importing them all."""

    def make(backend: Any, request: Any) -> Operation:
        cls: Callable[[Any, Any], Operation] = getattr(importlib.import_module(module), name)
        return cls(backend, request)

    make.__qualname__ = make.__name__ = name
    return make
