"""Verifying the replica after each sync, layer by layer.

The record lists the primary's layers in order; each replica volume exists, is qcow2 (or raw
for a raw base), its header names the previous replica layer as backing (the base names
none), and its checksum, read back from the destination (from the local file when it is
provably the volume: ``direct``) with the function the record's checksum names (``checksum``: a
layer an older hvc shipped is read with SHA-256), equals the primary's. A sealed
primary layer whose mtime or size moved since it shipped is read again and must still match.
When the destination pool is a local directory (same machine, as in the lab) ``qemu-img info
--backing-chain`` confirms the chain too. A mismatch drops that layer and those above it from
the record (the next sync re-ships them) and fails the job.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from backends.base import Emit
from backends.errors import OperationFailed
from backends.libvirt.migrate import is_local
from backends.libvirt.replication.checksum import ALGORITHM, algorithm_of
from backends.libvirt.replication.direct import read_local
from backends.libvirt.replication.plan import drop_unlisted
from backends.libvirt.replication.record import LayerRecord, ReplicaRecord, write_record
from backends.libvirt.replication.stream import Read, read_layer
from backends.libvirt.replication.tally import Tally
from backends.libvirt.replication.volumes import lookup, pool_path, vol_facts
from backends.libvirt.replication.workers import Connect, at_once
from backends.progress import Meter


def verify(src: Any, dst: Any, pool: Any, record: ReplicaRecord, emit: Emit, meter: Meter,
           cancel: threading.Event, *, vm: str, disks: list[str], dst_uri: str) -> None:
    """Check every layer the record lists; on a mismatch trim the record there and fail."""
    pool.refresh(0)
    total = 0
    for layers in record.disks.values():
        for layer in layers:
            vol = lookup(pool, layer.volume)
            total += vol_facts(vol).allocation if vol is not None else 0
    tally = Tally(emit, meter, "verifying", total)
    pool_dir = pool_path(pool)
    stored = {layer.volume: layer.checksum for layers in record.disks.values() for layer in layers}
    reads = _read_back(dst_uri, pool.name(), stored, tally.add, cancel)
    for disk, layers in record.disks.items():
        for i, layer in enumerate(layers):
            problem = _check_layer(src, pool, layers, i, reads.get(layer.volume), cancel)
            if problem:
                del layers[i:]
                write_record(dst, pool, record)
                drop_unlisted(pool, record, vm, disks)
                raise OperationFailed(
                    f"replica of {vm}/{disk} differs from the primary at layer {i} "
                    f"({os.path.basename(layer.primary_path)}): {problem}",
                    hint="sync again to re-ship it from that layer; the replica is not usable until it matches")
        if layers:
            problem = _qemu_img_chain(dst_uri, pool_dir, [lay.volume for lay in layers])
            if problem:
                del layers[:]
                write_record(dst, pool, record)
                drop_unlisted(pool, record, vm, disks)
                raise OperationFailed(f"replica chain of {vm}/{disk}: {problem}",
                                      hint="sync again to re-ship it")
    tally.total = tally.done
    tally.sample()


def _read_back(dst_uri: str, pool_name: str, stored: dict[str, str], on_bytes: Callable[[int], None],
               cancel: threading.Event) -> dict[str, Read | BaseException | None]:
    """Each replica layer (volume name: the checksum the record holds) read back, hashed as that
    checksum was, through a download stream of its own, up to ``workers.AT_ONCE`` at a time. What a
    read raised is kept for ``_check_layer`` to raise in chain order; a missing volume is None,
    and one whose checksum is of an unknown kind has no entry."""

    def read_back(name: str, connect: Connect) -> Read | None:
        (conn,) = connect()
        vol = lookup(conn.storagePoolLookupByName(pool_name), name)
        return None if vol is None else _read(conn, vol, on_bytes, cancel, stored[name])

    names = [name for name, checksum in stored.items() if algorithm_of(checksum)]
    return dict(at_once(names, read_back, (dst_uri,), "hvc-verify"))


def _read(conn: Any, vol: Any, on_bytes: Callable[[int], None] | None, cancel: threading.Event, like: str) -> Read:
    """A layer read through, hashed as the checksum ``like`` was: from the local file when it is
    provably the volume, else a stream."""
    algorithm = algorithm_of(like) or ALGORITHM
    return read_local(conn, vol, on_bytes, cancel, algorithm) or read_layer(conn, vol, on_bytes, cancel, algorithm)


def _check_layer(src: Any, pool: Any, layers: list[LayerRecord], i: int, got: Read | BaseException | None,
                 cancel: threading.Event) -> str:
    """What is wrong with replica layer ``i`` (read back as ``got``), or "" when it matches the primary."""
    layer = layers[i]
    if algorithm_of(layer.checksum) is None:
        return f"its checksum in the record is of a kind this hvc does not know ({layer.checksum[:16]}…)"
    vol = lookup(pool, layer.volume)
    if vol is None or got is None:
        return f"replica volume {layer.volume} is missing"
    fmt = vol_facts(vol).format
    if fmt not in ("qcow2", "raw") or (fmt == "raw" and i > 0):
        return f"replica volume {layer.volume} is {fmt}"
    if isinstance(got, BaseException):
        raise got
    want_parent = layers[i - 1].volume if i else None
    if got.backing != want_parent:
        return f"it is backed by {got.backing!r}, not {want_parent!r}"
    if got.checksum != layer.checksum:
        return "its checksum differs from the primary's when it shipped"
    try:
        primary = src.storageVolLookupByPath(layer.primary_path)
    except libvirt.libvirtError:
        return "" if not layer.sealed else f"sealed primary layer {layer.primary_path} is gone"
    facts = vol_facts(primary)
    if layer.sealed and (facts.mtime, facts.physical) != (layer.mtime, layer.physical):
        now = _read(src, primary, None, cancel, layer.checksum)
        if now.checksum != layer.checksum:
            return "the sealed primary layer changed since it shipped"
    return ""


def _qemu_img_chain(uri: str, pool_dir: str, volumes: list[str]) -> str:
    """Check the replica chain with ``qemu-img info --backing-chain`` when the destination pool
    is a directory on this machine; "" when it holds (or cannot be checked from here)."""
    top = os.path.join(pool_dir, volumes[-1])
    if not (is_local(uri) and pool_dir and os.path.isfile(top)):
        return ""
    try:
        done = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", top],
                              capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if done.returncode != 0:
        return f"qemu-img info failed: {done.stderr.strip()}"
    chain = json.loads(done.stdout)
    got = [os.path.realpath(c["filename"]) for c in chain]
    want = [os.path.realpath(os.path.join(pool_dir, v)) for v in reversed(volumes)]
    if got != want:
        return f"qemu-img sees {' ← '.join(map(os.path.basename, reversed(got)))}"
    for entry in chain:
        backing = entry.get("backing-filename")
        if backing and os.path.isabs(backing):
            return f"{os.path.basename(entry['filename'])} has an absolute backing path {backing}"
    return ""
