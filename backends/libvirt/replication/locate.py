"""Finding a VM's replica records on the connected hosts, and the hosts a job needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import libvirt

from backends.errors import BadInput
from backends.libvirt.replication.record import ReplicaRecord, read_record
from backends.models import Inventory, Vm

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend


@dataclass(frozen=True, slots=True)
class Found:
    """A replica record and where it was found."""

    host: str  # inventory name of the replica host
    uri: str
    pool: str
    record: ReplicaRecord


def find_records(backend: LibvirtBackend, inv: Inventory, vm: str, skip: str | None = None) -> list[Found]:
    """Every replica record of ``vm`` on the connected hosts other than ``skip``."""
    out: list[Found] = []
    for host in inv.hosts:
        if host.name == skip:
            continue
        conn_host = backend.host_for(host.name)
        conn = conn_host.connection if conn_host is not None else None
        if conn is None:
            continue
        try:
            pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        except libvirt.libvirtError:
            continue
        for pool in pools:
            try:
                record = read_record(conn, pool, vm)
            except libvirt.libvirtError:
                continue
            if record is not None:
                out.append(Found(host.name, conn_host.uri if conn_host else host.uri, pool.name(), record))
    return out


def no_replica(backend: LibvirtBackend, inv: Inventory, vm: Vm, message: str, hint: str) -> NoReturn:
    """No record was found: say so, or that a host that may hold it is not connected."""
    away = [h.name for h in inv.hosts if h.name != vm.host
            and ((c := backend.host_for(h.name)) is None or c.connection is None)]
    if away:
        raise BadInput(f"no replica of {vm.name} found on the connected hosts ({', '.join(away)} not connected)",
                       hint="wait for the recovery host to come back")
    raise BadInput(message, hint=hint)


def replica_of(backend: LibvirtBackend, inv: Inventory, vm: Vm) -> Found:
    """The replica of ``vm`` (same uuid) on another host, else BadInput or HostUnreachable."""
    found = [f for f in find_records(backend, inv, vm.name, skip=vm.host) if f.record.uuid == vm.uuid]
    if not found:
        no_replica(backend, inv, vm, f"{vm.name} is not replicated", "replicate it first with `hvc replicate`")
    return found[0]
