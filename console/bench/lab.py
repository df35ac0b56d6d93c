"""Lab figures, measured side by side in one run on the two-host lab (each step under
``/tmp/hvc-lab.lock``, held only while it measures):

- live migration of ``hvc-lab-mover``: ``hvc migrate`` against ``virsh migrate --live`` with the
  flags hvc uses on the lab (``--unsafe``: the hosts share the files; ``--persistent
  --undefinesource``; ``--migrateuri tcp://127.0.0.1``), both as the commands a user runs,
  there and back, rounds alternating; the median of each. A second row runs the same
  migrations from an hvc already running (the console's case), beside the same virsh runs; a third
  makes the same ``migrate3`` call from a bare libvirt-python program (the floor of any Python
  process: interpreter and binding).
- replication shipping: a 3-layer qcow2 chain (``hvc-bench-rep-*``) shipped from host A's pool
  to host B's by ``LibvirtReplicate`` (the shipping phase, from its own phase events; the
  replica is verified byte-identical by the operation), against ``cp`` of the same layer files
  from pool A's directory to pool B's; rounds alternating; the median of each. The row judged
  against the target is what an operator gets: on the lab hvc proves it sees both pools' files
  and copies them directly (``replication.direct``). A second row forces every layer through
  libvirt streams (``direct.ENABLED = False``), as it would go between two machines.

Everything made here is named ``hvc-bench-rep…`` and removed at the end; the mover ends
where it started (running on host A).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from console.bench.figures import Row
from console.bench.procs import hvc, run_once

LOCK = "/tmp/hvc-lab.lock"
MOVER = "hvc-lab-mover"
REP = "hvc-bench-rep"
MIB = 1 << 20
# (layer, MiB of data written into it at its own offset): each layer differs from its parent.
LAYERS = (("base", 192), ("mid", 96), ("top", 48))


def held_by_caller() -> bool:
    """Whether a process this one runs under holds the lab lock open (``flock /tmp/hvc-lab.lock
    hvc bench``): taking it again would wait for ourselves."""
    pid = os.getppid()
    while pid > 1:
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd")
            if any(os.readlink(fd) == LOCK for fd in fds.iterdir()):
                return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Hold the lab lock (waiting for other users' runs) for the ``with`` body, unless the
    caller already holds it."""
    import fcntl

    if held_by_caller():
        yield
        return
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _status() -> Any:
    from backends.libvirt.lab import lab_status

    return lab_status()


# --------------------------------------------------------------------------- migration


def _virsh_migrate(src: str, dst: str) -> list[str]:
    return ["virsh", "-c", src, "migrate", "--live", "--unsafe", "--persistent", "--undefinesource",
            MOVER, dst, "--migrateuri", "tcp://127.0.0.1"]


def _hvc_migrate(uris: tuple[str, ...], dst: str) -> list[str]:
    return hvc("migrate", MOVER, "--to", dst, *itertools.chain.from_iterable(("-c", u) for u in uris))


# The same migrate3 call from the smallest Python program that can make it: what any Python
# process pays (the interpreter and libvirt's binding) before a migration starts, for the first row.
_BARE = """import sys, libvirt
src, dst = libvirt.open(sys.argv[1]), libvirt.open(sys.argv[2])
flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
src.lookupByName(sys.argv[3]).migrate3(dst, {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"},
                                       flags | libvirt.VIR_MIGRATE_UNSAFE)
"""


def _bare_migrate(src: str, dst: str) -> list[str]:
    return [sys.executable, "-c", _BARE, src, dst, MOVER]


def _running_on(uri: str) -> bool:
    done = subprocess.run(["virsh", "-c", uri, "domstate", MOVER], capture_output=True, text=True, check=False)
    return done.returncode == 0 and done.stdout.strip() == "running"


def _engine_migrate(backend: Any, dst: str) -> float:
    """Seconds of one migration run by an hvc already running (the console's case): the check
    against the inventory and the operation, with no process to start."""
    from backends.models import Outcome
    from backends.requests import MigrateRequest

    started = time.perf_counter()
    result = backend.prepare(MigrateRequest(MOVER, dst)).run(lambda _event: None, threading.Event())
    elapsed = time.perf_counter() - started
    if result.outcome is not Outcome.SUCCEEDED:
        raise RuntimeError(f"migration failed: {result.reason}")
    return elapsed


def migration_rows(rounds: int) -> list[Row]:
    """hvc vs virsh live migration of the mover, ``rounds`` × (there and back) each, alternating;
    and the same migrations run by an hvc already running, beside the same virsh runs."""
    from backends.libvirt.backend import LibvirtBackend

    hvc_s: list[float] = []
    engine_s: list[float] = []
    virsh_s: list[float] = []
    bare_s: list[float] = []
    with locked():
        status = _status()
        a, b = status.uris
        if not _running_on(a):
            raise RuntimeError(f"{MOVER} is not running on host A: run `hvc lab up` again")
        resident = LibvirtBackend(list(status.uris), poll_s=3600)
        try:
            for _ in range(rounds):
                for dst in (b, a):
                    hvc_s.append(run_once(_hvc_migrate(status.uris, dst))[0])
                for src, dst in ((a, b), (b, a)):
                    virsh_s.append(run_once(_virsh_migrate(src, dst))[0])
                for src, dst in ((a, b), (b, a)):
                    bare_s.append(run_once(_bare_migrate(src, dst))[0])
                for dst in (b, a):
                    resident.refresh()
                    engine_s.append(_engine_migrate(resident, dst))
        finally:
            resident.close()
            if _running_on(b) and not _running_on(a):
                subprocess.run(_virsh_migrate(b, a), capture_output=True, check=False, timeout=120)
    mine, engine, theirs = statistics.median(hvc_s), statistics.median(engine_s), statistics.median(virsh_s)
    bare = statistics.median(bare_s)
    return [
        Row(f"lab live migration, hvc vs virsh migrate --live ({MOVER}, {len(hvc_s)} each, there and back, "
            "each a process)", mine, "s", "≤ 1.1 × virsh", mine / theirs <= 1.1, "virsh migrate --live --unsafe",
            theirs, mine / theirs, note=f"hvc {_fmt(hvc_s)}; virsh {_fmt(virsh_s)}"),
        Row(f"lab live migration run by an hvc already running, as from the console (no process start; "
            f"{len(engine_s)})", engine, "s", "— (judged on the row above)", None, "virsh migrate --live --unsafe",
            theirs, engine / theirs, note=f"hvc {_fmt(engine_s)}"),
        Row(f"  the same call from a bare libvirt-python program, each a process (Python's floor; "
            f"{len(bare_s)})", bare, "s", "", None, "virsh migrate --live --unsafe", theirs, bare / theirs,
            note=_fmt(bare_s)),
    ]


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


# --------------------------------------------------------------------------- replication


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {done.stderr.strip()[-300:]}")


def _make_chain(pool: Path) -> list[Path]:
    paths: list[Path] = []
    for i, (name, mib) in enumerate(LAYERS):
        path = pool / f"{REP}-{name}.qcow2"
        backing = ["-b", str(paths[-1]), "-F", "qcow2"] if paths else []
        _run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(path), "1G"])
        _run(["qemu-io", "-c", f"write -P {0x11 * (i + 1):#x} {i * 256 * MIB} {mib * MIB}", str(path)])
        paths.append(path)
    return paths


def _domain_xml(virt_type: str, disk: Path) -> str:
    return f"""<domain type='{virt_type}'><name>{REP}</name><memory unit='MiB'>96</memory>
  <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><controller type='scsi' index='0' model='virtio-scsi'/>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
      <source file='{disk}'/><target dev='sda' bus='scsi'/></disk><memballoon model='none'/></devices>
</domain>"""


def _ship_once(uris: tuple[str, ...], host_b: str) -> tuple[float, int]:
    """(seconds in the shipping phase, bytes shipped) of one initial replication to host B."""
    from backends.libvirt.backend import LibvirtBackend
    from backends.libvirt.replication import LibvirtReplicate
    from backends.models import Outcome, PhaseChanged
    from backends.requests import ReplicateRequest

    backend = LibvirtBackend(list(uris), poll_s=3600)
    try:
        backend.refresh()
        events: list[Any] = []
        result = LibvirtReplicate(backend, ReplicateRequest(REP, to=host_b, rpo_s=600)).run(
            events.append, threading.Event())
    finally:
        backend.close()
    if result.outcome is not Outcome.SUCCEEDED:
        raise RuntimeError(f"replication failed: {result.reason}")
    marks = [(e.phase, e.at) for e in events if isinstance(e, PhaseChanged)] + [("", result.finished_at)]
    phases = {p: end - start for (p, start), (_, end) in itertools.pairwise(marks)}
    return phases["shipping"], int(result.reason.split(" bytes shipped")[0])


def _cp_once(files: list[Path], dest: Path) -> float:
    dest.mkdir()
    try:
        started = time.perf_counter()
        _run(["cp", *map(str, files), str(dest)])
        return time.perf_counter() - started
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@contextlib.contextmanager
def _direct_path(enabled: bool) -> Iterator[None]:
    from backends.libvirt.replication import direct

    was, direct.ENABLED = direct.ENABLED, enabled
    try:
        yield
    finally:
        direct.ENABLED = was


def _replication(rounds: int, direct_path: bool) -> tuple[list[float], list[float], int, int]:
    """(shipping seconds, cp seconds, bytes of the layer files, bytes shipped) over ``rounds``."""
    import libvirt

    from backends.libvirt.backend import LibvirtBackend
    from backends.libvirt.lab.common import POOL, pool_dir, remove_named

    ship_s: list[float] = []
    cp_s: list[float] = []
    with locked():
        status = _status()
        conns = [libvirt.open(u) for u in status.uris]
        try:
            remove_named(conns, REP)
            files = _make_chain(pool_dir("a"))
            conns[0].storagePoolLookupByName(POOL).refresh(0)
            conns[0].defineXML(_domain_xml(status.virt_type, files[-1]))
            probe = LibvirtBackend(list(status.uris), poll_s=3600)
            host_b = next(h.name for h in probe.snapshot().hosts if h.uri == status.uris[1])
            probe.close()
            shipped = 0
            for _ in range(rounds):
                remove_named(conns[1:], REP)  # the replica on host B
                # Each copy starts with no dirty pages left by the other: whichever came second
                # paid for the first one's writeback (cp right after a ship: 1.0–1.6 s, else 0.15).
                os.sync()
                with _direct_path(direct_path):
                    seconds, shipped = _ship_once(status.uris, host_b)
                ship_s.append(seconds)
                os.sync()
                cp_s.append(_cp_once(files, pool_dir("b") / f"{REP}-cp-{os.getpid()}"))
            size = sum(os.path.getsize(p) for p in files)
        finally:
            try:
                remove_named(conns, REP)
            finally:
                for conn in conns:
                    conn.close()
    return ship_s, cp_s, size, shipped


def replication_row(rounds: int) -> Row:
    """hvc replication shipping (as an operator gets it) vs ``cp`` of the same layer files
    between the two pools."""
    ship_s, cp_s, size, shipped = _replication(rounds, direct_path=True)
    mine, theirs = size / statistics.median(ship_s) / MIB, size / statistics.median(cp_s) / MIB
    ratio = mine / theirs
    return Row(f"lab replication shipping vs cp (3 qcow2 layers, {size / MIB:.0f} MiB, {shipped / MIB:.0f} MiB "
               f"shipped, {len(ship_s)} rounds)", mine, "MiB/s", "≥ 50 % of cp", ratio >= 0.5,
               "cp of the same files, pool A → pool B", theirs, ratio,
               note=f"shipping s {_fmt(ship_s)}; cp s {_fmt(cp_s)}")


def replication_stream_row(rounds: int) -> Row:
    """The same, every layer forced through libvirt streams as between two machines (no target:
    the target is judged on ``replication_row``)."""
    ship_s, cp_s, size, _ = _replication(rounds, direct_path=False)
    mine, theirs = size / statistics.median(ship_s) / MIB, size / statistics.median(cp_s) / MIB
    return Row(f"lab replication shipping through libvirt streams only, as between two machines "
               f"({size / MIB:.0f} MiB, {len(ship_s)} rounds)", mine, "MiB/s", "— (judged on the row above)",
               None, "cp of the same files, pool A → pool B", theirs, mine / theirs,
               note=f"shipping s {_fmt(ship_s)}; cp s {_fmt(cp_s)}")


def lab_rows(rounds: int) -> list[Row]:
    import libvirt

    from backends.errors import HvcError

    rows: list[Row] = []
    for measure, figure, unit, target in (
            (migration_rows, "lab live migration, hvc vs virsh migrate --live", "s", "≤ 1.1 × virsh"),
            (lambda n: [replication_row(n)], "lab replication shipping vs cp of the same files", "MiB/s",
             "≥ 50 % of cp"),
            (lambda n: [replication_stream_row(n)], "lab replication shipping through libvirt streams only",
             "MiB/s", "—")):
        try:
            rows.extend(measure(rounds))
        except (RuntimeError, OSError, HvcError, libvirt.libvirtError) as exc:
            rows.append(Row(figure, None, unit, target, note=f"failed: {str(exc).strip()[-200:]}"))
    return rows
