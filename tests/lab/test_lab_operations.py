"""Operations on real libvirt: live migration, device handoff and rebalancing on the two-host lab.

The lab's guests are left as found: hvc-lab-mover ends where it started (running on host A,
defined there only), spare volumes are detached again, and temporary guests
(``hvc-lab-tmp-*``) are removed. The last section unit-tests the pure helpers and the PCI
handoff paths against fake libvirt objects (the lab has no IOMMU, so no real PCI device
can be assigned here).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from backends.errors import BadInput, HostUnreachable, HvcError, NotFound
from backends.libvirt import rebalance as rebalance_mod
from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.handoff import (
    LibvirtHandoff,
    dev_name,
    find_pci,
    free_target,
    hostdev_xml,
    portable_device_xml,
)
from backends.libvirt.handoff import operation as handoff_mod
from backends.libvirt.host import DomainEvent
from backends.libvirt.lab import LabStatus, lab_up, stop_host_b
from backends.libvirt.migrate import is_local, migration_uri, same_files_on_both
from backends.libvirt.rebalance import pages_per_node, pid_files
from backends.models import (
    Host,
    HostState,
    Inventory,
    JobEvent,
    JobResult,
    Outcome,
    Owner,
    OwnerKind,
    PciDevice,
    PhaseChanged,
    Progress,
    Vm,
    VmState,
)
from backends.requests import HandoffRequest, MigrateRequest, RebalanceRequest, Request

MOVER, NUMA = "hvc-lab-mover", "hvc-lab-numa"


@pytest.fixture
def backend(lab: LabStatus) -> Iterator[LibvirtBackend]:
    b = LibvirtBackend(lab.uris, poll_s=3600)
    yield b
    b.close()


@dataclass
class Run:
    events: list[JobEvent] = field(default_factory=list)
    result: JobResult | None = None
    wall_s: float = 0.0

    @property
    def progress(self) -> list[Progress]:
        return [e for e in self.events if isinstance(e, Progress)]

    @property
    def phases(self) -> list[str]:
        return [e.phase for e in self.events if isinstance(e, PhaseChanged)]


def run_op(backend: LibvirtBackend, request: Request,
           cancel_when: Callable[[JobEvent], bool] | None = None) -> Run:
    op = backend.prepare(request)
    out, cancel = Run(), threading.Event()

    def emit(event: JobEvent) -> None:
        out.events.append(event)
        if cancel_when is not None and cancel_when(event):
            cancel.set()

    t0 = time.monotonic()
    out.result = op.run(emit, cancel)
    out.wall_s = time.monotonic() - t0
    return out


def names(backend: LibvirtBackend, lab: LabStatus) -> tuple[str, str]:
    by_uri = {h.uri: h.name for h in backend.snapshot().hosts}
    return by_uri[lab.uris[0]], by_uri[lab.uris[1]]


def running_on(uri: str, name: str) -> bool:
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName(name)
        return bool(dom.isActive()) and dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def defined_on(uri: str, name: str) -> bool:
    conn = libvirt.open(uri)
    try:
        return bool(conn.lookupByName(name).isPersistent())
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def virsh_migrate(src: str, dst: str) -> float:
    """The same migration with virsh, for comparison; returns its wall time."""
    t0 = time.monotonic()
    subprocess.run(["virsh", "-c", src, "migrate", "--live", "--unsafe", "--persistent", "--undefinesource",
                    MOVER, dst, "--migrateuri", "tcp://127.0.0.1"], check=True, capture_output=True, timeout=120)
    return time.monotonic() - t0


def bring_mover_home(lab: LabStatus) -> None:
    """Whatever a test did, hvc-lab-mover ends running on host A and defined there only."""
    a, b = lab.uris
    if running_on(b, MOVER) and not running_on(a, MOVER):
        virsh_migrate(b, a)
    assert running_on(a, MOVER), "hvc-lab-mover is not running on host A"


def disk_xml(path: str, dev: str) -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>"
            f"<source file='{path}'/><target dev='{dev}' bus='scsi'/></disk>")


def disk_by_file(dom: Any, path: str) -> ET.Element | None:
    root = ET.fromstring(dom.XMLDesc(0))
    return next((d for d in root.findall("devices/disk")
                 if d.find("source") is not None and d.find("source").get("file") == path), None)  # type: ignore[union-attr]


def detach_file_everywhere(conn: Any, path: str) -> None:
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        disk = disk_by_file(dom, path)
        if disk is not None:
            with contextlib.suppress(libvirt.libvirtError):
                dom.detachDeviceFlags(ET.tostring(disk, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)


def temp_guest(conn: Any, name: str, *, persistent: bool, balloon: bool = False, disk: str | None = None) -> Any:
    """A throw-away guest like the lab's (same domain type and emulator), with a virtio-scsi controller."""
    numa = ET.fromstring(conn.lookupByName(NUMA).XMLDesc(0))
    kind, emulator = numa.get("type"), numa.findtext("devices/emulator")
    disks = disk_xml(disk, "sda") if disk else ""
    xml = f"""<domain type='{kind}'><name>{name}</name>
      <memory unit='MiB'>256</memory><currentMemory unit='MiB'>256</currentMemory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='pc'>hvm</type></os>
      <devices><emulator>{emulator}</emulator>
        <controller type='scsi' index='0' model='virtio-scsi'/>{disks}
        <memballoon model='{"virtio" if balloon else "none"}'/></devices></domain>"""
    if persistent:
        dom = conn.defineXML(xml)
        dom.create()
        return dom
    return conn.createXML(xml, 0)


def remove_guest(conn: Any, name: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefine()


def wait_for(backend: LibvirtBackend, predicate: Callable[[Inventory], bool], timeout: float = 30.0) -> Inventory:
    deadline = time.monotonic() + timeout
    while not predicate(backend.snapshot()):
        assert time.monotonic() < deadline, f"not seen within {timeout}s"
        time.sleep(0.2)
    return backend.snapshot()


# --------------------------------------------------------------------------- migration


def test_live_migration_there_and_back_streams_progress(lab: LabStatus, backend: LibvirtBackend) -> None:
    a_uri, b_uri = lab.uris
    a, b = names(backend, lab)
    try:
        there = run_op(backend, MigrateRequest(MOVER, b))
        assert there.result is not None and there.result.outcome is Outcome.SUCCEEDED, there.result
        assert there.progress and all(p.unit == "bytes" for p in there.progress)
        assert any(p.detail.get("memory_total", 0) > 0 and p.done > 0 for p in there.progress)
        assert there.progress[-1].remaining == 0 and "iteration" in there.progress[-1].detail
        assert {"setup", "precopy", "switchover", "done"} <= set(there.phases)
        assert "downtime" in there.result.reason
        assert running_on(b_uri, MOVER) and defined_on(b_uri, MOVER)
        assert not running_on(a_uri, MOVER) and not defined_on(a_uri, MOVER)  # UNDEFINE_SOURCE
        vm = backend.snapshot().vm(MOVER)
        assert vm is not None and vm.host == b and vm.state is VmState.RUNNING  # refreshed at the end

        # Back, capped at 1 MiB/s: slow enough for samples taken while memory is still left.
        back = run_op(backend, MigrateRequest(MOVER, a, bandwidth_mib_s=1, auto_converge=True))
        assert back.result is not None and back.result.outcome is Outcome.SUCCEEDED, back.result
        in_flight = [p for p in back.progress if p.remaining > 0]
        assert in_flight, "no progress sample was taken while memory was left to copy"
        assert all(p.detail["memory_total"] > 0 and "expected_downtime_ms" in p.detail for p in in_flight)
        assert running_on(a_uri, MOVER) and defined_on(a_uri, MOVER)
        assert not running_on(b_uri, MOVER) and not defined_on(b_uri, MOVER)

        # The same round trip with virsh (same flags) in the same run, for comparison.
        virsh_there, virsh_back = virsh_migrate(a_uri, b_uri), virsh_migrate(b_uri, a_uri)
        print(f"\nmigration wall time A→B: hvc {there.wall_s:.2f}s vs virsh {virsh_there:.2f}s; "
              f"B→A: hvc {back.wall_s:.2f}s (1 MiB/s cap) vs virsh {virsh_back:.2f}s; "
              f"hvc samples {len(there.progress)}+{len(back.progress)}; {there.result.reason}")
        assert there.wall_s < virsh_there + 2.0  # sampling and events cost next to nothing
    finally:
        bring_mover_home(lab)


def test_cancelled_migration_leaves_the_guest_running_on_the_source(lab: LabStatus,
                                                                  backend: LibvirtBackend) -> None:
    a_uri, b_uri = lab.uris
    _, b = names(backend, lab)
    try:
        run = run_op(backend, MigrateRequest(MOVER, b, bandwidth_mib_s=1),
                     cancel_when=lambda e: isinstance(e, PhaseChanged) and e.phase == "precopy")
        assert run.result is not None and run.result.outcome is Outcome.CANCELLED, run.result
        print(f"\ncancelled after {run.wall_s:.2f}s: {run.result.reason}")
        assert f"{MOVER} keeps running on" in run.result.reason
        assert running_on(a_uri, MOVER) and defined_on(a_uri, MOVER)
        assert not running_on(b_uri, MOVER)
    finally:
        bring_mover_home(lab)


def test_migration_to_a_stopped_daemon_fails_with_libvirts_reason(lab: LabStatus, backend: LibvirtBackend) -> None:
    a_uri, b_uri = lab.uris
    a, b = names(backend, lab)
    op = backend.prepare(MigrateRequest(MOVER, b))  # checked while B was up
    try:
        stop_host_b()
        events: list[JobEvent] = []
        result = op.run(events.append, threading.Event())
        print(f"\ndestination daemon stopped: {result.reason} ({result.duration_s * 1000:.0f} ms)")
        assert result.outcome is Outcome.FAILED, result
        reason = result.reason.lower()
        assert any(w in reason for w in ("end of file", "broken pipe", "socket", "connection", "closed")), reason
        assert f"{MOVER} keeps running on {a}" in result.reason
        assert running_on(a_uri, MOVER) and defined_on(a_uri, MOVER)
        # Once the backend has seen B go, the pre-checks refuse before anything runs.
        wait_for(backend, lambda inv: inv.host(b) is not None and inv.host(b).state is HostState.LOST)  # type: ignore[union-attr]
        with pytest.raises((BadInput, HostUnreachable), match=r"lost|not connected"):
            backend.prepare(MigrateRequest(MOVER, b))
    finally:
        lab_up()
    assert running_on(b_uri, "hvc-lab-b1") and running_on(a_uri, MOVER)


def test_destination_daemon_stopped_mid_migration_fails_and_the_guest_stays(lab: LabStatus,
                                                                            backend: LibvirtBackend) -> None:
    a_uri, b_uri = lab.uris
    a, b = names(backend, lab)
    stopper = threading.Thread(target=stop_host_b)

    def stop_in_precopy(event: JobEvent) -> bool:
        if isinstance(event, PhaseChanged) and event.phase == "precopy" and not stopper.is_alive():
            stopper.start()  # while memory is being copied (capped at 1 MiB/s, so it lasts)
        return False

    try:
        run = run_op(backend, MigrateRequest(MOVER, b, bandwidth_mib_s=1), cancel_when=stop_in_precopy)
        stopper.join(30)
        assert run.result is not None, run
        print(f"\ndestination daemon stopped in pre-copy: {run.result.reason} (after {run.wall_s:.2f}s)")
        assert run.result.outcome is Outcome.FAILED, run.result
        assert "precopy" in run.phases and "done" not in run.phases
        assert f"{MOVER} keeps running on {a}" in run.result.reason
        assert running_on(a_uri, MOVER) and defined_on(a_uri, MOVER)
    finally:
        stopper.join(30)
        lab_up()
        bring_mover_home(lab)
    assert not running_on(b_uri, MOVER)  # B's daemon took its half-built copy down with it


def test_migration_libvirt_refuses_is_reported_and_the_guest_stays(lab: LabStatus, backend: LibvirtBackend) -> None:
    """A disk under /var/lib/libvirt (which host B mounts privately) is not vouched for, so no
    UNSAFE flag: libvirt's own shared-storage check refuses inside migrate3."""
    a_uri = lab.uris[0]
    a, b = names(backend, lab)
    name, image = "hvc-lab-tmp-unsafe", Path("/var/lib/libvirt/hvc-lab-tmp-unsafe.qcow2")
    conn = libvirt.open(a_uri)
    try:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
        dom = temp_guest(conn, name, persistent=False, disk=str(image))
        wait_for(backend, lambda inv: any(v.name == name and v.active for v in inv.vms))
        op = backend.prepare(MigrateRequest(name, b))
        assert not op.flags & libvirt.VIR_MIGRATE_UNSAFE  # type: ignore[attr-defined]
        events: list[JobEvent] = []
        result = op.run(events.append, threading.Event())
        print(f"\nlibvirt's refusal: {result.reason}")
        assert result.outcome is Outcome.FAILED, result
        assert "unsafe" in result.reason.lower() and "storage both hosts share" in result.reason
        assert f"{name} keeps running on {a}" in result.reason
        assert dom.isActive() and dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        remove_guest(conn, name)
        conn.close()
        image.unlink(missing_ok=True)


def test_migration_pre_checks_refuse_with_one_actionable_line(lab: LabStatus, backend: LibvirtBackend) -> None:
    a, b = names(backend, lab)
    cases: list[tuple[Request, type[HvcError], str]] = [
        (MigrateRequest("hvc-lab-nope", b), NotFound, "no VM called"),
        (MigrateRequest("hvc-lab-idle", b), BadInput, "needs a running VM"),
        (MigrateRequest(MOVER, "nowhere"), NotFound, "no host called"),
        (MigrateRequest(MOVER, a), BadInput, "already on"),
    ]
    for request, error, text in cases:
        with pytest.raises(error, match=text) as caught:
            backend.prepare(request)
        assert "\n" not in caught.value.one_line()


# --------------------------------------------------------------------------- handoff


def test_data_volume_handoff_between_two_running_guests(lab: LabStatus, backend: LibvirtBackend) -> None:
    conn = libvirt.open(lab.uris[0])
    path = conn.storagePoolLookupByName("hvc-lab").storageVolLookupByName("hvc-lab-data2.qcow2").path()
    mover, numa = conn.lookupByName(MOVER), conn.lookupByName(NUMA)
    try:
        mover.attachDeviceFlags(disk_xml(path, "sdb"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        wait_for(backend, lambda inv: "sdb" in (inv.vm(MOVER) or Vm("", "", "", VmState.UNKNOWN, 0, 0)).disks)
        run = run_op(backend, HandoffRequest(f"{MOVER}/sdb", NUMA))
        assert run.result is not None and run.result.outcome is Outcome.SUCCEEDED, run.result
        assert run.phases == ["detaching", "draining", "attaching"]
        assert [p.done for p in run.progress] == [1, 2, 3] and run.progress[-1].remaining == 0
        drained = run.progress[1].detail
        assert drained["seen_by"] == "event", drained  # DEVICE_REMOVED, not the XML fallback
        on_numa = disk_by_file(numa, path)
        assert on_numa is not None and disk_by_file(mover, path) is None
        assert on_numa.find("target").get("dev") == "sdb"  # type: ignore[union-attr]
        print(f"\nhandoff wall time {run.wall_s * 1000:.0f} ms; released after {drained['released_after_ms']} ms")
        vm = backend.snapshot().vm(NUMA)
        assert vm is not None and "sdb" in vm.disks
    finally:
        detach_file_everywhere(conn, path)
        conn.close()


def test_a_persistent_disk_moves_in_both_definitions_and_dodges_a_taken_name(lab: LabStatus,
                                                                             backend: LibvirtBackend) -> None:
    conn = libvirt.open(lab.uris[0])
    pool = conn.storagePoolLookupByName("hvc-lab")
    moving, other = (pool.storageVolLookupByName(f"hvc-lab-data{n}.qcow2").path() for n in (2, 3))
    mover, numa = conn.lookupByName(MOVER), conn.lookupByName(NUMA)
    both = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    try:
        numa.attachDeviceFlags(disk_xml(other, "sdb"), libvirt.VIR_DOMAIN_AFFECT_LIVE)  # sdb is taken there
        mover.attachDeviceFlags(disk_xml(moving, "sdb"), both)  # in mover's definition too
        wait_for(backend, lambda inv: "sdb" in (inv.vm(MOVER) or Vm("", "", "", VmState.UNKNOWN, 0, 0)).disks)
        run = run_op(backend, HandoffRequest(f"{MOVER}/sdb", NUMA))
        assert run.result is not None and run.result.outcome is Outcome.SUCCEEDED, run.result
        assert run.result.reason.endswith("as sdc")
        live, config = numa.XMLDesc(0), numa.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        for xml in (live, config):
            disk = next(d for d in ET.fromstring(xml).findall("devices/disk")
                        if d.find("source") is not None and d.find("source").get("file") == moving)  # type: ignore[union-attr]
            assert disk.find("target").get("dev") == "sdc"  # type: ignore[union-attr]
        assert moving not in mover.XMLDesc(0) and moving not in mover.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        for dom in (mover, numa):
            inactive = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            for disk in inactive.findall("devices/disk"):
                if disk.find("source") is not None and disk.find("source").get("file") in (moving, other):  # type: ignore[union-attr]
                    dom.detachDeviceFlags(ET.tostring(disk, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        detach_file_everywhere(conn, moving)
        detach_file_everywhere(conn, other)
        conn.close()


def test_a_refused_handoff_gives_the_disk_back_to_its_owner(lab: LabStatus, backend: LibvirtBackend) -> None:
    conn = libvirt.open(lab.uris[0])
    path = conn.storagePoolLookupByName("hvc-lab").storageVolLookupByName("hvc-lab-data3.qcow2").path()
    mover = conn.lookupByName(MOVER)
    receiver = "hvc-lab-tmp-receiver"
    try:
        temp = temp_guest(conn, receiver, persistent=True)
        mover.attachDeviceFlags(disk_xml(path, "sdc"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        wait_for(backend, lambda inv: any(v.name == receiver and v.active for v in inv.vms)
                 and "sdc" in (inv.vm(MOVER) or Vm("", "", "", VmState.UNKNOWN, 0, 0)).disks)
        op = backend.prepare(HandoffRequest(f"{MOVER}/sdc", receiver))
        temp.destroy()  # the receiver goes away after the checks: attaching must fail
        events: list[JobEvent] = []
        result = op.run(events.append, threading.Event())
        assert result.outcome is Outcome.FAILED, result
        assert f"{receiver} refused" in result.reason and f"went back to {MOVER}" in result.reason
        assert disk_by_file(mover, path) is not None  # nothing lost
    finally:
        detach_file_everywhere(conn, path)
        remove_guest(conn, receiver)
        conn.close()


def test_handoff_pre_checks(lab: LabStatus, backend: LibvirtBackend) -> None:
    a, _ = names(backend, lab)
    with pytest.raises(NotFound, match="has no disk sdq"):
        backend.prepare(HandoffRequest(f"{MOVER}/sdq", NUMA))
    to_host = backend.prepare(HandoffRequest(f"{MOVER}/sda", "host"))  # S2: checks only, nothing detached
    assert to_host.job.phases == ("detaching", "draining", "rebuilding host stack", "VM relinquished")
    with pytest.raises(BadInput, match=r"not .*one host"):
        backend.prepare(HandoffRequest(f"{MOVER}/sda", "hvc-lab-b1"))
    with pytest.raises(BadInput, match="already has it"):
        backend.prepare(HandoffRequest(f"{MOVER}/sda", MOVER))
    # Real PCI devices of this machine: only the checks run, nothing is ever detached here.
    devices = backend.snapshot().devices_on(a)
    host_owned = next(d for d in devices if d.owner.kind is OwnerKind.HOST)
    with pytest.raises(BadInput, match="already the host's"):
        backend.prepare(HandoffRequest(host_owned.address, "host", host=a))
    ungrouped = [d for d in devices if d.iommu_group is None and d.owner.kind is OwnerKind.HOST]
    if ungrouped:  # no IOMMU (the lab's VM): assigning must be refused before anything changes
        with pytest.raises(BadInput, match="IOMMU"):
            backend.prepare(HandoffRequest(ungrouped[0].address, NUMA, host=a))


# --------------------------------------------------------------------------- rebalance


def test_numatune_rebalance_on_the_numa_guest(lab: LabStatus, backend: LibvirtBackend) -> None:
    a, _ = names(backend, lab)
    host = backend.snapshot().host(a)
    vm = backend.snapshot().vm(NUMA)
    assert host is not None and vm is not None
    cells = [c.id for c in host.numa]
    missing = max(cells) + 1
    with pytest.raises(BadInput, match=f"no NUMA cell {missing}"):
        backend.prepare(RebalanceRequest(NUMA, 1, to_cell=missing))
    with pytest.raises(NotFound, match="no vNUMA cell 7"):
        backend.prepare(RebalanceRequest(NUMA, 7, to_cell=cells[0]))
    with pytest.raises(BadInput, match="balloon resizes the whole guest"):
        backend.prepare(RebalanceRequest(NUMA, 0, memory_kib=96 * 1024))
    (home,) = vm.memory_nodeset
    others = [c for c in cells if c != home]
    if others:  # a multi-cell host: strict mode cannot be changed live, and we say so
        with pytest.raises(BadInput, match="restrictive"):
            backend.prepare(RebalanceRequest(NUMA, 1, to_cell=others[0]))
    before = libvirt.open(lab.uris[0]).lookupByName(NUMA).numaParameters(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    run = run_op(backend, RebalanceRequest(NUMA, 1, to_cell=home))
    assert run.result is not None and run.result.outcome is Outcome.SUCCEEDED, run.result
    assert "nothing moved" in run.result.reason
    assert run.phases == ["verifying"]
    (sample,) = run.progress  # counted from /proc/<qemu pid>/numa_maps on this machine
    assert sample.unit == "pages" and sample.done > 0 and sample.remaining == 0
    assert sample.detail == {f"node{home}": sample.done}
    after = libvirt.open(lab.uris[0]).lookupByName(NUMA).numaParameters(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    assert after == before


def test_balloon_resize_that_the_guest_ignores_is_rolled_back(lab: LabStatus, backend: LibvirtBackend,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rebalance_mod, "BALLOON_TIMEOUT_S", 1.5)
    conn = libvirt.open(lab.uris[0])
    name = "hvc-lab-tmp-balloon"
    try:
        dom = temp_guest(conn, name, persistent=False, balloon=True)  # no OS: no balloon driver
        wait_for(backend, lambda inv: any(v.name == name and v.active for v in inv.vms))
        with pytest.raises(BadInput, match="above"):
            backend.prepare(RebalanceRequest(name, 0, memory_kib=512 * 1024))
        run = run_op(backend, RebalanceRequest(name, 0, memory_kib=192 * 1024))
        assert run.result is not None and run.result.outcome is Outcome.FAILED, run.result
        assert "did not follow the balloon" in run.result.reason and "target restored" in run.result.reason
        assert run.progress and run.progress[-1].detail["target_kib"] == 192 * 1024
        current = ET.fromstring(dom.XMLDesc(0)).find("currentMemory")
        assert current is not None and int(current.text or 0) == 256 * 1024
    finally:
        remove_guest(conn, name)
        conn.close()


# --------------------------------------------------------------------------- pure helpers


def test_portable_device_xml_strips_what_ties_a_device_to_its_owner() -> None:
    live = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            "<source file='/p/d.qcow2' index='2'/><backingStore type='file' index='3'><format type='qcow2'/>"
            "<source file='/p/base.qcow2'/></backingStore><target dev='sdb' bus='scsi'/><boot order='2'/>"
            "<alias name='scsi0-0-0-1'/><address type='drive' controller='0' bus='0' target='0' unit='1'/></disk>")
    el = ET.fromstring(portable_device_xml(live, target_dev="sdc"))
    assert el.find("alias") is None and el.find("address") is None and el.find("boot") is None
    assert el.find("source").attrib == {"file": "/p/d.qcow2"}  # type: ignore[union-attr]
    assert "index" not in el.find("backingStore").attrib  # type: ignore[union-attr]
    assert el.find("backingStore/source").get("file") == "/p/base.qcow2"  # type: ignore[union-attr]
    assert el.find("target").get("dev") == "sdc"  # type: ignore[union-attr]
    kept = ET.fromstring(portable_device_xml(live, keep_address=True))
    assert kept.find("address").get("unit") == "1" and kept.find("target").get("dev") == "sdb"  # type: ignore[union-attr]

    hostdev = ("<hostdev mode='subsystem' type='pci' managed='yes'><driver name='vfio'/><source>"
               "<address domain='0x0000' bus='0x3b' slot='0x00' function='0x1'/></source>"
               "<alias name='hostdev0'/><address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>"
               "</hostdev>")
    el = ET.fromstring(portable_device_xml(hostdev))
    assert el.find("address") is None and el.find("alias") is None  # the guest address goes…
    assert el.find("source/address").get("bus") == "0x3b"  # type: ignore[union-attr]  # …the host's stays


def test_hostdev_xml_and_finding_pci_devices_in_a_domain() -> None:
    xml = hostdev_xml("0000:3b:00.1")
    assert xml == ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' "
                   "bus='0x3b' slot='0x00' function='0x1'/></source></hostdev>")
    with pytest.raises(ValueError, match="not a PCI address"):
        hostdev_xml("3b:00")
    domain = (f"<domain><devices><disk type='file'><target dev='vda'/></disk>{xml}"
              "<interface type='hostdev'><source><address type='pci' domain='0' bus='0x5e' slot='0x02' "
              "function='0x3'/></source></interface></devices></domain>")
    assert find_pci(domain, "0000:3b:00.1") is not None
    found = find_pci(domain, "0000:5e:02.3")
    assert found is not None and found.tag == "interface"
    assert find_pci(domain, "0000:3b:00.0") is None


def test_disk_names_follow_libvirts_scheme() -> None:
    assert [dev_name("sd", i) for i in (0, 1, 25, 26, 27, 701, 702)] == [
        "sda", "sdb", "sdz", "sdaa", "sdab", "sdzz", "sdaaa"]
    assert free_target("sdb", "scsi", {"sda"}) == "sdb"
    assert free_target("sdb", "scsi", {"sda", "sdb"}) == "sdc"
    assert free_target("vdb", "virtio", {"vda", "vdb", "vdc"}) == "vdd"
    assert free_target("xvdb", "xen", {"xvdb"}) == "xvda"


def test_numa_maps_pages_per_node() -> None:
    maps = "\n".join([
        "560e5157a000 default file=/usr/bin/qemu-system-x86_64 mapped=1015 mapmax=3 N0=1015 kernelpagesize_kB=4",
        "7f4b50000000 default anon=130 dirty=130 active=0 N0=100 N1=30 kernelpagesize_kB=4",
        "7f4b5f000000 bind:1 anon=1 dirty=1 N1=1 kernelpagesize_kB=4",
        "7f0000000000 default file=/memfd:ram-node0\\040(deleted) dirty=50 N0=50 kernelpagesize_kB=4",
        "7e0000000000 default file=/dev/hugepages/libvirt/qemu/x huge dirty=2 N1=2 kernelpagesize_kB=2048",
        "7f4b501ca000 default",
    ])
    assert pages_per_node(maps) == {0: 150, 1: 31 + 2 * 512}


def test_migration_uri_unsafe_and_pid_files() -> None:
    sock = "qemu+unix:///system?socket=/var/lib/hvc-lab/b/run/libvirt-sock"
    assert is_local("qemu:///system") and is_local(sock) and is_local("qemu+ssh://localhost/system")
    assert not is_local("qemu+ssh://root@kvm7.example/system")
    assert migration_uri(sock) == "tcp://127.0.0.1"
    assert migration_uri("qemu+ssh://root@kvm7.example:2222/system") == "tcp://kvm7.example"
    assert migration_uri("qemu+tcp://[fd00::7]/system") == "tcp://[fd00::7]"
    shared = "<domain><devices><disk type='file'><source file='/srv/vm/a.qcow2'/></disk>" \
             "<disk type='file' device='cdrom'/></devices></domain>"
    private = "<domain><devices><disk type='file'><source file='/var/lib/libvirt/images/a.qcow2'/></disk>" \
              "</devices></domain>"
    network = "<domain><devices><disk type='network'><source protocol='rbd' name='p/a'/></disk></devices></domain>"
    assert same_files_on_both(shared, "qemu:///system", sock)
    assert not same_files_on_both(shared, "qemu:///system", "qemu+ssh://kvm7/system")  # libvirt decides
    assert not same_files_on_both(private, "qemu:///system", sock)  # a daemon may mount that privately
    assert not same_files_on_both(network, "qemu:///system", sock)
    assert [str(p) for p in pid_files(sock, "g")] == ["/var/lib/hvc-lab/b/run/qemu/g.pid",
                                                       "/run/libvirt/qemu/g.pid", "/var/run/libvirt/qemu/g.pid"]
    assert pid_files("qemu:///session", "g") == []


# --------------------------------------------------------------------------- PCI handoff on fakes


class FakeNodeDev:
    def __init__(self, driver: str, fail_detach: bool = False) -> None:
        self.driver, self.fail_detach = driver, fail_detach
        self.calls: list[str] = []

    def XMLDesc(self, _flags: int) -> str:
        return f"<device><name>pci_0000_3b_00_1</name><driver><name>{self.driver}</name></driver></device>"

    def detachFlags(self, driver: str, _flags: int) -> None:
        self.calls.append(f"detach:{driver}")
        if self.fail_detach:
            raise libvirt.libvirtError("Failed to bind to vfio-pci")
        self.driver = "vfio-pci"

    def reAttach(self) -> None:
        self.calls.append("reattach")
        self.driver = "igb"


class FakeDom:
    def __init__(self, name: str, uuid: str, devices: str = "", refuse: str = "", persistent: bool = False) -> None:
        self.name, self.uuid, self.devices, self.refuse, self.persistent = name, uuid, devices, refuse, persistent
        self.calls: list[tuple[str, str, int]] = []
        self.on_detach: Callable[[str], None] = lambda _alias: None

    def XMLDesc(self, _flags: int) -> str:
        return f"<domain><name>{self.name}</name><uuid>{self.uuid}</uuid><devices>{self.devices}</devices></domain>"

    def isPersistent(self) -> bool:
        return self.persistent

    def detachDeviceFlags(self, xml: str, flags: int) -> None:
        self.calls.append(("detach", xml, flags))
        alias = ET.fromstring(xml).find("alias")
        self.devices = ""
        self.on_detach(alias.get("name", "") if alias is not None else "")

    def attachDeviceFlags(self, xml: str, flags: int) -> None:
        self.calls.append(("attach", xml, flags))
        if self.refuse:
            raise libvirt.libvirtError(self.refuse)
        self.devices = xml


class FakeTap:
    def __init__(self) -> None:
        self.queue: list[DomainEvent] = []

    def get(self, timeout: float = 0.0) -> DomainEvent | None:
        return self.queue.pop(0) if self.queue else None

    def __enter__(self) -> FakeTap:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass


class FakeBackend:
    """Just what LibvirtHandoff uses: snapshot, host_for, connected, events, refresh."""

    def __init__(self, inv: Inventory, doms: dict[str, FakeDom], nodedev: FakeNodeDev) -> None:
        self.inv, self.doms, self.nodedev, self.tap = inv, doms, nodedev, FakeTap()
        for dom in doms.values():
            dom.on_detach = lambda alias, d=dom: self.tap.queue.append(
                DomainEvent("fake:///", "device_removed", d.name, (alias,)))
        self.host = self
        self.uri = "fake:///"
        self.connection = self

    def snapshot(self) -> Inventory:
        return self.inv

    def host_for(self, _name: str) -> FakeBackend:
        return self

    def connected(self, _name: str, _role: str = "") -> FakeBackend:
        return self

    def events(self, *_args: object) -> FakeTap:
        return self.tap

    def refresh(self) -> Inventory:
        return self.inv

    def lookupByUUIDString(self, uuid: str) -> FakeDom:
        return next(d for d in self.doms.values() if d.uuid == uuid)

    def nodeDeviceLookupByName(self, _name: str) -> FakeNodeDev:
        return self.nodedev

    def close(self) -> None:
        pass


HOSTDEV = ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x3b' "
           "slot='0x00' function='0x1'/></source><alias name='hostdev0'/>"
           "<address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></hostdev>")


def fake_pci(owner: str | None, driver: str = "vfio-pci", *, refuse: str = "", fail_bind: bool = False,
             persistent: bool = False) -> tuple[FakeBackend, dict[str, FakeDom]]:
    vms = tuple(Vm(n, f"uuid-{n}", "h", VmState.RUNNING, 1, 1024, persistent=False,
                   devices=("0000:3b:00.1",) if n == owner else ()) for n in ("gpu-a", "gpu-b"))
    device = PciDevice("0000:3b:00.1", "h", "8086", "1521", "0x020000", driver, 41,
                       Owner(OwnerKind.VM, vm=owner) if owner else Owner(OwnerKind.HOST, driver=driver),
                       name="pci_0000_3b_00_1")
    inv = Inventory((), (Host("h", "fake:///", "s", None, 8, 1 << 20, HostState.CONNECTED),), vms, (device,), ())
    doms = {"gpu-a": FakeDom("gpu-a", "uuid-gpu-a", HOSTDEV if owner == "gpu-a" else "", persistent=persistent),
            "gpu-b": FakeDom("gpu-b", "uuid-gpu-b", refuse=refuse, persistent=persistent)}
    return FakeBackend(inv, doms, FakeNodeDev(driver, fail_bind)), doms


def run_fake(backend: FakeBackend, request: HandoffRequest) -> tuple[JobResult, list[JobEvent]]:
    op = LibvirtHandoff(backend, request)  # type: ignore[arg-type]
    events: list[JobEvent] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(handoff_mod, "open_job_connection", lambda _uri: backend)
        return op.run(events.append, threading.Event()), events


def test_pci_handoff_vm_to_vm_detaches_drains_binds_and_attaches() -> None:
    backend, doms = fake_pci("gpu-a")
    result, events = run_fake(backend, HandoffRequest("0000:3b:00.1", "gpu-b"))
    assert result.outcome is Outcome.SUCCEEDED, result
    assert [e.phase for e in events if isinstance(e, PhaseChanged)] == ["detaching", "draining", "binding",
                                                                         "attaching"]
    (detach,) = doms["gpu-a"].calls
    assert detach[0] == "detach" and detach[2] == libvirt.VIR_DOMAIN_AFFECT_LIVE
    ((verb, xml, flags),) = doms["gpu-b"].calls
    attached = ET.fromstring(xml)
    assert verb == "attach" and flags == libvirt.VIR_DOMAIN_AFFECT_LIVE
    assert attached.find("alias") is None and attached.find("address") is None
    assert attached.find("source/address").get("bus") == "0x3b"  # type: ignore[union-attr]
    assert backend.nodedev.calls == []  # already on vfio-pci: no rebinding


def test_pci_handoff_between_persistent_guests_moves_the_definitions_too() -> None:
    backend, doms = fake_pci("gpu-a", persistent=True)
    result, _ = run_fake(backend, HandoffRequest("0000:3b:00.1", "gpu-b"))
    assert result.outcome is Outcome.SUCCEEDED, result
    both = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    assert doms["gpu-a"].calls[0][2] == both and doms["gpu-b"].calls[0][2] == both


def test_pci_handoff_to_the_host_rebinds_the_host_driver() -> None:
    backend, _ = fake_pci("gpu-a")
    result, events = run_fake(backend, HandoffRequest("pci_0000_3b_00_1", "host"))
    assert result.outcome is Outcome.SUCCEEDED and "igb" in result.reason, result
    assert [e.phase for e in events if isinstance(e, PhaseChanged)] == ["detaching", "draining",
                                                                         "rebuilding host stack", "VM relinquished"]
    assert backend.nodedev.calls == ["reattach"]


def test_pci_handoff_from_the_host_binds_vfio_and_rolls_back_when_refused() -> None:
    backend, doms = fake_pci(None, driver="igb", refuse="unsupported configuration: no IOMMU")
    result, _ = run_fake(backend, HandoffRequest("0000:3b:00.1", "gpu-b"))
    assert result.outcome is Outcome.FAILED
    assert "attaching to VM failed: gpu-b refused" in result.reason and "no IOMMU" in result.reason
    assert "back with the host's driver (igb)" in result.reason
    assert backend.nodedev.calls == ["detach:vfio", "reattach"]
    ET.fromstring(doms["gpu-b"].calls[0][1])  # the attach XML was a well-formed <hostdev>
    assert doms["gpu-b"].calls[0][1] == hostdev_xml("0000:3b:00.1")


def test_pci_handoff_vm_to_vm_refused_goes_back_to_the_owner() -> None:
    backend, doms = fake_pci("gpu-a", refuse="internal error: unable to execute QEMU command 'device_add'")
    result, _ = run_fake(backend, HandoffRequest("0000:3b:00.1", "gpu-b"))
    assert result.outcome is Outcome.FAILED and "went back to gpu-a" in result.reason, result
    verb, xml, _ = doms["gpu-a"].calls[-1]
    assert verb == "attach" and ET.fromstring(xml).find("address").get("slot") == "0x07"  # type: ignore[union-attr]


def test_pci_drain_timeout_leaves_the_device_with_its_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff_mod, "DRAIN_TIMEOUT_S", 0.3)
    monkeypatch.setattr(handoff_mod, "XML_POLL_S", 0.05)
    backend, doms = fake_pci("gpu-a")
    doms["gpu-a"].detachDeviceFlags = lambda xml, flags: None  # type: ignore[method-assign]  # guest ignores it
    result, _ = run_fake(backend, HandoffRequest("0000:3b:00.1", "gpu-b"))
    assert result.outcome is Outcome.FAILED and "did not release" in result.reason, result
    assert doms["gpu-b"].calls == []


def test_pci_handoff_from_the_host_walks_the_s2_stages() -> None:
    backend, doms = fake_pci(None, driver="igb")
    result, events = run_fake(backend, HandoffRequest("0000:3b:00.1", "gpu-b"))
    assert result.outcome is Outcome.SUCCEEDED, result
    assert [e.phase for e in events if isinstance(e, PhaseChanged)] == ["building vfio stack", "attaching to VM",
                                                                         "host relinquished"]
    assert backend.nodedev.calls == ["detach:vfio"] and doms["gpu-b"].devices


def test_pci_handoff_from_the_host_that_does_not_let_go_returns_it_to_the_host() -> None:
    backend, doms = fake_pci(None, driver="igb")
    backend.nodedev.detachFlags = lambda driver, _flags: backend.nodedev.calls.append(  # type: ignore[method-assign]
        f"detach:{driver}")  # libvirt returns, but the host driver stays bound
    result, _ = run_fake(backend, HandoffRequest("0000:3b:00.1", "gpu-b"))
    assert result.outcome is Outcome.FAILED and "host relinquished failed" in result.reason, result
    assert [c[0] for c in doms["gpu-b"].calls] == ["attach", "detach"]  # taken off the VM again
