"""The lab's daemons: packages, users, config files, state file and lock, host A and host B.

Host B is a second ``libvirtd`` in a private mount namespace; see the package docstring.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from backends.errors import HvcError
from backends.libvirt.lab.common import PREFIX, URI_A, Conn, Progress, run, state_dir, try_open, uri_b

# libvirtd runs under a reaper of its own, so that a stopped QEMU is gone at once (see reaper.py).
_REAPED = (sys.executable, "-m", "backends.libvirt.lab.reaper")

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


# ---------------------------------------------------------------- processes


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


# ---------------------------------------------------------------- state file and lock


def load() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state_dir() / "state.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def save(st: dict[str, Any]) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    tmp = state_dir() / "state.json.tmp"
    tmp.write_text(json.dumps(st, indent=2) + "\n")
    tmp.replace(state_dir() / "state.json")


@contextlib.contextmanager
def lock() -> Iterator[None]:
    """One lab operation at a time (tests may start several)."""
    tag = hashlib.sha1(str(state_dir()).encode()).hexdigest()[:8]
    with open(f"/run/lock/hvc-lab-{tag}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def remove_state_dir(problems: list[str]) -> None:
    """Delete host B's dirs, both pools' images and the state file, then the dir if empty."""
    base = state_dir()
    for sub in ("b", "pool-a", "pool-b"):
        shutil.rmtree(base / sub, ignore_errors=True)
        if (base / sub).exists():
            problems.append(f"could not remove {base / sub}")
    (base / "state.json").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        base.rmdir()


# ---------------------------------------------------------------- machine set-up


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


def missing_packages() -> list[str]:
    missing = []
    for pkg in PACKAGES:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                              capture_output=True, text=True, check=False)
        if "install ok installed" not in done.stdout:
            missing.append(pkg)
    return missing


def ensure_packages(progress: Progress) -> None:
    if shutil.which("dpkg-query") is None:
        raise HvcError("the lab needs a Debian/Ubuntu machine (dpkg-query not found)")
    missing = missing_packages()
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", *missing]
    if os.geteuid() != 0:
        raise HvcError(f"missing packages; run: sudo apt-get install -y {' '.join(missing)}")
    progress(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(cmd, "package install", env)
    except HvcError:
        progress("apt-get install failed; running apt-get update and retrying")
        run(["apt-get", "update"], "apt-get update", env)
        run(cmd, "package install", env)


def ensure_users() -> None:
    """libvirtd aborts at start unless its compiled-in default user exists."""
    for group in ("kvm", "libvirt-qemu"):
        try:
            grp.getgrnam(group)
        except KeyError:
            run(["groupadd", "--system", group], f"creating group {group}")
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        run(["useradd", "--system", "-g", "libvirt-qemu", "-G", "kvm", "-d", "/var/lib/libvirt",
             "-s", "/usr/sbin/nologin", "libvirt-qemu"], "creating user libvirt-qemu")


# ---------------------------------------------------------------- starting the daemons


def _wait_open(uri: str, what: str, pid: Callable[[], int | None], log: str,
               host_b: bool = False) -> Conn:
    start = time.monotonic()
    while time.monotonic() - start < WAIT_S:
        conn = try_open(uri)
        if conn is not None:
            return conn
        if time.monotonic() - start > 2 and not _alive(pid(), "libvirtd", host_b):
            raise HvcError(f"{what} libvirtd exited during start-up; see {log}")
        time.sleep(0.2)
    raise HvcError(f"{what} libvirtd does not answer on {uri} after {WAIT_S:.0f} s; see {log}")


def start_a(st: dict[str, Any], progress: Progress) -> Conn:
    conn = try_open(URI_A)
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
            run([*_REAPED, comm, "-d"] if comm == "libvirtd" else [comm, "-d"], f"starting host A {comm}", env, log)
            st[f"a_{comm}"] = _pidfile(Path(f"/run/{comm}.pid"))
            save(st)
    return _wait_open(URI_A, "host A", lambda: _pidfile(Path("/run/libvirtd.pid")), log)


def start_b(st: dict[str, Any], progress: Progress) -> Conn:
    conn = try_open(uri_b())
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
    save(st)
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
    run([*_REAPED, "unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"set -e; {mounts}; exec libvirtd -d -p {pidfile}"], "starting host B libvirtd",
        log=log)
    st["b_libvirtd"] = _pidfile(pidfile)
    save(st)
    return _wait_open(uri_b(), "host B", lambda: _pidfile(pidfile), log, host_b=True)


# ---------------------------------------------------------------- stopping the daemons


def stop_host_b() -> None:
    """Stop host B's daemon only (its guests keep running), as a failing host would.

    Fault tests use it; ``lab_up`` starts the daemon again, which reattaches the guests.
    """
    with lock():
        _stop(_pidfile(state_dir() / "b" / "run" / "libvirtd.pid"), "libvirtd", host_b=True)


def stop_daemons(st: dict[str, Any], progress: Progress, problems: list[str]) -> None:
    """Stop host B, and host A's daemons only if the lab started them (``st`` says)."""
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


def kill_stray_qemus(progress: Progress) -> None:
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
