"""Real hypervisors through libvirt: one ``HostConnection`` per URI, merged into one inventory.

Hosts are named by the hostname they report, or by their (redacted) URI where two hosts
report the same hostname, as two daemons on one machine do.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from types import TracebackType
from typing import Any, ClassVar

from backends.base import Backend, Capability, Change, Operation, lazy_operation
from backends.errors import BadInput, HostUnreachable
from backends.libvirt.connect import Opening, check_uri
from backends.libvirt.events import ensure_event_loop
from backends.libvirt.host import DomainEvent, HostConnection, HostView
from backends.libvirt.parse import resolve_owners
from backends.models import Host, HostState, Inventory, ReplicaLink, Site, SiteRole
from backends.requests import (
    AttachRequest,
    BalloonRequest,
    DetachRequest,
    DeviceOpRequest,
    FailoverRequest,
    HandoffRequest,
    LifecycleRequest,
    MigrateRequest,
    RebalanceRequest,
    ReplicateRequest,
    ServiceMoveRequest,
)
from backends.uri import redact

SITE = "default"
FIRST_LOAD_TIMEOUT_S = 20.0
REFRESH_TIMEOUT_S = 3.0
REPLICAS_EVERY_S = 30.0  # replica records live in volumes on other hosts: read them sparingly


class EventTap:
    """Domain events for one domain, queued from the moment the tap opens until it closes.

    Open it *before* the call whose event you wait for, so a fast event is not missed.
    Filled from libvirt's event-loop thread; read from the operation's thread.
    """

    def __init__(self, domain: str, kinds: frozenset[str], uris: frozenset[str], close: Callable[[EventTap], None]):
        self.domain, self.kinds, self.uris = domain, kinds, uris
        self._queue: queue.Queue[DomainEvent] = queue.Queue()
        self._close = close

    def offer(self, event: DomainEvent) -> None:
        if event.domain == self.domain and event.kind in self.kinds and (not self.uris or event.uri in self.uris):
            self._queue.put(event)

    def get(self, timeout: float = 0.0) -> DomainEvent | None:
        """The next event, waiting up to ``timeout`` seconds; None when none came."""
        try:
            return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def drain(self) -> list[DomainEvent]:
        out: list[DomainEvent] = []
        while (event := self.get()) is not None:
            out.append(event)
        return out

    def wait_for(self, predicate: Callable[[DomainEvent], bool], timeout: float,
                 cancel: threading.Event | None = None, poll_s: float = 0.2) -> DomainEvent | None:
        """The first event satisfying ``predicate`` within ``timeout`` (None: timed out or cancelled)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and not (cancel and cancel.is_set()):
            event = self.get(min(left, poll_s))
            if event is not None and predicate(event):
                return event
        return None

    def close(self) -> None:
        self._close(self)

    def __enter__(self) -> EventTap:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class LibvirtBackend(Backend):
    name = "libvirt"
    capabilities = frozenset({
        Capability.INVENTORY, Capability.EVENTS, Capability.LIFECYCLE,
        Capability.MIGRATE, Capability.HANDOFF, Capability.REBALANCE,
        Capability.REPLICATE, Capability.FAILOVER, Capability.DEVICE_OP, Capability.BALLOON,
        Capability.SERVICES, Capability.DEVICES,
    })
    operations: ClassVar[dict[type, Callable[[Any, Any], Operation]]] = {
        LifecycleRequest: lazy_operation("backends.libvirt.ops", "LibvirtLifecycle"),
        MigrateRequest: lazy_operation("backends.libvirt.migrate", "LibvirtMigrate"),
        HandoffRequest: lazy_operation("backends.libvirt.handoff", "LibvirtHandoff"),
        RebalanceRequest: lazy_operation("backends.libvirt.rebalance", "LibvirtRebalance"),
        ReplicateRequest: lazy_operation("backends.libvirt.replication", "LibvirtReplicate"),
        FailoverRequest: lazy_operation("backends.libvirt.replication", "LibvirtFailover"),
        DeviceOpRequest: lazy_operation("backends.libvirt.device_op", "LibvirtDeviceOp"),
        BalloonRequest: lazy_operation("backends.libvirt.balloon", "LibvirtBalloon"),
        ServiceMoveRequest: lazy_operation("backends.libvirt.services", "LibvirtServiceMove"),
        DetachRequest: lazy_operation("backends.libvirt.devices", "LibvirtDetach"),
        AttachRequest: lazy_operation("backends.libvirt.devices", "LibvirtAttach"),
    }

    def __init__(
        self, uris: tuple[str, ...] | list[str], *, read_only: bool = False, poll_s: float = 5.0,
        first_load_timeout_s: float = FIRST_LOAD_TIMEOUT_S, opened: dict[str, Opening] | None = None,
    ) -> None:
        """``opened``: connections already being opened (``connect.open_ahead``), by URI."""
        super().__init__(read_only=read_only)
        uris = tuple(check_uri(u) for u in uris)
        duplicates = [u for u, n in Counter(uris).items() if n > 1]
        if duplicates:
            raise BadInput(f"host {redact(duplicates[0])!r} is given twice", hint="give each URI once")
        ensure_event_loop()  # before any connection opens
        self._lock = threading.Lock()
        self._taps: list[EventTap] = []
        self._taps_lock = threading.Lock()
        self.hosts = [
            HostConnection(u, read_only=read_only, on_change=self._host_changed, on_event=self._dispatch,
                           poll_s=poll_s, opening=(opened or {}).get(u))
            for u in uris
        ]
        self._inventory = Inventory((), (), (), (), ())
        self._renamed: dict[tuple[str, str], tuple[tuple[Any, ...], str, tuple[Any, ...]]] = {}
        self._replicas: tuple[ReplicaLink, ...] = ()
        self._replicas_at = -REPLICAS_EVERY_S
        for host in self.hosts:
            host.start()
        deadline = time.monotonic() + first_load_timeout_s
        for host in self.hosts:
            host.first_attempt.wait(max(0.0, deadline - time.monotonic()))
        self._inventory = self._compose()

    def snapshot(self) -> Inventory:
        return self._inventory

    # -- domain events for operations ---------------------------------------------------

    def events(self, domain: str, kinds: Iterable[str], uris: Iterable[str] = ()) -> EventTap:
        """Open a tap on ``domain``'s events of ``kinds`` (e.g. "device_removed",
        "migration_iteration", "lifecycle") from the hosts with ``uris`` (all when empty).
        Use it as a context manager; see ``EventTap``."""
        tap = EventTap(domain, frozenset(kinds), frozenset(uris), self._untap)
        with self._taps_lock:
            self._taps.append(tap)
        return tap

    def _untap(self, tap: EventTap) -> None:
        with self._taps_lock:
            if tap in self._taps:
                self._taps.remove(tap)

    def _dispatch(self, event: DomainEvent) -> None:
        with self._taps_lock:
            taps = list(self._taps)
        for tap in taps:
            tap.offer(event)

    def refresh(self, timeout_s: float = REFRESH_TIMEOUT_S, *, replicas: bool | None = None) -> Inventory:
        """Refresh every host at once; a host slower than ``timeout_s`` keeps its last view.

        Replica status (pool listings and record downloads on every host) is re-read every
        ``REPLICAS_EVERY_S`` when ``replicas`` is None; now when it is True (replication
        operations, as they finish); not in this refresh when it is False (an operation that
        cannot have changed any replica status).
        """
        targets = [(h, h.request_refresh()) for h in self.hosts]
        deadline = time.monotonic() + timeout_s
        for host, generation in targets:
            if host.view.state is HostState.CONNECTED:
                host.wait_generation(generation, max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._inventory = self._compose()
        if replicas or (replicas is None and time.monotonic() - self._replicas_at > REPLICAS_EVERY_S):
            self._replicas_at = time.monotonic()
            from backends.libvirt.replication.status import replica_links

            found = replica_links(self, self._inventory)
            with self._lock:
                self._replicas = found
                self._inventory = replace(self._inventory, replicas=found)
        return self._inventory

    def host_for(self, name_or_uri: str) -> HostConnection | None:
        """The connection for a host name as shown, or for its URI."""
        names = self._names()
        return next((h for h in self.hosts if name_or_uri in (names[h.uri], h.uri)), None)

    def connected(self, name_or_uri: str, role: str = "") -> HostConnection:
        """The connected host called ``name_or_uri``, else HostUnreachable (``role``: e.g. "the source")."""
        host = self.host_for(name_or_uri)
        if host is None or host.connection is None:
            what = f"{name_or_uri} ({role})" if role else name_or_uri
            raise HostUnreachable(f"{what} is not connected", hint="wait for it to come back")
        return host

    def libvirt_calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for host in self.hosts:
            total.update(host.calls)
        return total

    def close(self) -> None:
        for host in self.hosts:
            host.close()

    # -- composing ---------------------------------------------------------------------

    def _host_changed(self, host: HostConnection) -> None:
        with self._lock:
            self._inventory = self._compose()
        self._notify(Change("host", host=self._names()[host.uri]))

    def _names(self) -> dict[str, str]:
        hostnames = Counter(h.view.hostname for h in self.hosts if h.view.hostname)
        return {
            h.uri: h.view.hostname if h.view.hostname and hostnames[h.view.hostname] == 1 else redact(h.uri)
            for h in self.hosts
        }

    def _compose(self) -> Inventory:
        names = self._names()
        views = [h.view for h in self.hosts]

        def named(field: str) -> tuple[Any, ...]:
            return tuple(x for v in views for x in self._named(v.uri, field, getattr(v, field), names[v.uri]))

        vms = named("vms")
        return Inventory(
            sites=(Site(SITE, SiteRole.PRIMARY),),
            hosts=tuple(_host(v, names[v.uri]) for v in views),
            vms=vms,
            devices=resolve_owners(named("devices"), vms),
            chains=named("chains"),
            pools=named("pools"),
            replicas=self._replicas,
            taken_at=time.time(),
            services=named("services"),
            cpu_time_ns={(names[v.uri], vm): used for v in views for vm, used in v.cpu_time_ns.items()},
        )

    def _named(self, uri: str, field: str, items: tuple[Any, ...], name: str) -> tuple[Any, ...]:
        """A host's ``items`` (VMs, chains, …) with ``host`` set to the name it is shown by: as they
        are, unless two hosts report the same hostname; kept while neither changes, as one host's
        change composes every host's again."""
        key = (uri, field)
        hit = self._renamed.get(key)
        if hit is None or hit[0] is not items or hit[1] != name:
            named = items if all(x.host == name for x in items) else tuple(replace(x, host=name) for x in items)
            hit = self._renamed[key] = (items, name, named)
        return hit[2]


def _host(view: HostView, name: str) -> Host:
    topology = view.topology
    cells = topology.cells if topology else ()
    if view.free_kib and len(view.free_kib) == len(cells):
        cells = tuple(replace(c, free_kib=f) for c, f in zip(cells, view.free_kib, strict=True))
    return Host(
        name=name, uri=redact(view.uri), site=SITE, cpu_model=topology.cpu_model if topology else None,
        threads=view.threads, memory_kib=view.memory_kib or 0, state=view.state, numa=cells,
        hostname=view.hostname, hypervisor=view.hypervisor, error=view.error,
    )
