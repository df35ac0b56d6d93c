"""Replication status for the inventory: each replicated disk's primary and replica chains side by side."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import libvirt

from backends.errors import HvcError
from backends.libvirt.parse import parse_domain
from backends.libvirt.replication.locate import Found, find_records
from backends.libvirt.replication.record import LayerRecord
from backends.libvirt.replication.volumes import volume_chain
from backends.models import DiskChain, DiskLayer, Inventory, LayerState, ReplicaLink, Vm

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend


def replica_links(backend: LibvirtBackend, inv: Inventory | None = None,
                  now: float | None = None) -> tuple[ReplicaLink, ...]:
    """The replication status of every VM in ``inv`` that has a record on another host.

    Reads each connected host's pools (two small volume downloads per VM and pool) and walks
    each replicated disk's volumes at the primary, so call it from a refresh, not a UI loop."""
    inv = inv or backend.snapshot()
    now = time.time() if now is None else now
    out: list[ReplicaLink] = []
    for vm in inv.vms:
        for found in find_records(backend, inv, vm.name, skip=vm.host):
            if found.record.uuid == vm.uuid:
                out.extend(_links(backend, inv, vm, found, now))
    return tuple(out)


def _links(backend: LibvirtBackend, inv: Inventory, vm: Vm, found: Found, now: float) -> list[ReplicaLink]:
    """One link per disk of ``vm``, its layers marked present as far as the record matches the primary."""
    rec = found.record
    chains = [c for c in inv.chains if c.vm == vm.name and c.host == vm.host]
    host = backend.host_for(vm.host)
    conn = host.connection if host is not None else None
    if conn is not None:  # the chains as they are now, whole even for a shut-off guest
        with contextlib.suppress(HvcError, libvirt.libvirtError):
            live = parse_domain(conn.lookupByUUIDString(vm.uuid).XMLDesc(0), vm.host).chains
            chains = [replace(c, layers=tuple(
                DiskLayer(f.path, f.format, f.capacity, f.allocation)
                for _, f in volume_chain(conn, c.active.path, f"{vm.name}/{c.disk}", vm.host))) for c in live]
    out = []
    for chain in chains:
        layers = rec.disks.get(chain.disk, [])
        present = _matching_prefix(chain, layers)
        states = tuple(LayerState.PRESENT if i < present else LayerState.MISSING for i in range(len(chain.layers)))
        replica = DiskChain(vm.name, found.host, chain.disk, tuple(
            DiskLayer(path=layer.volume, format="qcow2", allocated_bytes=layer.data_bytes) for layer in layers))
        lag = None if rec.last_sync is None else max(0.0, now - rec.last_sync)
        out.append(ReplicaLink(vm=vm.name, disk=chain.disk, primary_host=vm.host, replica_host=found.host,
                               primary=chain, replica=replica, layer_states=states, last_sync=rec.last_sync,
                               lag_s=lag, rpo_s=rec.rpo_s))
    return out


def _matching_prefix(chain: DiskChain, layers: list[LayerRecord]) -> int:
    """How many layers, from the base, the record holds for the primary's chain as it is."""
    n = 0
    for layer, rec in zip(chain.layers, layers, strict=False):
        if layer.path != rec.primary_path:
            break
        n += 1
    return n
