"""What every part of the lab shares: its names, where it lives, its result type, two helpers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from backends.errors import HvcError

URI_A = "qemu:///system"
PREFIX = "hvc-lab-"
POOL = "hvc-lab"

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


def pool_dir(host: str) -> Path:
    return state_dir() / f"pool-{host}"


def quiet_libvirt() -> None:
    """Stop libvirt printing every failed call (e.g. while polling a socket) to stderr."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def run(cmd: list[str], what: str, env: dict[str, str] | None = None, log: str = "") -> str:
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


def remove_named(conns: list[Conn], prefix: str) -> None:
    """Remove every domain and lab-pool volume whose name starts with ``prefix`` on these hosts
    (what a run made, and what a failed earlier one left)."""
    for conn in conns:
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(prefix):
                persistent = dom.isPersistent()  # a transient domain is gone once destroyed
                if dom.isActive():
                    dom.destroy()
                if persistent:
                    dom.undefine()
        pool = conn.storagePoolLookupByName(POOL)
        pool.refresh(0)
        for vol in pool.listAllVolumes(0):
            if vol.name().startswith(prefix):
                vol.delete(0)


def try_open(uri: str) -> Conn | None:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError:
        return None
