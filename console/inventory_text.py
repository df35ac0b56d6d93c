"""The inventory as rich tables for a terminal or a log (no Textual)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from backends.models import HostState, Inventory, OwnerKind
from backends.units import format_bytes, format_cpuset, format_kib


def wide_console() -> Console:
    console = Console()
    if not console.is_terminal:  # a pipe or a log: never wrap names into columns
        console = Console(width=max(console.width, 200))
    return console


def print_inventory(inv: Inventory, console: Console | None = None) -> None:
    console = console or wide_console()
    hosts = Table(title="Hosts", title_justify="left")
    for col in ("host", "site", "state", "CPU model", "threads", "memory", "free", "cells", "VMs"):
        hosts.add_column(col, justify="right" if col in {"threads", "memory", "free", "cells", "VMs"} else "left")
    for h in inv.hosts:
        state = h.state.value if h.state is HostState.CONNECTED else "[red]lost[/]"
        hosts.add_row(h.name, h.site, state, h.cpu_model or "?", str(h.threads), format_kib(h.memory_kib),
                      format_kib(h.free_kib), str(len(h.numa)), str(len(inv.vms_on(h.name))))
    console.print(hosts)

    cells = Table(title="NUMA cells", title_justify="left")
    for col in ("host", "cell", "CPUs", "memory", "free", "hugepages", "distances"):
        cells.add_column(col)
    for h in inv.hosts:
        for c in h.numa:
            pages = ", ".join(f"{p.total}×{format_kib(p.size_kib)}" for p in c.hugepages if p.total) or "-"
            dist = " ".join(str(d) for _, d in c.distances) or "?"
            cells.add_row(h.name, str(c.id), format_cpuset(c.cpu_ids), format_kib(c.memory_kib),
                          format_kib(c.free_kib), pages, dist)
    console.print(cells)

    vms = Table(title="VMs", title_justify="left")
    for col in ("VM", "host", "state", "vCPUs", "memory", "vNUMA", "pinned", "devices", "disks"):
        vms.add_column(col)
    for v in inv.vms:
        vnuma = " ".join(
            f"v{n.id}→{','.join(map(str, n.backing_cells)) or '?'}" for n in v.vnuma
        ) or "-"
        vms.add_row(v.name, v.host, v.state.value, str(v.vcpus), format_kib(v.memory_kib), vnuma,
                    format_cpuset(v.pinned_cpus()) or "-", str(len(v.devices)), " ".join(v.disks) or "-")
    console.print(vms)

    devices = Table(title="PCI devices", title_justify="left")
    for col in ("host", "address", "device", "driver", "IOMMU", "owner", "SR-IOV"):
        devices.add_column(col)
    for d in inv.devices:
        owner = f"[bold]{d.owner.vm}[/]" if d.owner.kind is OwnerKind.VM else d.owner.kind.value
        sriov = f"VF of {d.physfn}" if d.physfn else f"PF, {len(d.vfs)} VFs" if d.vfs else "-"
        devices.add_row(d.host, d.address, d.product or d.name or "?", d.driver or "-",
                        "?" if d.iommu_group is None else str(d.iommu_group), owner, sriov)
    console.print(devices)

    chains = Table(title="Disk chains (base → active)", title_justify="left")
    for col in ("VM", "disk", "layers", "chain", "allocated"):
        chains.add_column(col)
    for c in inv.chains:
        names = " → ".join(layer.path.rsplit("/", 1)[-1] for layer in c.layers)
        alloc = sum(layer.allocated_bytes or 0 for layer in c.layers)
        chains.add_row(c.vm, c.disk, str(len(c.layers)), names, format_bytes(alloc) if alloc else "?")
    console.print(chains)

    if inv.pools:
        pools = Table(title="Storage pools", title_justify="left")
        for col in ("host", "pool", "type", "path", "volumes", "overlays", "available"):
            pools.add_column(col)
        for p in inv.pools:
            overlays = sum(1 for v in p.volumes if v.backing)
            pools.add_row(p.host, p.name, p.kind or "?", p.path or "?", str(len(p.volumes)), str(overlays),
                          format_bytes(p.available_bytes))
        console.print(pools)
    if inv.services:
        print_services(inv, console)
    if inv.replicas:
        print_replication(inv, console)


def print_services(inv: Inventory, console: Console | None = None) -> None:
    console = console or wide_console()
    table = Table(title="Storage services", title_justify="left")
    for col in ("service", "identifier", "protocol", "VM", "host", "VF"):
        table.add_column(col)
    for s in inv.services:
        table.add_row(s.name, s.identifier, s.protocol, s.vm, s.host, s.vf or "[yellow]unbound[/]")
    if not inv.services:
        console.print("no storage services")
        return
    console.print(table)


def print_replication(inv: Inventory, console: Console | None = None) -> None:
    console = console or wide_console()
    reps = Table(title="Replication", title_justify="left")
    for col in ("VM", "disk", "primary", "replica", "layers", "last sync", "lag", "RPO"):
        reps.add_column(col)
    for r in inv.replicas:
        lag = "?" if r.lag_s is None else f"{r.lag_s:.0f}s"
        rpo = f"[red]{r.rpo_s:.0f}s violated[/]" if r.rpo_violated else f"{r.rpo_s:.0f}s ok"
        states = " ".join({"present": "✓", "shipping": "⇢", "missing": "✗"}[s.value] for s in r.layer_states)
        synced = "never" if not r.last_sync else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(r.last_sync))
        reps.add_row(r.vm, r.disk, r.primary_host, r.replica_host, states, synced, lag, rpo)
    console.print(reps)
