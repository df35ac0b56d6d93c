"""Live migration between libvirt hosts, streaming pre-copy progress from the source's job stats.

``migrate3`` blocks until the migration ends, so it runs in a worker thread while the
operation's own thread samples ``jobStats()`` (every ``SAMPLE_S``), follows the source's
and destination's domain events (MIGRATION_ITERATION, the SUSPENDED/RESUMED lifecycle
events that frame the switchover), and aborts the job when cancelled.

Flags: ``LIVE``; ``PERSIST_DEST | UNDEFINE_SOURCE`` when the guest is persistent, so it
keeps its definition and exists in one place only (a transient guest stays transient);
``AUTO_CONVERGE`` / ``POSTCOPY`` when asked (post-copy is started after two pre-copy
rounds; once post-copy runs, a failure loses the guest: that is its price).

Storage is never copied: the disks must be reachable from both hosts. libvirt itself
accepts shared storage it recognises (NFS, Ceph, GlusterFS… with ``cache='none'``) and
refuses a local file system as "unsafe". ``VIR_MIGRATE_UNSAFE`` overrides that check, and
it is passed in one case only: source and destination daemons run on the *same machine*
(both URIs local: ``qemu:///…``, ``qemu+unix://…`` or localhost) and every disk is a file or
block device outside the per-daemon directories (``/var/lib/libvirt``, ``/run/libvirt``…,
which a second daemon on the machine may bind-mount privately). Then both QEMUs open the
very same file through one kernel and one page cache, which is what the check exists to
ensure. The two-host lab is that case. For a remote destination hvc never passes UNSAFE:
libvirt's own check decides, and its refusal is reported with a hint.

The migration stream goes to ``tcp://127.0.0.1`` for a same-machine destination and to
``tcp://<host in the destination URI>`` otherwise (libvirt's default, the destination's own
hostname, often does not resolve from the source).
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import libvirt

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput, NotFound
from backends.models import JobKind, JobResult, Outcome, Vm
from backends.placement import find_host, plan_move
from backends.requests import MigrateRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.migration_progress import MigrationProgress, job_stats
from backends.libvirt.ops import libvirt_reason, open_job_connection

SAMPLE_S = 0.3  # jobStats() sampling period
FIRST_SAMPLE_S = 0.1  # the first sample comes sooner: small guests finish in a second
TICK_S = 0.05  # how often events and a cancel are looked at
POSTCOPY_AFTER_ROUNDS = 2
_LOCAL_HOSTS = frozenset({None, "", "localhost", "127.0.0.1", "::1"})
# Directories a second libvirtd on the same machine typically mounts privately: a file
# there may not be the same file for both daemons, so UNSAFE is not vouched for.
_PER_DAEMON_DIRS = ("/var/lib/libvirt/", "/run/libvirt/", "/var/run/libvirt/", "/etc/libvirt/",
                    "/var/cache/libvirt/", "/var/log/libvirt/")


def is_local(uri: str) -> bool:
    """Does ``uri`` name a daemon on this very machine (no host, or localhost)?"""
    return urlsplit(uri).hostname in _LOCAL_HOSTS


def migration_uri(dest_uri: str) -> str:
    """Where the migration stream goes: loopback for a same-machine daemon, else its host."""
    host = urlsplit(dest_uri).hostname
    if host in _LOCAL_HOSTS:
        return "tcp://127.0.0.1"
    assert host is not None
    return f"tcp://[{host}]" if ":" in host else f"tcp://{host}"


def disk_sources(domain_xml: str) -> list[tuple[str, str | None]]:
    """(disk type, source path or None) of each disk with a source in a domain XML."""
    out: list[tuple[str, str | None]] = []
    for disk in ET.fromstring(domain_xml).findall("devices/disk"):
        src = disk.find("source")
        if src is None:
            continue  # an empty CD-ROM: nothing to share
        kind = disk.get("type", "file")
        out.append((kind, src.get("file") or src.get("dev")))
    return out


def same_files_on_both(domain_xml: str, src_uri: str, dst_uri: str) -> bool:
    """True when UNSAFE is vouched for: see the module docstring."""
    if not (is_local(src_uri) and is_local(dst_uri)):
        return False
    for kind, path in disk_sources(domain_xml):
        if kind not in ("file", "block"):
            return False  # network and pool volumes: let libvirt judge
        if not path or not path.startswith("/") or path.startswith(_PER_DAEMON_DIRS):
            return False
    return True


class _Call:
    """A blocking libvirt call in a daemon thread; ``done`` is set when it returns or raises."""

    def __init__(self, call: Callable[[], Any], name: str) -> None:
        self.value: Any = None
        self.error: libvirt.libvirtError | None = None
        self.done = threading.Event()
        self._call = call
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self.value = self._call()
        except libvirt.libvirtError as exc:
            self.error = exc
        finally:
            self.done.set()


class LibvirtMigrate(Operation):
    def __init__(self, backend: LibvirtBackend, request: MigrateRequest) -> None:
        inv = backend.snapshot()
        try:
            vm = find_vm(inv, request.vm)
        except BadInput:  # seen mid-change (e.g. just migrated by another client): look again
            inv = backend.refresh(replicas=False)
            vm = find_vm(inv, request.vm)
        if not vm.active:
            raise BadInput(f"{vm.name} is {vm.state.value}; live migration needs a running VM",
                           hint=f"start it first (`hvc start {vm.name}`)")
        try:
            dest = find_host(inv, request.to_host)
        except BadInput as exc:
            raise NotFound(exc.message, hint=exc.hint) from exc
        if vm.devices:
            many = len(vm.devices) > 1
            raise BadInput(
                f"{vm.name} holds direct-assigned PCI device{'s' if many else ''} {', '.join(vm.devices)}, "
                f"which cannot migrate",
                hint=f"hand {'them' if many else 'it'} off first with `hvc handoff {vm.devices[0]} --to host`, "
                     f"or detach {'them' if many else 'it'}")
        if request.bandwidth_mib_s is not None and request.bandwidth_mib_s <= 0:
            raise BadInput(f"bandwidth {request.bandwidth_mib_s} MiB/s must be positive")
        # Same host, destination connected, vCPUs ≤ threads, each vNUMA cell in one cell's free memory.
        plan_move(inv, vm, dest)
        clash = next((v for v in inv.vms_on(dest.name) if v.name == vm.name and v.uuid != vm.uuid), None)
        if clash is not None:
            raise BadInput(f"{dest.name} already has a different VM called {vm.name} (uuid {clash.uuid})",
                           hint="rename or remove one of them first")
        src, dst = backend.connected(vm.host, "the source"), backend.connected(dest.name)
        try:
            dom = src.connection.lookupByUUIDString(vm.uuid)
            xml, self.persistent = dom.XMLDesc(0), bool(dom.isPersistent())
        except libvirt.libvirtError as exc:
            raise NotFound(f"{vm.name} is gone from {vm.host}: {libvirt_reason(exc)}",
                           hint="refresh and try again") from exc
        self.backend, self.vm, self.request = backend, vm, request
        self.src, self.dst, self.dest_name = src, dst, dest.name
        self.unsafe = same_files_on_both(xml, src.uri, dst.uri)
        self.flags, self.params = self._flags(), self._params()
        phases = ("setup", "precopy", *(("postcopy",) if request.postcopy else ()), "switchover", "done")
        super().__init__(new_job(JobKind.MIGRATE, (vm.name, vm.host, dest.name), phases,
                                 f"migrate {vm.name} {vm.host} → {dest.name}"))

    def _flags(self) -> int:
        flags = libvirt.VIR_MIGRATE_LIVE
        if self.persistent:
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        if self.unsafe:
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        if self.request.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if self.request.postcopy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        return int(flags)

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: migration_uri(self.dst.uri)}
        if self.request.bandwidth_mib_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(self.request.bandwidth_mib_s)
        return params

    # -- running -------------------------------------------------------------------------

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        job, vm = self.job, self.vm
        started = time.time()

        def result(outcome: Outcome, reason: str = "") -> JobResult:
            return JobResult(job.id, outcome, reason, started, time.time())

        try:
            src_conn = open_job_connection(self.src.uri)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"cannot reach {vm.host}: {libvirt_reason(exc)}; nothing changed")
        try:
            return self._run(src_conn, emit, cancel, result)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                src_conn.close()

    def _run(self, src_conn: Any, emit: Emit, cancel: threading.Event,
             result: Callable[..., JobResult]) -> JobResult:
        vm = self.vm
        try:
            dom = src_conn.lookupByUUIDString(vm.uuid)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"{vm.name} not found on {vm.host}: {libvirt_reason(exc)}")
        try:
            dst_conn = open_job_connection(self.dst.uri)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"cannot reach {self.dest_name}: {libvirt_reason(exc)}; "
                                          f"{_where(dom, vm, self.dest_name)}")
        try:
            return self._migrate(dom, dst_conn, emit, cancel, result)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                dst_conn.close()

    def _migrate(self, dom: Any, dst_conn: Any, emit: Emit, cancel: threading.Event,
                 result: Callable[..., JobResult]) -> JobResult:
        vm = self.vm
        state = MigrationProgress(self, emit)
        notes = [f"to {self.params[libvirt.VIR_MIGRATE_PARAM_URI]}"]
        if self.unsafe:
            notes.append("same-machine file disks: libvirt's shared-storage check overridden (UNSAFE)")
        if self.request.bandwidth_mib_s:
            notes.append(f"capped at {self.request.bandwidth_mib_s} MiB/s")
        state.phase("setup", f"{vm.name} starts paused on {self.dest_name}, waiting for memory; " + "; ".join(notes))
        with self.backend.events(vm.name, ("migration_iteration", "lifecycle"), (self.src.uri, self.dst.uri)) as tap:
            call = _Call(lambda: dom.migrate3(dst_conn, self.params, self.flags), f"migrate {vm.name}")
            call.start()
            aborted, abort_error, postcopy_started = False, "", False
            next_sample = time.monotonic() + FIRST_SAMPLE_S
            while not call.done.wait(TICK_S):
                for event in tap.drain():  # events are handled within a tick of their arrival
                    state.event(event)
                if cancel.is_set() and not aborted:
                    aborted = True
                    try:
                        dom.abortJob()
                    except libvirt.libvirtError as exc:
                        abort_error = libvirt_reason(exc)
                if time.monotonic() < next_sample:
                    continue
                next_sample = time.monotonic() + SAMPLE_S
                state.sample(job_stats(dom))
                if (self.request.postcopy and not postcopy_started and not aborted
                        and state.iteration >= POSTCOPY_AFTER_ROUNDS and state.current == "precopy"):
                    postcopy_started = True
                    try:
                        dom.migrateStartPostCopy(0)
                        state.phase("postcopy", f"{vm.name} runs on {self.dest_name}; it pulls what is "
                                                f"left on demand (from now on a failure loses the guest)")
                    except libvirt.libvirtError as exc:
                        state.phase("precopy", f"post-copy refused: {libvirt_reason(exc)}; staying in pre-copy")
            for event in tap.drain():
                state.event(event)
        if call.error is not None:
            where = _where(dom, vm, self.dest_name)
            self._refresh()
            if aborted:
                return result(Outcome.CANCELLED, f"cancelled: {libvirt_reason(call.error)}; {where}")
            return result(Outcome.FAILED, f"{libvirt_reason(call.error)}{_hint(call.error)}; {where}")
        summary = state.finish(call.value)
        self._refresh()
        if aborted:
            late = f" (abort refused: {abort_error})" if abort_error else ""
            return result(Outcome.SUCCEEDED, f"the cancel came too late{late}: {summary}")
        return result(Outcome.SUCCEEDED, summary)

    def _refresh(self) -> None:
        """The inventory as the migration left it. A replicated guest's replica status names its
        primary host, so it is re-read at once; for any other guest a migration changes no replica,
        and reading every host's pools and records (most of a refresh's cost) waits until it is due."""
        replicated = any(r.vm == self.vm.name for r in self.backend.snapshot().replicas)
        self.backend.refresh(replicas=replicated)


def _where(dom: Any, vm: Vm, dest: str) -> str:
    """Where the guest is after a failed or cancelled migration, as checked, not assumed."""
    try:
        active, state = bool(dom.isActive()), dom.info()[0]
    except libvirt.libvirtError as exc:
        return f"{vm.name} is not found on {vm.host} ({libvirt_reason(exc)}); check {dest}"
    if active and state == libvirt.VIR_DOMAIN_RUNNING:
        return f"{vm.name} keeps running on {vm.host}"
    if active and state == libvirt.VIR_DOMAIN_PAUSED:
        return f"{vm.name} is paused on {vm.host}; resume it with `hvc resume {vm.name}`"
    return f"{vm.name} is no longer running on {vm.host}; check {dest}"


def _hint(exc: libvirt.libvirtError) -> str:
    message = str(exc.get_error_message() or exc).lower()
    if "unsafe" in message:
        return " (hvc does not copy storage: put the disks on storage both hosts share, with cache='none')"
    return ""
