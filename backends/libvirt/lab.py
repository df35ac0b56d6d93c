"""A two-host libvirt lab on this one machine, for tests and demos.

Host A is the machine's own ``libvirtd`` (``qemu:///system``). Host B is a second ``libvirtd``
in a private mount namespace (``unshare --mount``) with its own run/lib/etc/log/cache dirs
bind-mounted from ``<state>/b``, its own pid file, host UUID and migration port range, and
``stdio_handler = "file"``. Its socket is ``<state>/b/run/libvirt-sock``. Guest images live
in ``<state>/pool-a`` and ``<state>/pool-b`` (outside ``/var/lib/libvirt``), so both daemons
see the same paths: live migration needs no storage copy. The state dir is
``/var/lib/hvc-lab`` unless ``HVC_LAB_DIR`` says otherwise; ``state.json`` in it records what
the lab started.

``lab_down`` destroys and undefines every ``hvc-lab-*`` guest and the ``hvc-lab`` pools on
both hosts, stops host B and (only if the lab started them) host A's ``libvirtd`` and
``virtlogd``, and deletes the state dir and the guests' QEMU logs. It leaves in place: the
edits to ``/etc/libvirt/qemu.conf`` (user/group root, security_driver none), the users and
groups it created (``kvm``, ``libvirt-qemu``), the standard dirs it created under
``/var/{lib,log,cache}/libvirt`` and ``/run/libvirt``, the installed packages, and the lock
file ``/run/lock/hvc-lab-*.lock``.

Host B runs with ``cgroup_controllers = []``: both daemons number their domains from 1 and
would otherwise fight over the same ``machine/qemu-<id>-<name>`` cgroup directories.
Everything here needs root. Run ``python -m backends.libvirt.lab up|status|down`` by hand.

Live migration between the hosts (verified): flags ``VIR_MIGRATE_LIVE | VIR_MIGRATE_UNSAFE``
with ``VIR_MIGRATE_PARAM_URI = "tcp://127.0.0.1"`` (``virsh migrate --live --unsafe <dom>
<other uri> --migrateuri tcp://127.0.0.1``). UNSAFE is required because libvirt 9 refuses any
file disk on a local file system ("Migration without shared storage is unsafe") whatever its
cache mode; here the storage really is shared (same files, ``cache='none'``), so it is safe.
The guest arrives on the destination as a transient domain; the source keeps its definition.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from backends.errors import HvcError

URI_A = "qemu:///system"
PREFIX = "hvc-lab-"
POOL = "hvc-lab"
PACKAGES = (
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "qemu-system-x86",
    "qemu-utils",
)
B_MIGRATION_PORTS = (49300, 49363)  # host A keeps libvirt's default 49152-49215
WAIT_S = 30.0
_B_BINDS = (  # (dir under <state>/b, where host B sees it)
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("etc", "/etc/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
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

Progress = Callable[[str], None]
Conn = Any  # libvirt.virConnect (the bindings are untyped)


@dataclass(frozen=True)
class LabStatus:
    up: bool
    uris: tuple[str, ...]  # (host A uri, host B uri)
    guests: tuple[tuple[str, str, str], ...]  # (uri, guest name, state)
    virt_type: str  # "kvm" or "qemu" (TCG)
    problems: tuple[str, ...]


def state_dir() -> Path:
    return Path(os.environ.get("HVC_LAB_DIR", "/var/lib/hvc-lab"))


def uri_b() -> str:
    return f"qemu+unix:///system?socket={state_dir() / 'b' / 'run' / 'libvirt-sock'}"


def _pool_dir(host: str) -> Path:
    return state_dir() / f"pool-{host}"


# ---------------------------------------------------------------- small helpers


def _quiet_libvirt() -> None:
    """Stop libvirt printing every failed call (e.g. while polling a socket) to stderr."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None, log: str = "") -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except OSError as e:
        raise HvcError(f"{what}: cannot run {cmd[0]}: {e.strerror}") from e
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        raise HvcError(f"{what}: `{' '.join(cmd)}` failed: {detail}",
                       hint=f"see {log} and the config files it reads" if log else "")
    return done.stdout


def _open(uri: str) -> Conn | None:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError:
        return None


def _alive(pid: int | None, comm: str, host_b: bool = False) -> bool:
    """Is ``pid`` a live ``comm`` of host A (or B)? Pid files can outlive and lie."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    is_b = str(state_dir() / "b") in argv
    return name == comm[:15] and state != "Z" and is_b == host_b


def _pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop(pid: int | None, comm: str, host_b: bool = False, timeout: float = 15.0) -> None:
    if not _alive(pid, comm, host_b):
        return
    assert pid is not None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid, comm, host_b):
            time.sleep(0.1)
        if not _alive(pid, comm, host_b):
            return
    raise HvcError(f"{comm} (pid {pid}) does not exit even after SIGKILL")


def _load() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state_dir() / "state.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def _save(st: dict[str, Any]) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    tmp = state_dir() / "state.json.tmp"
    tmp.write_text(json.dumps(st, indent=2) + "\n")
    tmp.replace(state_dir() / "state.json")


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One lab operation at a time (tests may start several)."""
    tag = hashlib.sha1(str(state_dir()).encode()).hexdigest()[:8]
    with open(f"/run/lock/hvc-lab-{tag}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _set_conf(path: Path, settings: dict[str, str]) -> bool:
    """Set ``key = value`` lines (values already quoted) in a libvirt conf file."""
    lines = path.read_text().splitlines() if path.exists() else []
    todo = dict(settings)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0].strip()
        if "=" in line and key in todo:
            lines[i] = f"{key} = {todo.pop(key)}"
    lines += [f"{k} = {v}" for k, v in todo.items()]
    text = "\n".join(lines) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


# ---------------------------------------------------------------- machine set-up


def _missing_packages() -> list[str]:
    missing = []
    for pkg in PACKAGES:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                              capture_output=True, text=True, check=False)
        if "install ok installed" not in done.stdout:
            missing.append(pkg)
    return missing


def _ensure_packages(progress: Progress) -> None:
    if shutil.which("dpkg-query") is None:
        raise HvcError("the lab needs a Debian/Ubuntu machine (dpkg-query not found)")
    missing = _missing_packages()
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", *missing]
    if os.geteuid() != 0:
        raise HvcError(f"missing packages; run: sudo apt-get install -y {' '.join(missing)}")
    progress(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        _run(cmd, "package install", env)
    except HvcError:
        progress("apt-get install failed; running apt-get update and retrying")
        _run(["apt-get", "update"], "apt-get update", env)
        _run(cmd, "package install", env)


def _ensure_users() -> None:
    """libvirtd aborts at start unless its compiled-in default user exists."""
    for group in ("kvm", "libvirt-qemu"):
        try:
            grp.getgrnam(group)
        except KeyError:
            _run(["groupadd", "--system", group], f"creating group {group}")
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        _run(["useradd", "--system", "-g", "libvirt-qemu", "-G", "kvm", "-d", "/var/lib/libvirt",
              "-s", "/usr/sbin/nologin", "libvirt-qemu"], "creating user libvirt-qemu")


def _wait_open(uri: str, what: str, pid: Callable[[], int | None], log: str,
               host_b: bool = False) -> Conn:
    start = time.monotonic()
    while time.monotonic() - start < WAIT_S:
        conn = _open(uri)
        if conn is not None:
            return conn
        if time.monotonic() - start > 2 and not _alive(pid(), "libvirtd", host_b):
            raise HvcError(f"{what} libvirtd exited during start-up; see {log}")
        time.sleep(0.2)
    raise HvcError(f"{what} libvirtd does not answer on {uri} after {WAIT_S:.0f} s; see {log}")


def _start_a(st: dict[str, Any], progress: Progress) -> Conn:
    conn = _open(URI_A)
    if conn is not None:
        return conn
    if _set_conf(Path("/etc/libvirt/qemu.conf"),
                 {"user": '"root"', "group": '"root"', "security_driver": '"none"'}):
        progress("edited /etc/libvirt/qemu.conf (user/group root, security_driver none)")
    for d in ("/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt"):
        Path(d).mkdir(parents=True, exist_ok=True)
    log = "/var/log/libvirt/libvirtd.log"
    env = {**os.environ, "LIBVIRT_LOG_OUTPUTS": f"3:file:{log}"}
    for comm in ("virtlogd", "libvirtd"):
        if not _alive(_pidfile(Path(f"/run/{comm}.pid")), comm):
            progress(f"starting host A {comm}")
            _run([comm, "-d"], f"starting host A {comm}", env, log)
            st[f"a_{comm}"] = _pidfile(Path(f"/run/{comm}.pid"))
            _save(st)
    return _wait_open(URI_A, "host A", lambda: _pidfile(Path("/run/libvirtd.pid")), log)


def _start_b(st: dict[str, Any], progress: Progress) -> Conn:
    conn = _open(uri_b())
    if conn is not None:
        return conn
    base = state_dir() / "b"
    pidfile = base / "run" / "libvirtd.pid"
    _stop(_pidfile(pidfile), "libvirtd", host_b=True)  # a hung leftover of an earlier run
    for sub, _ in _B_BINDS:
        (base / sub).mkdir(parents=True, exist_ok=True)
    etc = Path("/etc/libvirt")
    for f in etc.iterdir():  # config files only: not qemu/, storage/ (host A's objects)
        if f.is_file() and f.suffix == ".conf":
            shutil.copy2(f, base / "etc" / f.name)
    caps = Path("/var/cache/libvirt/qemu/capabilities")  # same QEMU: saves a ~4 s probe
    if caps.is_dir():
        shutil.copytree(caps, base / "cache" / "qemu" / "capabilities", dirs_exist_ok=True)
    st.setdefault("b_host_uuid", str(uuid.uuid4()))
    _save(st)
    _set_conf(base / "etc" / "libvirtd.conf", {
        "host_uuid": f'"{st["b_host_uuid"]}"',
        "log_outputs": '"3:file:/var/log/libvirt/libvirtd.log"',
    })
    _set_conf(base / "etc" / "qemu.conf", {
        "user": '"root"', "group": '"root"', "security_driver": '"none"',
        "stdio_handler": '"file"', "cgroup_controllers": "[ ]",
        "migration_port_min": str(B_MIGRATION_PORTS[0]),
        "migration_port_max": str(B_MIGRATION_PORTS[1]),
    })
    mounts = "; ".join(f"mount --bind {base / sub} {dst}" for sub, dst in _B_BINDS)
    progress("starting host B libvirtd (private mount namespace)")
    log = str(base / "log" / "libvirtd.log")
    _run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
          f"set -e; {mounts}; exec libvirtd -d -p {pidfile}"], "starting host B libvirtd",
         log=log)
    st["b_libvirtd"] = _pidfile(pidfile)
    _save(st)
    return _wait_open(uri_b(), "host B", lambda: _pidfile(pidfile), log, host_b=True)


def _virt_type(conn: Conn) -> tuple[str, str]:
    """("kvm" or "qemu", emulator path): KVM only if /dev/kvm really opens read-write."""
    conn.getCapabilities()  # probes every QEMU binary now, so host B can reuse the cache
    kinds = ["qemu"]
    with contextlib.suppress(OSError):
        os.close(os.open("/dev/kvm", os.O_RDWR))
        kinds.insert(0, "kvm")
    for kind in kinds:
        try:
            caps = ET.fromstring(conn.getDomainCapabilities(None, "x86_64", "pc", kind, 0))
        except libvirt.libvirtError:
            continue
        return kind, caps.findtext("path") or "/usr/bin/qemu-system-x86_64"
    raise HvcError("host A's QEMU driver offers neither kvm nor qemu (TCG) for x86_64 pc")


# ---------------------------------------------------------------- storage and guests


def _qemu_img(path: Path, size: str, backing: Path | None = None) -> None:
    if path.exists():
        return
    tmp = path.with_name(path.name + ".tmp")
    args = ["-b", str(backing), "-F", "qcow2", str(tmp)] if backing else [str(tmp), size]
    _run(["qemu-img", "create", "-q", "-f", "qcow2", *args], f"creating {path}")
    tmp.replace(path)


def _ensure_pool(conn: Conn, host: str) -> None:
    path = _pool_dir(host)
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
    pa = _pool_dir("a")
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


def _ensure_storage(conns: dict[str, Conn], progress: Progress) -> None:
    pa, pb = _pool_dir("a"), _pool_dir("b")
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


def _lab_domains(conn: Conn) -> list[Any]:
    return [d for d in conn.listAllDomains(0) if d.name().startswith(PREFIX)]


def _ensure_guests(conns: dict[str, Conn], kind: str, emulator: str,
                   progress: Progress) -> None:
    cell = ET.fromstring(conns["a"].getCapabilities()).find("host/topology/cells/cell")
    host_node = cell.get("id", "0") if cell is not None else "0"
    running = {d.name() for c in conns.values() for d in _lab_domains(c) if d.isActive()}
    for name, host, run in _GUESTS:
        if name in running:
            continue
        conn = conns[host]
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            progress(f"defining {name} on host {host.upper()}")
            dom = conn.defineXML(_guest_xml(name, kind, emulator, host_node))
        if run:
            progress(f"starting {name} on host {host.upper()}")
            try:
                dom.create()
            except libvirt.libvirtError as e:
                log = ("/var/log/libvirt" if host == "a" else state_dir() / "b" / "log")
                raise HvcError(f"cannot start {name}: {e.get_error_message()}",
                               hint=f"see {log}/qemu/{name}.log") from e


# ---------------------------------------------------------------- status


def _collect(conns: dict[str, Conn | None], virt_type: str) -> LabStatus:
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
    for name, host, run in _GUESTS:
        if conns[host] is None:
            continue
        where = [(uri, state) for uri, n, state in guests if n == name]
        if run and not any(state == "running" for _, state in where):
            problems.append(f"{name} is not running")
        elif not run and not where:
            problems.append(f"{name} is not defined on host {host.upper()}")
    return LabStatus(not problems, (URI_A, uri_b()), tuple(guests), virt_type, tuple(problems))


def _guess_virt_type() -> str:
    stored = _load().get("virt_type")
    if isinstance(stored, str):
        return stored
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return "kvm"
    except OSError:
        return "qemu"


def lab_status() -> LabStatus:
    _quiet_libvirt()
    return _collect({"a": _open(URI_A), "b": _open(uri_b())}, _guess_virt_type())


def stop_host_b() -> None:
    """Stop host B's daemon only (its guests keep running), as a failing host would.

    Fault tests use it; ``lab_up`` starts the daemon again, which reattaches the guests.
    """
    with _lock():
        _stop(_pidfile(state_dir() / "b" / "run" / "libvirtd.pid"), "libvirtd", host_b=True)


# ---------------------------------------------------------------- up and down


def lab_up(progress: Callable[[str], None] = lambda s: None) -> LabStatus:
    """Bring the lab up (idempotent; also repairs a half-built lab)."""
    status = lab_status()
    if status.up:
        return status
    if os.geteuid() != 0:
        missing = _missing_packages() if shutil.which("dpkg-query") else []
        if missing:
            raise HvcError(f"missing packages; run: sudo apt-get install -y {' '.join(missing)}")
        raise HvcError("the lab starts libvirt daemons and needs root; run `sudo hvc lab up`")
    _ensure_packages(progress)
    with _lock():
        st = _load()
        try:
            _ensure_users()
            conn_a = _start_a(st, progress)
            kind, emulator = _virt_type(conn_a)  # first probe fills the cache B copies
            st["virt_type"] = kind
            _save(st)
            progress(f"virtualization: {kind}")
            conns = {"a": conn_a, "b": _start_b(st, progress)}
            _ensure_storage(conns, progress)
            _ensure_guests(conns, kind, emulator, progress)
        except (HvcError, libvirt.libvirtError, OSError) as e:
            msg = e.one_line() if isinstance(e, HvcError) else (
                e.get_error_message() if isinstance(e, libvirt.libvirtError) else str(e))
            raise HvcError(f"lab up failed: {msg}",
                           hint="the lab is partly up; rerun `hvc lab up` or run `hvc lab down`"
                           ) from e
        status = _collect(dict(conns), kind)
    if not status.up:
        raise HvcError("lab up finished but: " + "; ".join(status.problems),
                       hint="rerun `hvc lab up` or run `hvc lab down`")
    return status


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


def _remove_lab_objects(conns: dict[str, Conn], progress: Progress, problems: list[str]) -> None:
    jobs = [(dom, host) for host, conn in conns.items() for dom in _lab_domains(conn)]
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


def _kill_stray_qemus(progress: Progress) -> None:
    """QEMU processes outlive their daemon: kill any lab guest left without one."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qemu-system" in argv[0] and any(a.startswith(b"guest=" + PREFIX.encode())
                                             for a in argv):
            progress(f"killing stray QEMU pid {proc.name}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def lab_down(progress: Callable[[str], None] = lambda s: None) -> LabStatus:
    """Remove everything the lab created (see the module docstring for what stays)."""
    _quiet_libvirt()
    if os.geteuid() != 0:
        raise HvcError("removing the lab needs root; run `sudo hvc lab down`")
    problems: list[str] = []
    with _lock():
        st = _load()
        conn_a = _open(URI_A)
        leftovers = [*Path("/etc/libvirt/qemu").glob(f"{PREFIX}*.xml"),
                     *Path("/etc/libvirt/storage").glob(f"{POOL}.xml")]
        if conn_a is None and leftovers and shutil.which("libvirtd"):
            progress("host A holds lab definitions but is down: starting it to clean up")
            conn_a = _start_a(st, progress)
        conns = {h: c for h, c in (("a", conn_a), ("b", _open(uri_b()))) if c is not None}
        _remove_lab_objects(conns, progress, problems)
        b_pid = _pidfile(state_dir() / "b" / "run" / "libvirtd.pid") or st.get("b_libvirtd")
        for pid, comm, host_b, what in (
            (b_pid, "libvirtd", True, "host B libvirtd"),
            (st.get("a_libvirtd"), "libvirtd", False, "host A libvirtd"),
            (st.get("a_virtlogd"), "virtlogd", False, "host A virtlogd"),
        ):
            if _alive(pid, comm, host_b):
                progress(f"stopping {what} (pid {pid})")
                try:
                    _stop(pid, comm, host_b)
                except HvcError as e:
                    problems.append(e.message)
        _kill_stray_qemus(progress)
        for log in Path("/var/log/libvirt/qemu").glob(f"{PREFIX}*.log"):
            log.unlink(missing_ok=True)
        base = state_dir()
        for sub in ("b", "pool-a", "pool-b"):
            shutil.rmtree(base / sub, ignore_errors=True)
            if (base / sub).exists():
                problems.append(f"could not remove {base / sub}")
        (base / "state.json").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            base.rmdir()
    if not st.get("a_libvirtd") and _open(URI_A) is not None:
        progress("host A libvirtd left running: the lab did not start it")
    return LabStatus(False, (URI_A, uri_b()), (), str(st.get("virt_type", "")), tuple(problems))


def _print(status: LabStatus) -> None:
    print(f"up: {status.up}   virt_type: {status.virt_type}")
    for uri in status.uris:
        print(f"  host {uri}")
    for uri, name, state in status.guests:
        print(f"  {name:<16} {state:<10} {uri}")
    for problem in status.problems:
        print(f"  problem: {problem}")


if __name__ == "__main__":
    actions: dict[str, Callable[[], LabStatus]] = {
        "up": lambda: lab_up(print), "status": lab_status, "down": lambda: lab_down(print)}
    if len(sys.argv) != 2 or sys.argv[1] not in actions:
        sys.exit("usage: python -m backends.libvirt.lab up|status|down")
    try:
        _print(actions[sys.argv[1]]())
    except HvcError as err:
        sys.exit(f"hvc lab: {err.one_line()}")
