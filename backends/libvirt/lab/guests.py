"""The lab's guests: storage pools, images, domain XML, defining and starting, status, removal."""

from __future__ import annotations

import contextlib
import os
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libvirt

from backends.errors import HvcError
from backends.libvirt.lab.common import (
    POOL,
    PREFIX,
    URI_A,
    Conn,
    LabStatus,
    Progress,
    pool_dir,
    run,
    state_dir,
    uri_b,
)

# (name, home host, should run)
_GUESTS = (
    ("hvc-lab-numa", "a", True),
    ("hvc-lab-mover", "a", True),
    ("hvc-lab-idle", "a", False),
    ("hvc-lab-b1", "b", True),
)
_STATES = {0: "no state", 1: "running", 2: "idle", 3: "paused", 4: "in shutdown",
           5: "shut off", 6: "crashed", 7: "pmsuspended"}


# ---------------------------------------------------------------- virtualization


def kvm_usable() -> bool:
    """Does /dev/kvm really open read-write?"""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def virt_type(conn: Conn) -> tuple[str, str]:
    """("kvm" or "qemu", emulator path): KVM only if /dev/kvm really opens read-write."""
    conn.getCapabilities()  # probes every QEMU binary now, so host B can reuse the cache
    kinds = ["kvm", "qemu"] if kvm_usable() else ["qemu"]
    for kind in kinds:
        try:
            caps = ET.fromstring(conn.getDomainCapabilities(None, "x86_64", "pc", kind, 0))
        except libvirt.libvirtError:
            continue
        return kind, caps.findtext("path") or "/usr/bin/qemu-system-x86_64"
    raise HvcError("host A's QEMU driver offers neither kvm nor qemu (TCG) for x86_64 pc")


# ---------------------------------------------------------------- storage


def _qemu_img(path: Path, size: str, backing: Path | None = None) -> None:
    if path.exists():
        return
    tmp = path.with_name(path.name + ".tmp")
    args = ["-b", str(backing), "-F", "qcow2", str(tmp)] if backing else [str(tmp), size]
    run(["qemu-img", "create", "-q", "-f", "qcow2", *args], f"creating {path}")
    tmp.replace(path)


def _ensure_pool(conn: Conn, host: str) -> None:
    path = pool_dir(host)
    path.mkdir(parents=True, exist_ok=True)
    try:
        pool = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        pool = conn.storagePoolDefineXML(
            f"<pool type='dir'><name>{POOL}</name><target><path>{path}</path></target></pool>", 0)
    target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
    if target != str(path):
        raise HvcError(f"host {host.upper()} already has a pool {POOL} at {target}, not {path}",
                       hint="run `hvc lab down` with the old HVC_LAB_DIR first")
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)


def ensure_storage(conns: dict[str, Conn], progress: Progress) -> None:
    pa, pb = pool_dir("a"), pool_dir("b")
    pa.mkdir(parents=True, exist_ok=True)
    pb.mkdir(parents=True, exist_ok=True)
    progress("creating images (qcow2 chain base <- mid <- top, data volumes)")
    _qemu_img(pa / "hvc-lab-numa-base.qcow2", "64M")
    _qemu_img(pa / "hvc-lab-numa-mid.qcow2", "", pa / "hvc-lab-numa-base.qcow2")
    _qemu_img(pa / "hvc-lab-numa-top.qcow2", "", pa / "hvc-lab-numa-mid.qcow2")
    for path in (pa / "hvc-lab-mover-data.qcow2", pa / "hvc-lab-data2.qcow2",
                 pa / "hvc-lab-data3.qcow2", pb / "hvc-lab-data4.qcow2"):
        _qemu_img(path, "16M")
    for host, conn in conns.items():
        progress(f"storage pool {POOL} on host {host.upper()}")
        _ensure_pool(conn, host)


# ---------------------------------------------------------------- domain XML


def _disk(path: Path, dev: str, bus: str = "scsi") -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>"
            f"<source file='{path}'/><target dev='{dev}' bus='{bus}'/></disk>")


def _domain_xml(name: str, kind: str, emulator: str, devices: str = "", vcpus: int = 1,
                tuning: str = "", cpu: str = "") -> str:
    return f"""<domain type='{kind}'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu placement='static'>{vcpus}</vcpu>{tuning}
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/><apic/></features>{cpu}
  <devices>
    <emulator>{emulator}</emulator>{devices}
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>"""


def _guest_xml(name: str, kind: str, emulator: str, host_node: str) -> str:
    pa = pool_dir("a")
    scsi = "\n    <controller type='scsi' index='0' model='virtio-scsi'/>"
    if name == "hvc-lab-numa":
        cpus = sorted(os.sched_getaffinity(0))
        pins = "".join(f"<vcpupin vcpu='{v}' cpuset='{cpus[v % len(cpus)]}'/>" for v in (0, 1))
        tuning = (f"\n  <cputune>{pins}</cputune>"
                  f"\n  <numatune><memory mode='strict' nodeset='{host_node}'/></numatune>")
        cpu = ("\n  <cpu><numa><cell id='0' cpus='0' memory='64' unit='MiB'/>"
               "<cell id='1' cpus='1' memory='64' unit='MiB'/></numa></cpu>")
        disk = _disk(pa / "hvc-lab-numa-top.qcow2", "sda")
        return _domain_xml(name, kind, emulator, f"{scsi}\n    {disk}", 2, tuning, cpu)
    if name == "hvc-lab-mover":
        disk = _disk(pa / "hvc-lab-mover-data.qcow2", "sda")
        return _domain_xml(name, kind, emulator, f"{scsi}\n    {disk}")
    if name == "hvc-lab-b1":
        usb = "\n    <controller type='usb' index='0' model='qemu-xhci'/>"
        return _domain_xml(name, kind, emulator, scsi + usb)
    return _domain_xml(name, kind, emulator)


# ---------------------------------------------------------------- guests


def _lab_domains(conn: Conn) -> list[Any]:
    return [d for d in conn.listAllDomains(0) if d.name().startswith(PREFIX)]


def ensure_guests(conns: dict[str, Conn], kind: str, emulator: str,
                  progress: Progress) -> None:
    cell = ET.fromstring(conns["a"].getCapabilities()).find("host/topology/cells/cell")
    host_node = cell.get("id", "0") if cell is not None else "0"
    running = {d.name() for c in conns.values() for d in _lab_domains(c) if d.isActive()}
    for name, host, should_run in _GUESTS:
        if name in running:
            continue
        conn = conns[host]
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            progress(f"defining {name} on host {host.upper()}")
            dom = conn.defineXML(_guest_xml(name, kind, emulator, host_node))
        if should_run:
            progress(f"starting {name} on host {host.upper()}")
            try:
                dom.create()
            except libvirt.libvirtError as e:
                log = ("/var/log/libvirt" if host == "a" else state_dir() / "b" / "log")
                raise HvcError(f"cannot start {name}: {e.get_error_message()}",
                               hint=f"see {log}/qemu/{name}.log") from e


# ---------------------------------------------------------------- status


def collect(conns: dict[str, Conn | None], virt_type: str) -> LabStatus:
    uris = {"a": URI_A, "b": uri_b()}
    problems: list[str] = []
    guests: list[tuple[str, str, str]] = []
    for host, conn in conns.items():
        if conn is None:
            problems.append(f"host {host.upper()} daemon not running ({uris[host]} is silent)")
            continue
        for dom in sorted(_lab_domains(conn), key=lambda d: str(d.name())):
            guests.append((uris[host], dom.name(), _STATES.get(dom.info()[0], "unknown")))
        try:
            if not conn.storagePoolLookupByName(POOL).isActive():
                problems.append(f"host {host.upper()}: storage pool {POOL} is not active")
        except libvirt.libvirtError:
            problems.append(f"host {host.upper()}: storage pool {POOL} is missing")
    for name, host, should_run in _GUESTS:
        if conns[host] is None:
            continue
        where = [(uri, state) for uri, n, state in guests if n == name]
        if should_run and not any(state == "running" for _, state in where):
            problems.append(f"{name} is not running")
        elif not should_run and not where:
            problems.append(f"{name} is not defined on host {host.upper()}")
    return LabStatus(not problems, (URI_A, uri_b()), tuple(guests), virt_type, tuple(problems))


# ---------------------------------------------------------------- removal


def _remove_domain(dom: Any, host: str) -> str:
    """Destroy and undefine one guest; returns a progress line or raises libvirtError."""
    persistent = dom.isPersistent()  # a transient guest vanishes on destroy
    for attempt in range(20):  # a daemon that just started may still be reconnecting
        try:
            if dom.isActive():
                dom.destroy()  # QEMU takes 1-2 s to exit on SIGTERM, hence the threads
            break
        except libvirt.libvirtError:
            if attempt == 19:
                raise
            time.sleep(0.25)
    if persistent:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    return f"removed {dom.name()} from host {host.upper()}"


def remove_lab_objects(conns: dict[str, Conn], progress: Progress, problems: list[str]) -> None:
    """Remove every lab guest and pool from each host, then close its connection. A host that
    cannot list its guests is reported, and the rest goes on: the daemons must still stop."""
    jobs = []
    for host, conn in conns.items():
        try:
            jobs += [(dom, host) for dom in _lab_domains(conn)]
        except libvirt.libvirtError as e:
            problems.append(f"host {host.upper()}: cannot list its guests: {e.get_error_message()}")
    with ThreadPoolExecutor(max_workers=8) as pool_ex:
        futures = [(dom, host, pool_ex.submit(_remove_domain, dom, host)) for dom, host in jobs]
        for dom, host, fut in futures:  # report from this thread, not the workers
            try:
                progress(fut.result())
            except libvirt.libvirtError as e:
                problems.append(f"host {host.upper()}: {dom.name()}: {e.get_error_message()}")
    for host, conn in conns.items():
        with contextlib.suppress(libvirt.libvirtError):
            pool = conn.storagePoolLookupByName(POOL)
            if pool.isActive():
                pool.destroy()
            pool.undefine()
            progress(f"removed pool {POOL} from host {host.upper()}")
        conn.close()


def remove_guest_logs() -> None:
    """Host A's QEMU logs of lab guests (host B's go with the state dir)."""
    for log in Path("/var/log/libvirt/qemu").glob(f"{PREFIX}*.log"):
        log.unlink(missing_ok=True)
