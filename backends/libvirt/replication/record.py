"""The replication record: a VM's replica state, kept as JSON in the destination pool.

Replica chain and state both live on the destination, so they survive the primary.

- Layer volumes in the destination pool with the same name as the primary pool holding
  the disk's active layer: ``<vm>.<disk>.<index>.<primary layer stem>.qcow2`` (a re-shipped
  layer gets ``.g2``, ``.g3``…: a counted volume is never overwritten).
- A JSON record in that pool, written alternately to ``<vm>.hvc-replica.a.json`` and
  ``….b.json`` with a rising ``seq`` (a torn write leaves the other slot valid): which
  primary layer each replica volume holds, its content checksum, the primary's mtime/size
  when it shipped, whether it was sealed then, the RPO and the last sync. The record is the
  commit point: a layer counts at the replica only once the record lists it, which happens
  after its upload finished and its stream closed. An interrupted sync leaves at most an
  unlisted volume, removed by the next sync, which resumes at the first layer the record
  lacks. Nothing is written on the primary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import libvirt

from backends.errors import OperationFailed
from backends.libvirt.replication.stream import download_small, upload_small
from backends.libvirt.replication.volumes import delete, lookup, new_volume

RECORD_SLOTS = ("a", "b")
RECORD_VERSION = 1


@dataclass
class LayerRecord:
    """One shipped layer: which primary layer the replica volume holds, and as of when."""

    index: int
    primary_path: str
    volume: str  # the replica volume's name in the record's pool
    checksum: str
    data_bytes: int
    physical: int  # the primary file's size when it shipped
    mtime: str  # the primary file's mtime when it shipped
    sealed: bool  # was it a sealed layer at the primary when it shipped?
    shipped_at: float


@dataclass
class ReplicaRecord:
    """Replication state of one VM, kept in the destination pool (see this module's docstring)."""

    vm: str
    uuid: str
    primary_host: str
    replica_host: str
    pool: str
    rpo_s: float
    last_sync: float | None = None
    seq: int = 0
    version: int = RECORD_VERSION
    domain_xml: str = ""  # the primary's inactive definition at the last sync, for failover without it
    disks: dict[str, list[LayerRecord]] = field(default_factory=dict)

    @staticmethod
    def from_json(text: str) -> ReplicaRecord:
        """Parse a record; ValueError (or TypeError/KeyError) when it is not one of this version."""
        doc = json.loads(text)
        if doc.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {doc.get('version')}")
        disks = {d: [LayerRecord(**layer) for layer in layers] for d, layers in doc.pop("disks").items()}
        return ReplicaRecord(**doc, disks=disks)


def record_names(vm: str) -> tuple[str, ...]:
    """The volume names of ``vm``'s two record slots."""
    return tuple(f"{vm}.hvc-replica.{slot}.json" for slot in RECORD_SLOTS)


def read_record(conn: Any, pool: Any, vm: str) -> ReplicaRecord | None:
    """The newest valid record of ``vm`` in ``pool``, or None."""
    best: ReplicaRecord | None = None
    for name in record_names(vm):
        vol = lookup(pool, name)
        if vol is None:
            continue
        try:
            record = ReplicaRecord.from_json(download_small(conn, vol).decode())
        except (libvirt.libvirtError, ValueError, TypeError, KeyError, OperationFailed):
            continue  # a torn or foreign slot: the other one holds the state
        if best is None or record.seq > best.seq:
            best = record
    return best


def write_record(conn: Any, pool: Any, record: ReplicaRecord) -> None:
    """Write ``record`` with the next ``seq`` into the slot not holding the current one."""
    record.seq += 1
    name = record_names(record.vm)[record.seq % len(RECORD_SLOTS)]
    data = json.dumps(asdict(record), indent=1, sort_keys=True).encode()
    delete(pool, name)
    upload_small(conn, new_volume(pool, name), data)
