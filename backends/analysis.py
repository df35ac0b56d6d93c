"""What an operator should notice in an inventory: alerts and per-object flags.

Pure functions over the model, shared by every view and the command line, so the console
and `hvc inventory` never disagree about what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from backends.models import Host, HostState, Inventory, OwnerKind, PciDevice, Vm
from backends.units import format_kib


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Alert:
    severity: Severity
    kind: str  # host-lost, cell-overcommitted, device-claimed-twice, iommu-split, dma-overcommit, …
    host: str
    subject: str  # the host, cell, VM or device the alert is about
    message: str


def claims(devices: Iterable[PciDevice], vms: Iterable[Vm]) -> dict[tuple[str, str], list[str]]:
    """Which VMs (in order) list each known device, keyed by (host, address)."""
    known = {(d.host, d.address) for d in devices}
    out: dict[tuple[str, str], list[str]] = {}
    for vm in vms:
        for address in vm.devices:
            key = (vm.host, address)
            if key in known and vm.name not in out.setdefault(key, []):
                out[key].append(vm.name)
    return out


def cell_use(host: Host, vms: Iterable[Vm]) -> dict[int, int | None]:
    """KiB of active VM memory on each cell; None where some VM's placement is unknown."""
    use: dict[int, int | None] = {c.id: 0 for c in host.numa}
    for vm in vms:
        if vm.host != host.name or not vm.active:
            continue
        placed = vm.memory_by_cell()
        if placed is None:
            for cell in use:
                use[cell] = None
            continue
        for cell, kib in placed.items():
            if cell in use and use[cell] is not None:
                use[cell] = (use[cell] or 0) + kib
    return use


def overcommitted_cells(host: Host, vms: Iterable[Vm]) -> dict[int, int]:
    """Cells whose VM memory exceeds their size → KiB over."""
    sizes = {c.id: c.memory_kib for c in host.numa}
    return {cell: used - sizes[cell] for cell, used in cell_use(host, vms).items()
            if used is not None and used > sizes[cell]}


def vm_flags(vm: Vm, host: Host | None) -> list[str]:
    """Placement problems of one VM: split vNUMA cells, memory remote from its vCPUs."""
    flags = [
        f"vNUMA cell {node.id} split across cells {','.join(map(str, node.backing_cells))}"
        for node in vm.vnuma if len(node.backing) > 1
    ]
    if host and vm.pinning:
        cpu_cell = {cpu.id: cell.id for cell in host.numa for cpu in cell.cpus}
        vcpu_cells = {cpu_cell[c] for c in vm.pinned_cpus() if c in cpu_cell}
        placed = vm.memory_by_cell() or {}
        remote = sorted(c for c, kib in placed.items() if kib and c not in vcpu_cells)
        if vcpu_cells and remote:
            flags.append(
                f"memory on cell {','.join(map(str, remote))} is remote from its vCPUs on cell "
                f"{','.join(map(str, sorted(vcpu_cells)))}"
            )
    return flags


def device_flags(inv: Inventory) -> dict[tuple[str, str], str]:
    """Ownership conflicts per (host, address): double claims and split IOMMU groups."""
    flags: dict[tuple[str, str], str] = {}
    for key, names in claims(inv.devices, inv.vms).items():
        if len(names) > 1:
            flags[key] = f"claimed by {' and '.join(names)}"
    groups: dict[tuple[str, int], list[PciDevice]] = {}
    for d in inv.devices:
        if d.iommu_group is not None:
            groups.setdefault((d.host, d.iommu_group), []).append(d)
    for (_host, group), members in groups.items():
        owners = {(d.owner.vm or "?") if d.owner.kind is OwnerKind.VM else "host" for d in members}
        if len(owners) > 1 and any(d.owner.kind is OwnerKind.VM for d in members):
            text = f"IOMMU group {group} split: {', '.join(sorted(owners))}"
            for d in members:
                flags.setdefault((d.host, d.address), text)
    return flags


def alerts(inv: Inventory) -> tuple[Alert, ...]:
    """Everything worth an operator's attention, most severe first."""
    out: list[Alert] = []
    by_host: dict[str, list[Vm]] = {}
    for vm in inv.vms:
        by_host.setdefault(vm.host, []).append(vm)
    for host in inv.hosts:
        vms = by_host.get(host.name, [])
        if host.state is HostState.LOST:
            out.append(Alert(Severity.ERROR, "host-lost", host.name, host.name,
                             f"{host.name} is lost: {host.error or 'no answer'}"))
            continue
        over = overcommitted_cells(host, vms)
        for cell, kib in over.items():
            out.append(Alert(Severity.ERROR, "cell-overcommitted", host.name, f"cell {cell}",
                             f"{host.name} cell {cell} is overcommitted by {format_kib(kib)}"))
        for vm in vms:
            placed = vm.memory_by_cell() or {}
            if vm.devices and vm.active and any(c in over for c in placed):
                out.append(Alert(Severity.ERROR, "dma-overcommit", host.name, vm.name,
                                 f"{vm.name} has direct-assigned devices but its memory is overcommitted"))
            for flag in vm_flags(vm, host):
                out.append(Alert(Severity.WARNING, "placement", host.name, vm.name, f"{vm.name}: {flag}"))
    for (host_name, address), text in sorted(device_flags(inv).items()):
        severity = Severity.ERROR if text.startswith("claimed") else Severity.WARNING
        out.append(Alert(severity, "device", host_name, address, f"{address} on {host_name}: {text}"))
    for r in inv.replicas:
        if r.rpo_violated:
            lag = "unknown" if r.lag_s is None else f"{r.lag_s:.0f}s"
            out.append(Alert(Severity.ERROR, "rpo", r.primary_host, r.vm,
                             f"{r.vm}/{r.disk} replica lag {lag} exceeds its RPO of {r.rpo_s:.0f}s"))
    return tuple(sorted(out, key=lambda a: a.severity is not Severity.ERROR))
