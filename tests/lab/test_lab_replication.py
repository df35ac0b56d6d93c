"""Replication on the two-host lab: a 3-layer qcow2 chain ships from host A to host B (copied
directly: hvc proves it sees both pools' files; and, forced, through libvirt volume streams, to
the same replica), a 4th layer ships alone (also after an interrupted try), a corrupted
replica layer fails verification and is re-shipped, and a test failover boots on host B.
A planned failover moves the guest to host B onto its replica chain and reverses replication:
the next sync ships from B back to A only what B wrote.

Everything this file creates is named ``hvc-lab-rep…`` and removed at the end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
import xxhash

from backends.base import Operation
from backends.errors import BadInput
from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.lab import LabStatus
from backends.libvirt.lab.common import POOL, pool_dir, remove_named
from backends.libvirt.replication import (
    LibvirtFailover,
    LibvirtReplicate,
    canonical_head,
    direct,
    read_record,
    replica_links,
    repoint,
    ship,
    trial_name,
    trial_overlay_name,
    verify,
    write_record,
)
from backends.libvirt.replication.checksum import algorithm_of
from backends.models import JobEvent, JobResult, LayerState, Outcome, PhaseChanged, Progress
from backends.requests import FailoverRequest, ReplicateRequest

VM = "hvc-lab-rep"
MIB = 1 << 20
# (layer, bytes of data written into it, fill pattern): each layer differs from its parent.
LAYERS = (("base", 48 * MIB, 0x11), ("mid", 16 * MIB, 0x22), ("top", 8 * MIB, 0x33))
FOURTH = ("l4", 4 * MIB, 0x44)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _layer(name: str) -> Path:
    return pool_dir("a") / f"{VM}-{name}.qcow2"


def _make_layer(name: str, size: int, pattern: int, offset: int, parent: Path | None) -> Path:
    path = _layer(name)
    backing = ["-b", str(parent), "-F", "qcow2"] if parent else []
    done = _run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(path), "256M"])
    assert done.returncode == 0, done.stderr
    done = _run(["qemu-io", "-c", f"write -P {pattern:#x} {offset} {size}", str(path)])
    assert done.returncode == 0, done.stderr
    return path


def _domain_xml(virt_type: str, disk: Path, uuid: str = "") -> str:
    return f"""<domain type='{virt_type}'>
  <name>{VM}</name>{f"<uuid>{uuid}</uuid>" if uuid else ""}
  <memory unit='MiB'>96</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/><apic/></features>
  <devices>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
      <source file='{disk}'/><target dev='sda' bus='scsi'/></disk>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>"""


def _clean(conns: list[Any]) -> None:
    """Remove every domain and volume this file makes (also what a failed earlier run left)."""
    remove_named(conns, VM)
    for leftover in pool_dir("a").parent.glob(f"{VM}-cp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@pytest.fixture
def conns(lab: LabStatus) -> Iterator[tuple[Any, Any]]:
    a, b = libvirt.open(lab.uris[0]), libvirt.open(lab.uris[1])
    _clean([a, b])
    try:
        yield a, b
    finally:
        try:
            _clean([a, b])
        finally:
            a.close()
            b.close()


def _execute(op: Operation, cancel_when: Any = None) -> tuple[JobResult, list[JobEvent], float]:
    events: list[JobEvent] = []
    cancel = threading.Event()

    def emit(event: JobEvent) -> None:
        events.append(event)
        if cancel_when is not None and cancel_when(event):
            cancel.set()

    started = time.monotonic()
    result = op.run(emit, cancel)
    return result, events, time.monotonic() - started


def _shipped(result: JobResult) -> int:
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert result.reason.endswith(" bytes shipped") or " bytes shipped;" in result.reason, result.reason
    return int(result.reason.split(" bytes shipped")[0])


def _phase_seconds(events: list[JobEvent], result: JobResult) -> dict[str, float]:
    """Seconds spent in each phase, from the PhaseChanged timestamps to the result's end."""
    marks = [(e.phase, e.at) for e in events if isinstance(e, PhaseChanged)] + [("", result.finished_at)]
    return {phase: end - start for (phase, start), (_, end) in itertools.pairwise(marks)}


def _allocation(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _replica_paths(conn_b: Any) -> list[Path]:
    record = read_record(conn_b, conn_b.storagePoolLookupByName(POOL), VM)
    assert record is not None
    return [pool_dir("b") / layer.volume for layer in record.disks["sda"]]


def _compare_all(primary: list[Path], replica: list[Path]) -> None:
    assert len(primary) == len(replica)
    for mine, theirs in zip(primary, replica, strict=True):
        done = _run(["qemu-img", "compare", "-U", str(mine), str(theirs)])
        assert done.returncode == 0, f"{mine.name} vs {theirs.name}: {done.stdout}{done.stderr}"
    info = json.loads(_run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(replica[-1])]).stdout)
    assert [Path(i["filename"]).resolve() for i in info] == [p.resolve() for p in reversed(replica)]
    for entry in info[:-1]:  # relative pointers, resolved inside host B's pool
        assert not os.path.isabs(entry["backing-filename"]), entry
        assert Path(entry["full-backing-filename"]).resolve().parent == pool_dir("b").resolve()


def _defined_chain(lab: LabStatus, conn_a: Any) -> tuple[list[Path], Any]:
    """The test guest defined on host A over a freshly made chain of LAYERS: (its files, it)."""
    primary: list[Path] = []
    for i, (name, size, pattern) in enumerate(LAYERS):
        primary.append(_make_layer(name, size, pattern, i * 64 * MIB, primary[-1] if primary else None))
    conn_a.storagePoolLookupByName(POOL).refresh(0)
    return primary, conn_a.defineXML(_domain_xml(lab.virt_type, primary[-1]))


def test_header_repointing_keeps_the_checksum(tmp_path: Path) -> None:
    base, top = tmp_path / "b.qcow2", tmp_path / "t.qcow2"
    assert _run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"]).returncode == 0
    assert _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)]).returncode == 0
    head = top.read_bytes()[:65536]
    moved = repoint(head, "vm.sda.0.base.qcow2")
    assert canonical_head(moved) == canonical_head(head)
    (tmp_path / "vm.sda.0.base.qcow2").symlink_to(base)
    data = top.read_bytes()
    (tmp_path / "moved.qcow2").write_bytes(moved + data[65536:])
    info = json.loads(_run(["qemu-img", "info", "--output=json", str(tmp_path / "moved.qcow2")]).stdout)
    assert info["backing-filename"] == "vm.sda.0.base.qcow2"
    assert info["backing-filename-format"] == "qcow2"
    assert _run(["qemu-img", "check", str(tmp_path / "moved.qcow2")]).returncode == 0


def test_replicate_a_chain_sync_a_new_layer_verify_and_test_failover(
        lab: LabStatus, conns: tuple[Any, Any]) -> None:
    conn_a, conn_b = conns
    primary, dom = _defined_chain(lab, conn_a)
    uuid = dom.UUIDString()
    backend = LibvirtBackend(lab.uris, poll_s=3600)
    try:
        inv = backend.refresh()
        host_b = next(h.name for h in inv.hosts if h.uri == lab.uris[1])

        host_a = next(h.name for h in inv.hosts if h.uri == lab.uris[0])
        with pytest.raises(BadInput, match="not replicated yet"):
            LibvirtReplicate(backend, ReplicateRequest(VM))
        with pytest.raises(BadInput, match="another host"):
            LibvirtReplicate(backend, ReplicateRequest(VM, to=host_a))
        with pytest.raises(BadInput, match="not replicated"):
            LibvirtFailover(backend, FailoverRequest(VM))

        # 1. Initial sync: all three layers ship, under their replicated parents.
        result, events, seconds = _execute(LibvirtReplicate(backend, ReplicateRequest(VM, to=host_b, rpo_s=600)))
        shipped = _shipped(result)
        want = sum(_allocation(p) for p in primary)
        assert abs(shipped - want) <= 3 * 65536, (shipped, want)
        progress = [e for e in events if isinstance(e, Progress)]
        assert progress and all(p.unit == "bytes" for p in progress)
        shipping = [p for p in progress if p.phase == "shipping"]
        assert shipping[0].detail["layers_left"] == 3 and shipping[-1].detail["layers_left"] == 0
        assert shipping[-1].detail["bytes_shipped"] == shipped
        assert any(p.phase == "verifying" for p in progress)
        replica = _replica_paths(conn_b)
        assert [p.name for p in replica] == [f"{VM}.sda.{i}.{VM}-{n}.qcow2" for i, (n, _, _) in enumerate(LAYERS)]
        _compare_all(primary, replica)
        cp_dir = pool_dir("a").parent / f"{VM}-cp-{os.getpid()}"
        cp_dir.mkdir()
        started = time.monotonic()
        for path in primary:
            shutil.copyfile(path, cp_dir / path.name)
        cp_seconds = time.monotonic() - started
        shutil.rmtree(cp_dir)
        phases = _phase_seconds(events, result)
        print(f"\ninitial sync: {shipped} bytes shipped in {phases['shipping']:.2f}s "
              f"({shipped / phases['shipping'] / MIB:.0f} MiB/s), verified in {phases['verifying']:.2f}s, "
              f"{seconds:.2f}s in all; cp of the same files: {cp_seconds:.3f}s "
              f"({sum(os.path.getsize(p) for p in primary) / cp_seconds / MIB:.0f} MiB/s)")
        links = [r for r in replica_links(backend) if r.vm == VM]
        assert len(links) == 1 and links[0].layer_states == (LayerState.PRESENT,) * 3
        assert links[0].replica_host == host_b and links[0].rpo_s == 600 and links[0].last_sync

        # 2. A 4th layer at the primary; the first try is interrupted inside it.
        name, size, pattern = FOURTH
        primary.append(_make_layer(name, size, pattern, 3 * 64 * MIB, primary[-1]))
        conn_a.storagePoolLookupByName(POOL).refresh(0)
        conn_a.defineXML(_domain_xml(lab.virt_type, primary[-1], uuid))  # the guest now writes the 4th
        backend.refresh()
        result, _, _ = _execute(LibvirtReplicate(backend, ReplicateRequest(VM)),
                                cancel_when=lambda e: isinstance(e, Progress) and e.done > 0)
        assert result.outcome is Outcome.CANCELLED, result.reason
        assert len(_replica_paths(conn_b)) == 3  # the half-shipped layer does not count
        result, events, seconds = _execute(LibvirtReplicate(backend, ReplicateRequest(VM)))
        shipped = _shipped(result)
        assert abs(shipped - _allocation(primary[-1])) <= 65536, (shipped, _allocation(primary[-1]))
        phases = _phase_seconds(events, result)
        print(f"incremental sync: {shipped} bytes shipped in {phases['shipping']:.2f}s, "
              f"verified in {phases['verifying']:.2f}s")
        _compare_all(primary, _replica_paths(conn_b))
        leftovers = [v for v in conn_b.storagePoolLookupByName(POOL).listVolumes()
                     if v.startswith(f"{VM}.sda.") and pool_dir("b") / v not in _replica_paths(conn_b)]
        assert leftovers == []
        assert _shipped(_execute(LibvirtReplicate(backend, ReplicateRequest(VM)))[0]) == 0  # nothing new

        # 3. A replica layer that no longer matches fails verification, then re-ships.
        mid = _replica_paths(conn_b)[1]
        assert _run(["qemu-io", "-c", "write -P 0x99 0 64k", str(mid)]).returncode == 0
        result, _, _ = _execute(LibvirtReplicate(backend, ReplicateRequest(VM)))
        assert result.outcome is Outcome.FAILED and "at layer 1" in result.reason, result.reason
        assert len(_replica_paths(conn_b)) == 1
        shipped = _shipped(_execute(LibvirtReplicate(backend, ReplicateRequest(VM)))[0])
        assert abs(shipped - sum(_allocation(p) for p in primary[1:])) <= 3 * 65536
        _compare_all(primary, _replica_paths(conn_b))

        # 4. Test failover: a transient copy runs on host B over a throwaway overlay.
        result, _, _ = _execute(LibvirtFailover(backend, FailoverRequest(VM, test=True)))
        assert result.outcome is Outcome.SUCCEEDED, result.reason
        dom = conn_b.lookupByName(trial_name(VM))
        assert dom.isActive() and not dom.isPersistent()
        overlay = pool_dir("b") / trial_overlay_name(VM, "sda")
        info = json.loads(_run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(overlay)]).stdout)
        assert [Path(i["filename"]).resolve() for i in info] == [
            overlay.resolve(), *(p.resolve() for p in reversed(_replica_paths(conn_b)))]
        inv = backend.refresh()
        assert any(v.name == trial_name(VM) and v.host == host_b for v in inv.vms)
        assert _shipped(_execute(LibvirtReplicate(backend, ReplicateRequest(VM)))[0]) == 0  # untouched
    finally:
        backend.close()


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """How each layer moved ("direct", or "stream" when the direct path declined) while shipping
    and while verifying."""
    seen: dict[str, list[str]] = {"ship": [], "verify": []}

    def spy(kind: str, real: Any) -> Any:
        def wrapped(*args: Any) -> Any:
            got = real(*args)
            seen[kind].append("stream" if got is None else got.route)
            return got
        return wrapped

    monkeypatch.setattr(ship, "ship_direct", spy("ship", ship.ship_direct))
    monkeypatch.setattr(verify, "read_local", spy("verify", verify.read_local))
    return seen


def test_the_lab_copies_layers_directly_and_streams_give_the_same_replica(
        lab: LabStatus, conns: tuple[Any, Any], routes: dict[str, list[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Host B's daemon runs in a mount namespace of its own, but its pool directory is the same
    directory here: the proof holds, every layer is copied directly and verified locally. With
    the direct path off, streams ship the same bytes to the same checksums."""
    conn_a, conn_b = conns
    primary, _ = _defined_chain(lab, conn_a)
    backend = LibvirtBackend(lab.uris, poll_s=3600)
    try:
        host_b = next(h.name for h in backend.refresh().hosts if h.uri == lab.uris[1])
        records = []
        for direct_path in (True, False):
            remove_named([conn_b], VM)  # the replica
            routes["ship"].clear()
            routes["verify"].clear()
            monkeypatch.setattr(direct, "ENABLED", direct_path)
            shipped = _shipped(_execute(LibvirtReplicate(backend, ReplicateRequest(VM, to=host_b)))[0])
            assert abs(shipped - sum(_allocation(p) for p in primary)) <= 3 * 65536
            want = "direct" if direct_path else "stream"
            assert routes == {"ship": [want] * 3, "verify": [want] * 3}
            _compare_all(primary, _replica_paths(conn_b))
            record = read_record(conn_b, conn_b.storagePoolLookupByName(POOL), VM)
            assert record is not None
            records.append([(lay.volume, lay.checksum, lay.data_bytes) for lay in record.disks["sda"]])
        assert records[0] == records[1]
    finally:
        backend.close()


def _content(path: Path) -> bytes:
    """What a layer's checksum is made of: its canonical header cluster (64 KiB here), then the rest."""
    data = path.read_bytes()
    return canonical_head(data[:65536]) + data[65536:]


def test_a_record_an_older_hvc_wrote_verifies_with_sha256_and_layers_shipped_again_get_xxh128(
        lab: LabStatus, conns: tuple[Any, Any]) -> None:
    """A record written before checksums were XXH128 holds bare SHA-256 ones: a sync verifies
    them with SHA-256 (nothing ships), a layer that no longer matches still fails verification,
    and the layers shipped again get XXH128 checksums; the base keeps its SHA-256 one."""
    conn_a, conn_b = conns
    primary, _ = _defined_chain(lab, conn_a)
    backend = LibvirtBackend(lab.uris, poll_s=3600)
    try:
        host_b = next(h.name for h in backend.refresh().hosts if h.uri == lab.uris[1])
        _shipped(_execute(LibvirtReplicate(backend, ReplicateRequest(VM, to=host_b)))[0])
        pool_b = conn_b.storagePoolLookupByName(POOL)
        record = read_record(conn_b, pool_b, VM)
        assert record is not None
        for layer, path in zip(record.disks["sda"], primary, strict=True):
            assert layer.checksum == f"xxh128:{xxhash.xxh3_128(_content(path)).hexdigest()}"
            layer.checksum = hashlib.sha256(_content(path)).hexdigest()  # as an older hvc wrote it
        write_record(conn_b, pool_b, record)

        assert _shipped(_execute(LibvirtReplicate(backend, ReplicateRequest(VM)))[0]) == 0  # verified
        record = read_record(conn_b, pool_b, VM)
        assert record is not None and [algorithm_of(lay.checksum) for lay in record.disks["sda"]] == ["sha256"] * 3

        mid = _replica_paths(conn_b)[1]
        assert _run(["qemu-io", "-c", "write -P 0x99 0 64k", str(mid)]).returncode == 0
        result, _, _ = _execute(LibvirtReplicate(backend, ReplicateRequest(VM)))
        assert result.outcome is Outcome.FAILED and "at layer 1" in result.reason, result.reason
        shipped = _shipped(_execute(LibvirtReplicate(backend, ReplicateRequest(VM)))[0])
        assert abs(shipped - sum(_allocation(p) for p in primary[1:])) <= 2 * 65536
        record = read_record(conn_b, pool_b, VM)
        assert record is not None
        assert [lay.checksum for lay in record.disks["sda"]] == [
            hashlib.sha256(_content(primary[0])).hexdigest(),
            *(f"xxh128:{xxhash.xxh3_128(_content(p)).hexdigest()}" for p in primary[1:])]
        _compare_all(primary, _replica_paths(conn_b))
        assert _shipped(_execute(LibvirtReplicate(backend, ReplicateRequest(VM)))[0]) == 0  # both kinds verify
    finally:
        backend.close()


def test_a_layer_mostly_holes_ships_as_holes_and_stays_sparse(lab: LabStatus, conns: tuple[Any, Any]) -> None:
    """A layer whose file is mostly holes moves through sparse streams as holes, and its replica
    keeps them: same bytes, no more space."""
    conn_a, conn_b = conns
    base = _make_layer("holes", 48 * MIB, 0x55, 0, None)
    size = os.path.getsize(base)
    # Punch out the middle of the data clusters: they read as zeros, the file is two thirds holes.
    punched = _run(["fallocate", "--punch-hole", "-o", str(size // 6), "-l", str(size * 2 // 3), str(base)])
    assert punched.returncode == 0, punched.stderr
    top = _make_layer("holes-top", 2 * MIB, 0x66, 0, base)
    assert _allocation(base) < size // 2
    conn_a.storagePoolLookupByName(POOL).refresh(0)
    conn_a.defineXML(_domain_xml(lab.virt_type, top))
    backend = LibvirtBackend(lab.uris, poll_s=3600)
    try:
        host_b = next(h.name for h in backend.refresh().hosts if h.uri == lab.uris[1])
        result, _, _ = _execute(LibvirtReplicate(backend, ReplicateRequest(VM, to=host_b)))
        shipped = _shipped(result)
        assert shipped < size // 2 + os.path.getsize(top)  # the holes were not sent as zeros
        replica = _replica_paths(conn_b)
        _compare_all([base, top], replica)
        assert _run(["cmp", str(base), str(replica[0])]).returncode == 0  # byte for byte, holes as zeros
        assert _allocation(replica[0]) <= _allocation(base) + MIB  # and still holes at host B
    finally:
        backend.close()


def _running_guest(lab: LabStatus, conn_a: Any) -> tuple[list[Path], Any]:
    """The test guest on host A, running on top of a freshly made chain of LAYERS."""
    primary: list[Path] = []
    for i, (name, _, pattern) in enumerate(LAYERS):
        primary.append(_make_layer(name, MIB, pattern, i * 64 * MIB, primary[-1] if primary else None))
    conn_a.storagePoolLookupByName(POOL).refresh(0)
    dom = conn_a.defineXML(_domain_xml(lab.virt_type, primary[-1]))
    dom.create()
    return primary, dom


def test_a_running_guest_ships_its_sealed_layers_and_not_the_one_it_writes(
        lab: LabStatus, conns: tuple[Any, Any]) -> None:
    conn_a, conn_b = conns
    primary, dom = _running_guest(lab, conn_a)
    backend = LibvirtBackend(lab.uris, poll_s=3600)
    try:
        inv = backend.refresh()
        host_b = next(h.name for h in inv.hosts if h.uri == lab.uris[1])
        result, _, _ = _execute(LibvirtReplicate(backend, ReplicateRequest(VM, to=host_b)))
        shipped = _shipped(result)
        assert "active layer was not shipped" in result.reason and VM in result.reason
        assert abs(shipped - sum(_allocation(p) for p in primary[:2])) <= 2 * 65536
        _compare_all(primary[:2], _replica_paths(conn_b))
        links = [r for r in replica_links(backend) if r.vm == VM]
        assert links[0].layer_states == (LayerState.PRESENT, LayerState.PRESENT, LayerState.MISSING)

        # Seal the top with an external disk-only snapshot: it ships; the new active one does not.
        snap = _layer("snap")
        dom.snapshotCreateXML(
            f"<domainsnapshot><disks><disk name='sda' snapshot='external'><source file='{snap}'/></disk>"
            f"</disks></domainsnapshot>",
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        conn_a.storagePoolLookupByName(POOL).refresh(0)
        backend.refresh()
        result, _, _ = _execute(LibvirtReplicate(backend, ReplicateRequest(VM)))
        shipped = _shipped(result)
        assert "active layer was not shipped" in result.reason
        assert abs(shipped - _allocation(primary[2])) <= 65536, (shipped, _allocation(primary[2]))
        _compare_all(primary, _replica_paths(conn_b))
        links = [r for r in replica_links(backend) if r.vm == VM]
        assert [p.path for p in links[0].primary.layers] == [*map(str, primary), str(snap)]
        assert links[0].layer_states == (LayerState.PRESENT,) * 3 + (LayerState.MISSING,)
    finally:
        backend.close()


def test_planned_failover_moves_the_guest_and_reverses_replication(
        lab: LabStatus, conns: tuple[Any, Any]) -> None:
    conn_a, conn_b = conns
    primary: list[Path] = []
    for i, (name, size, pattern) in enumerate(LAYERS):
        primary.append(_make_layer(name, size // 4, pattern, i * 64 * MIB, primary[-1] if primary else None))
    conn_a.storagePoolLookupByName(POOL).refresh(0)
    uuid = conn_a.defineXML(_domain_xml(lab.virt_type, primary[-1])).UUIDString()
    backend = LibvirtBackend(lab.uris, poll_s=3600)
    try:
        inv = backend.refresh()
        host_a = next(h.name for h in inv.hosts if h.uri == lab.uris[0])
        host_b = next(h.name for h in inv.hosts if h.uri == lab.uris[1])
        _shipped(_execute(LibvirtReplicate(backend, ReplicateRequest(VM, to=host_b, rpo_s=600)))[0])
        # The guest wrote a 4th layer since: the final sync must ship it, and only it.
        name, size, pattern = FOURTH
        primary.append(_make_layer(name, size, pattern, 3 * 64 * MIB, primary[-1]))
        conn_a.storagePoolLookupByName(POOL).refresh(0)
        conn_a.defineXML(_domain_xml(lab.virt_type, primary[-1], uuid))
        backend.refresh()

        # 1. Planned failover: final sync, the guest defined and running on B, gone from A.
        result, events, seconds = _execute(LibvirtFailover(backend, FailoverRequest(VM, test=False)))
        assert result.outcome is Outcome.SUCCEEDED, result.reason
        assert "replication reversed" in result.reason, result.reason
        marks = [e.phase for e in events if isinstance(e, PhaseChanged)]
        assert marks == ["stopping", "final sync", "starting", "reversing"], marks
        assert {e.job_id for e in events} == {result.job_id}
        final = [e for e in events if isinstance(e, Progress) and e.phase == "final sync"]
        assert final and final[-1].detail.get("step") == "verifying"
        shipped = int(result.reason.split("final sync: ")[1].split(" bytes shipped")[0])
        assert abs(shipped - _allocation(primary[-1])) <= 65536, (shipped, _allocation(primary[-1]))
        phases = _phase_seconds(events, result)
        print("\nplanned failover: " + ", ".join(f"{p} {s:.2f}s" for p, s in phases.items())
              + f", {seconds:.2f}s in all; final sync shipped {shipped} bytes")
        dom = conn_b.lookupByName(VM)
        assert dom.isActive() and dom.isPersistent() and dom.UUIDString() == uuid
        with pytest.raises(libvirt.libvirtError):
            conn_a.lookupByName(VM)
        assert all(p.exists() for p in primary)  # undefined, not deleted
        overlay = pool_dir("b") / primary[-1].name  # named like the primary's active layer
        assert f"file='{overlay}'" in dom.XMLDesc(0)
        record_a = read_record(conn_a, conn_a.storagePoolLookupByName(POOL), VM)
        assert record_a is not None and record_a.primary_host == host_b and record_a.replica_host == host_a
        assert [layer.volume for layer in record_a.disks["sda"]] == [p.name for p in primary]
        assert read_record(conn_b, conn_b.storagePoolLookupByName(POOL), VM) is None
        replica_b = [pool_dir("b") / f"{VM}.sda.{i}.{p.stem}.qcow2" for i, p in enumerate(primary)]
        info = json.loads(_run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(overlay)]).stdout)
        assert [Path(i["filename"]).resolve() for i in info] == [
            overlay.resolve(), *(p.resolve() for p in reversed(replica_b))]
        _compare_all_at(replica_b, primary, pool_dir("a"))  # A's layers re-pointed, relative

        # 2. Reverse replication: B → A. Running, the overlay is not read; nothing else ships.
        inv = backend.refresh(replicas=True)
        assert any(v.name == VM and v.host == host_b for v in inv.vms)
        assert not any(v.name == VM and v.host == host_a for v in inv.vms)
        links = [r for r in replica_links(backend) if r.vm == VM]
        assert len(links) == 1 and links[0].primary_host == host_b and links[0].replica_host == host_a
        assert links[0].layer_states == (LayerState.PRESENT,) * 4 + (LayerState.MISSING,)
        result, _, _ = _execute(LibvirtReplicate(backend, ReplicateRequest(VM)))
        assert _shipped(result) == 0 and "active layer was not shipped" in result.reason
        dom.destroy()  # shut off: the layer B wrote ships, alone
        backend.refresh()
        result, events, seconds = _execute(LibvirtReplicate(backend, ReplicateRequest(VM)))
        shipped = _shipped(result)
        assert abs(shipped - _allocation(overlay)) <= 65536, (shipped, _allocation(overlay))
        phases = _phase_seconds(events, result)
        print(f"reverse sync B → A: {shipped} bytes shipped in {phases['shipping']:.2f}s, "
              f"verified in {phases['verifying']:.2f}s, {seconds:.2f}s in all")
        back = [*primary, pool_dir("a") / f"{VM}.sda.4.{overlay.stem}.qcow2"]
        _compare_all_at([*replica_b, overlay], back, pool_dir("a"))
        links = [r for r in replica_links(backend) if r.vm == VM]
        assert links[0].primary_host == host_b and links[0].layer_states == (LayerState.PRESENT,) * 5
    finally:
        backend.close()


def _compare_all_at(primary: list[Path], replica: list[Path], where: Path) -> None:
    """Like ``_compare_all``, the replica chain in the pool directory ``where``."""
    assert len(primary) == len(replica)
    for mine, theirs in zip(primary, replica, strict=True):
        done = _run(["qemu-img", "compare", "-U", str(mine), str(theirs)])
        assert done.returncode == 0, f"{mine.name} vs {theirs.name}: {done.stdout}{done.stderr}"
    info = json.loads(_run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(replica[-1])]).stdout)
    assert [Path(i["filename"]).resolve() for i in info] == [p.resolve() for p in reversed(replica)]
    for entry in info[:-1]:
        assert not os.path.isabs(entry["backing-filename"]), entry
        assert Path(entry["full-backing-filename"]).resolve().parent == where.resolve()


def test_planned_failover_stops_a_running_guest_first(lab: LabStatus, conns: tuple[Any, Any]) -> None:
    conn_a, conn_b = conns
    primary, _dom = _running_guest(lab, conn_a)
    backend = LibvirtBackend(lab.uris, poll_s=3600)
    try:
        inv = backend.refresh()
        host_b = next(h.name for h in inv.hosts if h.uri == lab.uris[1])
        result, _, _ = _execute(LibvirtReplicate(backend, ReplicateRequest(VM, to=host_b)))
        assert "active layer was not shipped" in result.reason
        op = LibvirtFailover(backend, FailoverRequest(VM, test=False))
        assert op.planned is not None
        op.planned.shutdown_timeout_s = 2.0  # no guest OS to honour the ACPI shutdown: forced after 2 s
        result, events, seconds = _execute(op)
        assert result.outcome is Outcome.SUCCEEDED, result.reason
        phases = _phase_seconds(events, result)
        assert phases["stopping"] >= 2.0
        assert any(isinstance(e, Progress) and e.phase == "stopping" for e in events)
        shipped = int(result.reason.split("final sync: ")[1].split(" bytes shipped")[0])
        assert 0 < shipped <= _allocation(primary[-1]) + 65536  # the active layer, now quiescent
        print("\nplanned failover of a running guest: "
              + ", ".join(f"{p} {s:.2f}s" for p, s in phases.items()) + f", {seconds:.2f}s in all")
        moved = conn_b.lookupByName(VM)
        assert moved.isActive() and moved.isPersistent()
        with pytest.raises(libvirt.libvirtError):
            conn_a.lookupByName(VM)
    finally:
        backend.close()
