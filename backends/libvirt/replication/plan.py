"""What a sync ships: the layers the replica lacks, their replica volume names, and stale volumes.

Active layer. Sealed layers (all but the top) never change. The top of a *shut-off* guest
is quiescent and ships whole; if it changed since (the guest ran), the next sync ships it
again, whole, under a new generation name (libvirt streams have no cheap server-side copy
to patch a delta into atomically). The top of a *running* guest is not read: QEMU holds
qcow2 metadata in its cache, so the file is not a consistent image. It is reported, not
shipped; seal it with a disk-only snapshot (or shut the guest down) and sync again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from backends.errors import OperationFailed
from backends.libvirt.replication.record import ReplicaRecord
from backends.libvirt.replication.volumes import VolFacts, delete, vol_facts


@dataclass
class Step:
    """One layer to ship: which disk, its index in the chain, and the primary volume."""

    disk: str
    index: int
    vol: Any  # primary volume
    facts: VolFacts
    sealed: bool


def plan_sync(src: Any, record: ReplicaRecord, chains: dict[str, list[str]], running: bool,
              vm: str, disks: list[str]) -> tuple[list[Step], list[str]]:
    """The layers the replica lacks, in order; the record is trimmed to what still holds."""
    plan: list[Step] = []
    notes: list[str] = []
    for disk in disks:
        chain = chains.get(disk)
        if chain is None:
            raise OperationFailed(f"{vm} no longer has disk {disk}", hint="refresh and sync again")
        layers = record.disks.get(disk, [])
        top = len(chain) - 1
        keep = 0
        for i, path in enumerate(chain):
            if i >= len(layers) or layers[i].primary_path != path:
                break
            facts = vol_facts(src.storageVolLookupByPath(path))
            moved = (facts.mtime, facts.physical) != (layers[i].mtime, layers[i].physical)
            if moved and not layers[i].sealed and not (i == top and running):
                break  # an active layer that changed since it shipped: ship it again
            if not moved and i < top:
                layers[i].sealed = True  # shipped while active, sealed since, unchanged
            keep = i + 1
        del layers[keep:]  # what no longer matches the primary's chain goes (orphans are removed)
        for i in range(keep, len(chain)):
            if i == top and running:
                notes.append(f"{disk}'s active layer was not shipped: {vm} is running and writes "
                             "it; seal it with a disk-only snapshot or shut the guest down, then sync")
                break
            vol = src.storageVolLookupByPath(chain[i])
            plan.append(Step(disk, i, vol, vol_facts(vol), sealed=i < top))
    return plan, notes


def volume_name(pool: Any, vm: str, step: Step) -> str:
    """A name for the step's replica volume that no volume in ``pool`` has yet."""
    stem = os.path.basename(step.facts.path)
    stem = stem[: -len(".qcow2")] if stem.endswith(".qcow2") else stem
    base = f"{vm}.{step.disk}.{step.index}.{stem}"
    names = set(pool.listVolumes())
    if f"{base}.qcow2" not in names:
        return f"{base}.qcow2"
    return next(f"{base}.g{g}.qcow2" for g in range(2, 10_000) if f"{base}.g{g}.qcow2" not in names)


def drop_unlisted(pool: Any, record: ReplicaRecord, vm: str, disks: list[str], keep: set[str] | None = None) -> None:
    """Delete volumes named like this VM's replica layers that the record does not list (nor
    ``keep``, the layers still shipping): left by an interrupted sync, or superseded once the
    record stopped listing them."""
    listed = {layer.volume for layers in record.disks.values() for layer in layers} | (keep or set())
    prefixes = tuple(f"{vm}.{disk}." for disk in disks)
    for name in pool.listVolumes():
        if name.startswith(prefixes) and name.endswith(".qcow2") and name not in listed:
            delete(pool, name)
