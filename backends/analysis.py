"""What an operator should notice in an inventory: alerts and per-object flags.

Pure functions over the model, shared by every view and the command line, so the console
and `hvc inventory` never disagree about what is wrong.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from backends.grouping import Grouped, group_by_host
from backends.models import Host, HostState, Inventory, OwnerKind, PciDevice, Vm
from backends.units import format_cpuset, format_kib


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Alert:
    severity: Severity
    # host-lost, cell-overcommitted, cpu-overcommitted, vnuma-split, remote-memory, unreported-topology,
    # dma-overcommit, device, rpo, service
    kind: str
    host: str
    subject: str  # the host, cell ('cell 1'), CPUs ('CPUs 3,5'), VM or device the alert is about
    message: str  # stands alone: names the host for a finding about the host, else the VM or device
    vms: tuple[str, ...] = ()  # the VMs involved, so views can point at them


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


def cpu_owners(vms: Iterable[Vm]) -> dict[int, list[str]]:
    """Host CPU → the active VMs with a vCPU pinned there, in VM order."""
    owners: dict[int, list[str]] = {}
    for vm in vms:
        if vm.active:
            for cpu in vm.pinned_cpus():
                owners.setdefault(cpu, []).append(vm.name)
    return owners


def _resident(host: Host, vms: Iterable[Vm]) -> list[Vm]:
    """The active VMs of ``host``: those whose memory and pinned vCPUs are on it now."""
    return [vm for vm in vms if vm.host == host.name and vm.active]


def cell_use(host: Host, vms: Iterable[Vm]) -> dict[int, int]:
    """KiB of active VM memory known to sit on each of the host's cells.

    VMs whose placement is unknown count nowhere, so where there are any this is a lower bound:
    a cell it puts over its size is overcommitted whatever those VMs turn out to hold.
    """
    use = {c.id: 0 for c in host.numa}
    for vm in _resident(host, vms):
        for cell, kib in (vm.memory_by_cell() or {}).items():
            if cell in use:
                use[cell] += kib
    return use


def overcommitted_cells(host: Host, vms: Iterable[Vm]) -> dict[int, int]:
    """Cells whose known VM memory (see ``cell_use``) exceeds their size → KiB over."""
    sizes = {c.id: c.memory_kib for c in host.numa}
    return {cell: used - sizes[cell] for cell, used in cell_use(host, vms).items() if used > sizes[cell]}


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _cells(ids: Iterable[int]) -> str:
    ordered = sorted(set(ids))
    return f"cell{'s' if len(ordered) > 1 else ''} {','.join(map(str, ordered))}"


def _cpus(ids: Sequence[int]) -> str:
    return f"CPU{'s' if len(set(ids)) > 1 else ''} {format_cpuset(list(ids))}"


def _cpu_cells(host: Host) -> dict[int, int]:
    return {cpu.id: cell.id for cell in host.numa for cpu in cell.cpus}


def _vm_checks(vm: Vm, host: Host | None, cpu_cell: dict[int, int] | None = None) -> list[Alert]:
    """One VM's own placement problems, whatever its state; those needing the topology only with it.

    Split vNUMA cells (a guest cell backed by two or more host cells), memory on cells where
    none of its pinned vCPUs run, and pinned CPUs or memory cells the host does not report.
    """
    out: list[Alert] = []

    def warn(kind: str, text: str) -> None:
        out.append(Alert(Severity.WARNING, kind, vm.host, vm.name, f"{vm.name}: {text}", (vm.name,)))

    for node in vm.vnuma:
        if len(set(node.backing_cells)) > 1:
            shares = " + ".join(f"{format_kib(s.memory_kib)} on {s.cell}" for s in node.backing)
            warn("vnuma-split", f"vNUMA cell v{node.id} split across {_cells(node.backing_cells)} ({shares})")
    if host is None or not host.numa:
        return out
    if not vm.pinning and not vm.vnuma and (
            len(vm.memory_nodeset) != 1 or any(cell.id == vm.memory_nodeset[0] for cell in host.numa)):
        return out  # nothing pinned, its memory (where known) on a cell the host has: no more to find
    cpu_cell = _cpu_cells(host) if cpu_cell is None else cpu_cell  # a host's callers pass it once for all VMs
    cell_ids = {cell.id for cell in host.numa}
    placed = vm.memory_by_cell() or {}
    vcpu_cells = {cpu_cell[c] for c in vm.pinned_cpus() if c in cpu_cell}
    remote = {c: kib for c, kib in sorted(placed.items()) if kib and c in cell_ids and c not in vcpu_cells}
    if vcpu_cells and remote:
        where = ", ".join(f"{format_kib(kib)} on cell {c}" for c, kib in remote.items())
        warn("remote-memory", f"memory remote from vCPUs — {where}, vCPUs on {_cells(vcpu_cells)}")
    stray_cpus = [c for c in vm.pinned_cpus() if c not in cpu_cell]
    stray_cells = [c for c in placed if c not in cell_ids]
    if stray_cpus or stray_cells:
        what = ([_cpus(stray_cpus)] if stray_cpus else []) + ([_cells(stray_cells)] if stray_cells else [])
        warn("unreported-topology", f"uses {' and '.join(what)}, which the host does not report")
    return out


def _host_checks(host: Host, resident: Sequence[Vm]) -> list[Alert]:
    """Problems among the resident VMs: cells holding more than they have, CPUs pinned by 2+ VMs."""
    out: list[Alert] = []
    use = cell_use(host, resident)
    unknown = sum(1 for vm in resident if vm.memory_by_cell() is None)
    for cell in host.numa:
        if use[cell.id] <= cell.memory_kib:
            continue
        holders = tuple(vm.name for vm in resident if (vm.memory_by_cell() or {}).get(cell.id, 0) > 0)
        over, held, size = (format_kib(k) for k in (use[cell.id] - cell.memory_kib, use[cell.id], cell.memory_kib))
        text = f"{host.name} cell {cell.id} is overcommitted by {over}: VMs hold {held} of {size}"
        if unknown:
            text = (f"{host.name} cell {cell.id} is overcommitted by at least {over}: VMs hold {held} of {size}, "
                    f"not counting {unknown} VM{'s' if unknown > 1 else ''} of unknown placement")
        out.append(Alert(Severity.ERROR, "cell-overcommitted", host.name, f"cell {cell.id}", text, holders))
    shared: dict[tuple[str, ...], list[int]] = {}
    for cpu, names in sorted(cpu_owners(resident).items()):
        if len(names) > 1:
            shared.setdefault(tuple(sorted(names)), []).append(cpu)
    for sharers, cpus in shared.items():
        verb = "are" if len(cpus) > 1 else "is"
        out.append(Alert(Severity.ERROR, "cpu-overcommitted", host.name, _cpus(cpus),
                         f"{host.name} {_cpus(cpus)} {verb} overcommitted: pinned by {_and(sharers)}", sharers))
    return out


def host_flags(host: Host, vms: Iterable[Vm]) -> tuple[Alert, ...]:
    """The NUMA placement problems on ``host``, errors first: what the map and the alerts call out.

    Only ``host``'s active VMs count (the others in ``vms`` are ignored). Errors: a cell whose
    VMs hold more memory than it has, and CPUs pinned by two or more VMs. A cell is overcommitted
    when the memory known to sit on it exceeds its size; VMs of unknown placement add nothing, so
    the finding holds whatever they turn out to hold and its message says it is a lower bound.
    Warnings, per VM: split vNUMA cells, memory remote from the vCPUs, and pinned CPUs or cells
    the host does not report (these need the host's topology).
    """
    resident = _resident(host, vms)
    cpu_cell = _cpu_cells(host)
    found = _host_checks(host, resident) + [a for vm in resident for a in _vm_checks(vm, host, cpu_cell)]
    return tuple(sorted(found, key=lambda a: a.severity is not Severity.ERROR))


def vm_flags(vm: Vm, host: Host | None, others: Iterable[Vm] = ()) -> list[str]:
    """The placement problems that concern ``vm``, worded as in ``host_flags``.

    Its own problems whatever its state (a shut-off VM's split cell is still worth fixing) and,
    when running on ``host``, the host-wide ones it takes part in among itself and ``others``.
    """
    found = _vm_checks(vm, host)
    if host is not None and vm.active and vm.host == host.name:
        found += [a for a in _host_checks(host, _resident(host, [vm, *(o for o in others if o.name != vm.name)]))
                  if vm.name in a.vms]
    return [a.message for a in sorted(found, key=lambda a: a.severity is not Severity.ERROR)]


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


class AlertMemo:
    """What ``alerts`` found last time, for a caller that analyses snapshot after snapshot: a host's
    findings are reused while the host and its VMs are the very objects they were found in (the
    backends keep unchanged objects from one snapshot to the next), device findings while the
    device and VM tuples are."""

    def __init__(self) -> None:
        self.hosts: dict[str, tuple[Host, list[Vm], list[Alert]]] = {}
        self.grouped: Grouped | None = None
        self.devices: tuple[tuple[PciDevice, ...], tuple[Vm, ...], list[Alert]] | None = None


def alerts(inv: Inventory, memo: AlertMemo | None = None) -> tuple[Alert, ...]:
    """Everything worth an operator's attention, most severe first. The same ``memo`` passed with
    each new snapshot makes an unchanged host, and unchanged devices, cost nothing to re-check."""
    memo = memo or AlertMemo()
    memo.grouped = group_by_host(inv.vms, memo.grouped)
    by_host = memo.grouped.hosts
    out: list[Alert] = []
    for host in inv.hosts:
        vms = by_host.get(host.name, [])
        kept = memo.hosts.get(host.name)
        if kept is None or kept[0] is not host or not _identical(kept[1], vms):
            kept = memo.hosts[host.name] = (host, vms, _host_alerts(host, vms))
        out += kept[2]
    if memo.devices is None or memo.devices[0] is not inv.devices or memo.devices[1] is not inv.vms:
        found = []
        for (host_name, address), text in sorted(device_flags(inv).items()):
            severity = Severity.ERROR if text.startswith("claimed") else Severity.WARNING
            found.append(Alert(severity, "device", host_name, address, f"{address} on {host_name}: {text}"))
        memo.devices = (inv.devices, inv.vms, found)
    out += memo.devices[2]
    for r in inv.replicas:
        if r.rpo_violated:
            lag = "unknown" if r.lag_s is None else f"{r.lag_s:.0f}s"
            out.append(Alert(Severity.ERROR, "rpo", r.primary_host, r.vm,
                             f"{r.vm}/{r.disk} replica lag {lag} exceeds its RPO of {r.rpo_s:.0f}s", (r.vm,)))
    out += service_alerts(inv)
    return tuple(sorted(out, key=lambda a: a.severity is not Severity.ERROR))


def _identical(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))


def _host_alerts(host: Host, vms: list[Vm]) -> list[Alert]:
    """A lost host, or its placement findings and the VMs with devices on an overcommitted cell."""
    if host.state is HostState.LOST:
        return [Alert(Severity.ERROR, "host-lost", host.name, host.name,
                      f"{host.name} is lost: {host.error or 'no answer'}")]
    flags = host_flags(host, vms)
    out = list(flags)
    by_name = {vm.name: vm for vm in vms}
    holders = dict.fromkeys(n for a in flags if a.kind == "cell-overcommitted" for n in a.vms)
    for name in holders:
        if by_name[name].devices:
            out.append(Alert(Severity.ERROR, "dma-overcommit", host.name, name,
                             f"{name} has direct-assigned devices but its memory is overcommitted", (name,)))
    return out


def service_alerts(inv: Inventory) -> list[Alert]:
    """S8: an identifier claimed by two services (initiators would reach either), or carried by no VF."""
    out: list[Alert] = []
    first: dict[str, str] = {}
    for s in inv.services:
        if s.identifier in first:
            out.append(Alert(Severity.ERROR, "service", s.host, s.name,
                             f"{s.name} and {first[s.identifier]} both claim {s.identifier}", (s.vm,)))
        first.setdefault(s.identifier, s.name)
        if s.vf is None:
            out.append(Alert(Severity.WARNING, "service", s.host, s.name,
                             f"{s.name}: {s.identifier} is on no VF (moving, or its interface is gone)", (s.vm,)))
    return out
