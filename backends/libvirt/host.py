"""One libvirt host: its own thread, connection, event subscriptions and cached inventory.

Each host refreshes in its own thread, so a slow or dead host never delays the others.
A refresh costs a constant number of calls whatever the number of domains: one
``getAllDomainStats`` and one ``getCellsFreeMemory``; domain XML is re-read only for
domains an event (or a state change seen in the stats) marked dirty. A dropped connection
marks the host lost and reconnects with exponential backoff.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import libvirt

from backends import gcpause
from backends.libvirt.ahead import in_order
from backends.libvirt.connect import Opening, open_connection
from backends.libvirt.ops import libvirt_reason
from backends.libvirt.parse import (
    DomainFacts,
    HostTopology,
    domain_root,
    parse_capabilities,
    parse_domain,
    parse_nodedev,
    parse_pool,
    parse_volume,
)
from backends.libvirt.residency import with_stats
from backends.libvirt.service_xml import parse_services
from backends.models import (
    DiskChain,
    DiskLayer,
    HostState,
    PciDevice,
    StoragePool,
    StorageService,
    Vm,
    VmState,
    Volume,
)
from backends.uri import redact

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: VmState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: VmState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VmState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: VmState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: VmState.RUNNING,
    libvirt.VIR_DOMAIN_SHUTOFF: VmState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: VmState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VmState.SUSPENDED,
}
_STATS = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
_DOMAIN_EVENTS = (
    "LIFECYCLE", "DEVICE_ADDED", "DEVICE_REMOVED", "JOB_COMPLETED", "MIGRATION_ITERATION", "BLOCK_JOB_2",
    "METADATA_CHANGE",
)
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class HostView:
    """What one host contributes to the inventory. VMs, chains, devices, pools and services carry the
    host's hostname as host (its URI until it is known): the name it is shown by, unless two hosts
    report the same hostname."""

    uri: str
    state: HostState
    hostname: str | None = None
    hypervisor: str | None = None
    topology: HostTopology | None = None
    free_kib: tuple[int | None, ...] = ()
    memory_kib: int | None = None
    threads: int = 0
    vms: tuple[Vm, ...] = ()
    chains: tuple[DiskChain, ...] = ()
    devices: tuple[PciDevice, ...] = ()
    pools: tuple[StoragePool, ...] = ()
    services: tuple[StorageService, ...] = ()  # S8
    error: str | None = None
    generation: int = 0
    cpu_time_ns: dict[str, int] = field(default_factory=dict)  # VM name → CPU time used, ns


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """A libvirt event about one domain, passed on for jobs that wait for one."""

    uri: str
    kind: str  # one of _DOMAIN_EVENTS, lower case
    domain: str
    args: tuple[Any, ...]


class HostConnection:
    def __init__(
        self,
        uri: str,
        *,
        read_only: bool,
        on_change: Callable[[HostConnection], None],
        on_event: Callable[[DomainEvent], None] = lambda _e: None,
        poll_s: float = 5.0,
        opening: Opening | None = None,
    ) -> None:
        self.uri = uri
        self.read_only = read_only
        self.poll_s = poll_s
        self.calls: Counter[str] = Counter()  # libvirt calls made, by name
        # virNodeGetCellsFreeMemory returns bytes, but libvirt's test driver returns KiB.
        self._free_unit = 1 if uri.startswith("test:") else 1024
        self.view = HostView(uri, HostState.LOST, error="connecting")
        self.first_attempt = threading.Event()
        self._on_change = on_change
        self._on_event = on_event
        self._conn: Any = None
        self._label = uri  # the host of what this host's refresh builds: its hostname once known
        self._opening = opening  # the first connection, opened ahead
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._fresh = threading.Condition()
        self._facts: dict[str, DomainFacts] = {}
        self._last_state: dict[str, VmState] = {}
        self._vms: dict[str, tuple[tuple[Any, ...], Vm]] = {}  # the VM built from these facts and stats
        self._dirty: set[str] = set()
        self._started = 0  # the generation the refresh under way (or the last one) will publish
        self._devices: tuple[PciDevice, ...] | None = None
        self._pools: tuple[StoragePool, ...] | None = None
        self._indexed: tuple[StoragePool, ...] | None = None
        self._index: dict[str, Volume] = {}
        self._sized_by_id: dict[int, tuple[DiskChain, DiskChain]] = {}  # id(chain) → (chain, sized)
        self._sized_from: dict[str, Volume] | None = None  # the volume index they were sized from
        self._thread = threading.Thread(target=self._run, name=f"host {redact(uri)}", daemon=True)

    # -- driving the thread ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def request_refresh(self) -> int:
        """Ask for a refresh now; returns the generation that will answer it: one that starts after
        this call (a refresh already under way may have read its domains before the request)."""
        with self._lock:
            target = self._started + 1
        self._wake.set()
        return target

    def wait_generation(self, generation: int, timeout: float) -> bool:
        with self._fresh:
            return self._fresh.wait_for(
                lambda: self.view.generation >= generation or self.view.state is HostState.LOST, timeout
            )

    @property
    def connection(self) -> Any:
        """The open virConnect (for operations), or None while the host is lost."""
        return self._conn

    def forget(self, uuid: str) -> None:
        """Re-read this domain's XML at the next refresh (an operation changed it)."""
        with self._lock:
            self._dirty.add(uuid)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._drop()

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            if self._conn is None:
                try:
                    self._connect()
                    backoff = 1.0
                except libvirt.libvirtError as exc:
                    self._lost(exc)
                    self.first_attempt.set()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
            with self._lock:
                self._wake.clear()  # a request from now on gets the next refresh
                self._started = self.view.generation + 1
            try:
                with gcpause.paused():
                    self._refresh()
            except libvirt.libvirtError as exc:
                if not self._alive():
                    self._lost(exc)
                    continue
                self._publish(replace(self.view, error=libvirt_reason(exc), generation=self.view.generation + 1))
            self.first_attempt.set()
            self._wake.wait(self.poll_s)

    # -- connection --------------------------------------------------------------------

    def _connect(self) -> None:
        self._count("open")
        opening, self._opening = self._opening, None
        conn = opening.take() if opening is not None else open_connection(self.uri, self.read_only)
        with self._lock:
            self._conn = conn
            self._facts.clear()
            self._devices = None
            self._pools = None
        self._subscribe(conn)
        # Local and test drivers have no keepalive; they cannot drop silently either.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(5, 3)

    def _subscribe(self, conn: Any) -> None:
        for name in _DOMAIN_EVENTS:
            event_id = getattr(libvirt, f"VIR_DOMAIN_EVENT_ID_{name}", None)
            if event_id is None:
                continue
            # A driver lacking this event is fine: polling still sees the change.
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventRegisterAny(None, event_id, self._domain_event(name.lower()), None)
        for register, event_id, target in (
            ("nodeDeviceEventRegisterAny", "VIR_NODE_DEVICE_EVENT_ID_LIFECYCLE", "_devices"),
            ("storagePoolEventRegisterAny", "VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE", "_pools"),
        ):
            with contextlib.suppress(libvirt.libvirtError, AttributeError):
                getattr(conn, register)(None, getattr(libvirt, event_id), self._invalidate(target), None)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(lambda _c, reason, _o: self._closed(reason), None)

    def _domain_event(self, kind: str) -> Callable[..., None]:
        def callback(_conn: Any, dom: Any, *args: Any) -> None:
            uuid = dom.UUIDString()
            with self._lock:
                self._dirty.add(uuid)
            self._on_event(DomainEvent(self.uri, kind, dom.name(), args[:-1]))
            self._wake.set()

        return callback

    def _invalidate(self, attribute: str) -> Callable[..., None]:
        def callback(*_args: Any) -> None:
            setattr(self, attribute, None)
            self._wake.set()

        return callback

    def _closed(self, reason: int) -> None:
        if reason != libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT:
            self._wake.set()  # the loop notices the dead connection and marks the host lost

    def _alive(self) -> bool:
        try:
            return bool(self._conn is not None and self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def _lost(self, exc: libvirt.libvirtError) -> None:
        self._drop()
        stale = tuple(replace(vm, state=VmState.UNKNOWN) for vm in self.view.vms)
        self._publish(replace(self.view, state=HostState.LOST, error=libvirt_reason(exc), vms=stale, cpu_time_ns={},
                              free_kib=tuple(None for _ in self.view.free_kib),
                              generation=self.view.generation + 1))

    # -- refreshing --------------------------------------------------------------------

    def _refresh(self) -> None:
        conn = self._conn
        view = self.view
        if view.topology is None or view.state is HostState.LOST:
            view = self._describe_host(conn)
        free: tuple[int | None, ...] = ()
        if view.topology and view.topology.cells:
            self._count("getCellsFreeMemory")
            ids = [c.id for c in view.topology.cells]
            raw = conn.getCellsFreeMemory(min(ids), max(ids) - min(ids) + 1)
            free = tuple(raw[c - min(ids)] // self._free_unit for c in ids)
        vms, chains, cpu = self._domains(conn)
        services = tuple(s for facts in self._facts.values() for s in facts.services)
        if self._devices is None:
            self._devices = self._node_devices(conn)
        if self._pools is None:
            self._pools = self._storage_pools(conn)
        chains = self._sized_chains(chains)
        self._publish(replace(
            view, state=HostState.CONNECTED, error=None, free_kib=free, vms=vms, chains=chains,
            devices=self._devices, pools=self._pools or (), generation=view.generation + 1, services=services,
            cpu_time_ns=cpu,
        ))

    def _describe_host(self, conn: Any) -> HostView:
        """Facts that do not change while connected: read once per connection."""
        self._count("getCapabilities")
        topology = parse_capabilities(conn.getCapabilities())
        self._count("getInfo")
        info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
        self._count("getHostname")
        hostname = conn.getHostname()
        hypervisor = None
        try:
            self._count("getVersion")
            version = conn.getVersion()
            hypervisor = f"{conn.getType()} {version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"
        except libvirt.libvirtError:
            pass
        if (hostname or self.uri) != self._label:  # what was read under another name is read again
            with self._lock:
                self._label = hostname or self.uri
                self._facts.clear()
                self._devices = None
                self._pools = None
        return replace(
            self.view, hostname=hostname, hypervisor=hypervisor, topology=topology,
            memory_kib=topology.memory_kib or int(info[1]) * 1024, threads=topology.threads or int(info[2]),
        )

    def _domains(self, conn: Any) -> tuple[tuple[Vm, ...], tuple[DiskChain, ...], dict[str, int]]:
        """The domains (facts from their cached XML, state and memory from the bulk stats), their
        chains, and each one's CPU time by name."""
        self._count("getAllDomainStats")
        stats = conn.getAllDomainStats(_STATS, 0)
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        vms: list[Vm] = []
        chains: list[DiskChain] = []
        cpu: dict[str, int] = {}
        listed: list[tuple[str, VmState, dict[str, Any], bool]] = []
        stale: list[Any] = []  # the domains whose XML is read again
        for dom, record in stats:
            uuid = dom.UUIDString()
            state = _STATES.get(record.get("state.state", 0), VmState.UNKNOWN)
            known = uuid in self._facts and uuid not in dirty and self._last_state.get(uuid) is state
            if not known:
                stale.append(dom)
            listed.append((uuid, state, record, known))
        self.calls["XMLDesc"] += len(stale)
        xml = in_order(_domain_xml, stale)  # fetched ahead (remote: round trips overlap) while parsed
        for uuid, state, record, known in listed:
            if known:
                facts = self._facts[uuid]
            else:
                root = domain_root(next(xml))  # parsed once for both readers
                parsed = parse_domain(root, self._label)
                facts = self._facts[uuid] = DomainFacts(parsed.vm, parsed.chains, parse_services(root, self._label))
            self._last_state[uuid] = state
            balloon = record.get("balloon.current")
            memory_kib = int(balloon) if balloon and state is not VmState.SHUTOFF else facts.vm.memory_kib
            if (used := record.get("cpu.time")) is not None:
                cpu[facts.vm.name] = used  # a counter: kept apart, so an unchanged VM stays the same object
            key = (facts, state, memory_kib, record.get("balloon.rss"))
            last = self._vms.get(uuid)
            if last is None or last[0] != key:  # else the same VM as last time: not built again
                last = self._vms[uuid] = (key, replace(
                    facts.vm, state=state, memory_kib=memory_kib,
                    residency=with_stats(facts.vm.residency, state, memory_kib, key[3]),
                ))
            vms.append(last[1])
            chains.extend(facts.chains)
        seen = {uuid for uuid, *_ in listed}
        for gone in (self._facts.keys() | self._vms.keys()) - seen:
            self._facts.pop(gone, None)
            self._last_state.pop(gone, None)
            self._vms.pop(gone, None)
        return tuple(vms), tuple(chains), cpu

    def _node_devices(self, conn: Any) -> tuple[PciDevice, ...]:
        self._count("listAllDevices")
        out = []
        for dev in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV):
            self._count("nodeDevice.XMLDesc")
            parsed = parse_nodedev(dev.XMLDesc(0), self._label)
            if parsed is not None:
                out.append(parsed)
        return tuple(out)

    def _storage_pools(self, conn: Any) -> tuple[StoragePool, ...]:
        """Active pools and their volumes with backing paths: read once, then on pool events."""
        pools = []
        self._count("listAllStoragePools")
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            try:
                self._count("pool.XMLDesc")
                kind, path = parse_pool(pool.XMLDesc(0))
                _, capacity, _, available = pool.info()
                volumes = []
                self._count("listAllVolumes")
                listed = pool.listAllVolumes(0)
                for call in ("volume.info", "volume.XMLDesc", "volume.path"):
                    self.calls[call] += len(listed)
                for name, path, (_, vol_capacity, allocation), xml in in_order(_volume, listed):
                    fmt, backing = parse_volume(xml)
                    volumes.append(Volume(name, path, fmt, vol_capacity, allocation, backing))
            except libvirt.libvirtError:
                continue  # a pool that vanished or cannot list: its layers stay unsized
            pools.append(StoragePool(pool.name(), self._label, kind, path, capacity, available,
                                     tuple(sorted(volumes, key=lambda v: v.name))))
        return tuple(pools)

    def _sized_chains(self, chains: tuple[DiskChain, ...]) -> tuple[DiskChain, ...]:
        """Each chain sized; a chain whose domain XML was not re-read, sized from the same pool
        listing, as the last refresh sized it."""
        volumes = self._volume_index()
        last = self._sized_by_id if self._sized_from is volumes else {}
        now: dict[int, tuple[DiskChain, DiskChain]] = {}
        for chain in chains:
            hit = last.get(id(chain))
            now[id(chain)] = hit if hit is not None and hit[0] is chain else (chain, self._sized(chain))
        self._sized_by_id, self._sized_from = now, volumes
        return tuple(now[id(c)][1] for c in chains)

    def _sized(self, chain: DiskChain) -> DiskChain:
        """Sizes from the pool volume at each layer's path; and where the domain XML stops at the
        top (a shut-off guest's inactive XML has no backing chain), the layers below it from the
        volumes' own backing paths."""
        volumes = self._volume_index()
        layers = [
            DiskLayer(layer.path, layer.format, vol.capacity_bytes, vol.allocated_bytes)
            if layer.virtual_bytes is None and (vol := volumes.get(layer.path)) is not None else layer
            for layer in chain.layers
        ]
        below = volumes.get(layers[0].path) if layers else None
        seen = {layer.path for layer in layers}
        while below is not None and below.backing and below.backing not in seen:
            seen.add(below.backing)
            base = volumes.get(below.backing)
            layers.insert(0, DiskLayer(below.backing, base.format if base else None,
                                       base.capacity_bytes if base else None, base.allocated_bytes if base else None))
            below = base
        return replace(chain, layers=tuple(layers))

    def _volume_index(self) -> dict[str, Volume]:
        """Pool volumes by path, built once per pool listing (not once per chain: at 2,000 domains
        that was most of a refresh)."""
        pools = self._pools or ()
        if self._indexed is not pools:
            self._index = {v.path: v for p in pools for v in p.volumes}
            self._indexed = pools
        return self._index

    def _publish(self, view: HostView) -> None:
        fields = ("state", "vms", "free_kib", "devices", "pools", "chains", "error")
        changed = any(getattr(view, f) != getattr(self.view, f) for f in fields)
        with self._fresh:
            self.view = view
            self._fresh.notify_all()
        if changed:
            self._on_change(self)

    def _count(self, call: str) -> None:
        self.calls[call] += 1


def _domain_xml(dom: Any) -> str:
    return str(dom.XMLDesc(0))


def _volume(vol: Any) -> tuple[str, str, list[int], str]:
    return vol.name(), vol.path(), vol.info(), vol.XMLDesc(0)
