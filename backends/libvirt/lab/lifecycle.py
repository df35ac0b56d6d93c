"""Bringing the lab up, asking how it is, and taking it down: the daemon and guest steps in order."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import libvirt

from backends.errors import HvcError
from backends.libvirt.lab import daemons, guests
from backends.libvirt.lab.common import POOL, PREFIX, URI_A, LabStatus, quiet_libvirt, try_open, uri_b


def _guess_virt_type() -> str:
    stored = daemons.load().get("virt_type")
    if isinstance(stored, str):
        return stored
    return "kvm" if guests.kvm_usable() else "qemu"


def lab_status() -> LabStatus:
    quiet_libvirt()
    return guests.collect({"a": try_open(URI_A), "b": try_open(uri_b())}, _guess_virt_type())


def lab_up(progress: Callable[[str], None] = lambda s: None) -> LabStatus:
    """Bring the lab up (idempotent; also repairs a half-built lab)."""
    status = lab_status()
    if status.up:
        return status
    if os.geteuid() != 0:
        missing = daemons.missing_packages() if shutil.which("dpkg-query") else []
        if missing:
            raise HvcError(f"missing packages; run: sudo apt-get install -y {' '.join(missing)}")
        raise HvcError("the lab starts libvirt daemons and needs root; run `sudo hvc lab up`")
    daemons.ensure_packages(progress)
    with daemons.lock():
        st = daemons.load()
        try:
            daemons.ensure_users()
            conn_a = daemons.start_a(st, progress)
            kind, emulator = guests.virt_type(conn_a)  # first probe fills the cache B copies
            st["virt_type"] = kind
            daemons.save(st)
            progress(f"virtualization: {kind}")
            conns = {"a": conn_a, "b": daemons.start_b(st, progress)}
            guests.ensure_storage(conns, progress)
            guests.ensure_guests(conns, kind, emulator, progress)
        except (HvcError, libvirt.libvirtError, OSError) as e:
            msg = e.one_line() if isinstance(e, HvcError) else (
                e.get_error_message() if isinstance(e, libvirt.libvirtError) else str(e))
            raise HvcError(f"lab up failed: {msg}",
                           hint="the lab is partly up; rerun `hvc lab up` or run `hvc lab down`"
                           ) from e
        status = guests.collect(dict(conns), kind)
    if not status.up:
        raise HvcError("lab up finished but: " + "; ".join(status.problems),
                       hint="rerun `hvc lab up` or run `hvc lab down`")
    return status


def lab_down(progress: Callable[[str], None] = lambda s: None) -> LabStatus:
    """Remove everything the lab created (see the package docstring for what stays)."""
    quiet_libvirt()
    if os.geteuid() != 0:
        raise HvcError("removing the lab needs root; run `sudo hvc lab down`")
    problems: list[str] = []
    with daemons.lock():
        st = daemons.load()
        conn_a = try_open(URI_A)
        leftovers = [*Path("/etc/libvirt/qemu").glob(f"{PREFIX}*.xml"),
                     *Path("/etc/libvirt/storage").glob(f"{POOL}.xml")]
        if conn_a is None and leftovers and shutil.which("libvirtd"):
            progress("host A holds lab definitions but is down: starting it to clean up")
            conn_a = daemons.start_a(st, progress)
        conns = {h: c for h, c in (("a", conn_a), ("b", try_open(uri_b()))) if c is not None}
        guests.remove_lab_objects(conns, progress, problems)
        daemons.stop_daemons(st, progress, problems)
        daemons.kill_stray_qemus(progress)
        guests.remove_guest_logs()
        daemons.remove_state_dir(problems)
    if not st.get("a_libvirtd") and try_open(URI_A) is not None:
        progress("host A libvirtd left running: the lab did not start it")
    return LabStatus(False, (URI_A, uri_b()), (), str(st.get("virt_type", "")), tuple(problems))
