"""The NUMA map's key: VM letters and colours, the VM legend, the flags and the distance table."""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from backends.models import Host, Vm
from backends.units import format_cpuset, format_kib
from widgets.text import vm_state

# Mid-tone colours (Tableau 10 without its red, kept for problems) that read on dark and light themes.
PALETTE = ("#5f8fc9", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2",
           "#edc948", "#9c755f", "#ff9da7", "#a0cbe8", "#bab0ac")
LETTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits
OVERFLOW = "*"  # the mark shared by VMs beyond the 62 letters


@dataclass(frozen=True, slots=True)
class Mark:
    """How one VM is drawn: its letter (which carries the meaning) and its colour."""

    letter: str
    colour: str


@dataclass(frozen=True, slots=True)
class Flag:
    error: bool  # red when true, yellow otherwise
    text: str


def _order(vm: Vm) -> tuple[int, int, str]:
    """Pinned VMs by their first CPU, then floating ones by their first cell: A sits near CPU 0."""
    cpus = vm.pinned_cpus()
    cells = sorted(vm.memory_by_cell() or {})
    return (cpus[0] if cpus else 1 << 30, cells[0] if cells else 1 << 30, vm.name)


def assign_marks(vms: Iterable[Vm], previous: Mapping[str, Mark] | None = None) -> dict[str, Mark]:
    """Marks for the active VMs; a VM keeps the mark it had, so refreshes never reshuffle colours."""
    previous = previous or {}
    active = sorted((v for v in vms if v.active), key=_order)
    out = {v.name: previous[v.name] for v in active if v.name in previous}
    spare = iter(c for c in LETTERS if c not in {m.letter for m in out.values()})
    for vm in active:
        if vm.name not in out:
            letter = next(spare, OVERFLOW)
            colour = "white" if letter == OVERFLOW else PALETTE[LETTERS.index(letter) % len(PALETTE)]
            out[vm.name] = Mark(letter, colour)
    return out


def cpu_owners(vms: Iterable[Vm]) -> dict[int, list[str]]:
    """Host CPU → the active VMs with a vCPU pinned there, in VM order."""
    owners: dict[int, list[str]] = {}
    for vm in vms:
        if vm.active:
            for cpu in vm.pinned_cpus():
                owners.setdefault(cpu, []).append(vm.name)
    return owners


def cells_text(cells: Iterable[int]) -> str:
    ids = sorted(set(cells))
    return f"cell{'s' if len(ids) > 1 else ''} {','.join(map(str, ids))}"


def numa_flags(host: Host, vms: Sequence[Vm], marks: Mapping[str, Mark]) -> list[Flag]:
    """Placement problems on one host, errors first: what an operator must not miss."""
    cpu_cell = {cpu.id: cell.id for cell in host.numa for cpu in cell.cpus}
    cell_ids = {cell.id for cell in host.numa}
    errors: list[Flag] = []
    warnings: list[Flag] = []
    used: dict[int, int] = {}
    for vm in (v for v in vms if v.active):
        placed = vm.memory_by_cell() or {}
        for cid, kib in placed.items():
            used[cid] = used.get(cid, 0) + kib
        for node in vm.vnuma:
            if len(set(node.backing_cells)) > 1:
                shares = " + ".join(f"{format_kib(s.memory_kib)} on {s.cell}" for s in node.backing)
                warnings.append(Flag(False, f"{vm.name}: vNUMA cell v{node.id} split across "
                                            f"{cells_text(node.backing_cells)} ({shares})"))
        if not host.numa:
            continue
        vcpu_cells = {cpu_cell[c] for c in vm.pinned_cpus() if c in cpu_cell}
        remote = {c: kib for c, kib in placed.items() if kib and c not in vcpu_cells}
        if vcpu_cells and remote:
            where = ", ".join(f"{format_kib(kib)} on cell {c}" for c, kib in sorted(remote.items()))
            warnings.append(Flag(False, f"{vm.name}: memory remote from vCPUs — {where}, "
                                        f"vCPUs on {cells_text(vcpu_cells)}"))
        stray_cpus = [c for c in vm.pinned_cpus() if c not in cpu_cell]
        stray_cells = [c for c in placed if c not in cell_ids]
        if stray_cpus or stray_cells:
            what = [f"CPUs {format_cpuset(stray_cpus)}"] if stray_cpus else []
            what += [cells_text(stray_cells)] if stray_cells else []
            warnings.append(Flag(False, f"{vm.name}: uses {' and '.join(what)}, which the host does not report"))
    for cell in host.numa:
        if used.get(cell.id, 0) > cell.memory_kib:
            errors.append(Flag(True, f"cell {cell.id} overcommitted: VMs hold {format_kib(used[cell.id])} "
                                     f"of {format_kib(cell.memory_kib)} "
                                     f"(+{format_kib(used[cell.id] - cell.memory_kib)})"))
    shared: dict[tuple[str, ...], list[int]] = {}
    for cpu, names in sorted(cpu_owners(vms).items()):
        if len(names) > 1:
            shared.setdefault(tuple(names), []).append(cpu)
    for sharers, cpus in shared.items():
        who = " and ".join(f"{marks[n].letter} {n}" if n in marks else n for n in sharers)
        plural = "s" if len(cpus) > 1 else ""
        errors.append(Flag(True, f"CPU{plural} {format_cpuset(cpus)} overcommitted: pinned by {who}"))
    return errors + warnings


def flags_text(flags: Sequence[Flag], topology: bool = True) -> Text:
    if not flags:
        if not topology:
            return Text("placement cannot be checked without the host's NUMA topology", style="dim")
        return Text("✓ no NUMA placement problems", style="green")
    out = Text()
    for i, flag in enumerate(flags):
        out.append("\n" if i else "")
        out.append("✖ " if flag.error else "▲ ", style="bold red" if flag.error else "bold yellow")
        out.append(flag.text, style="red" if flag.error else "yellow")
    return out


def _short(kib: int) -> str:
    return format_kib(kib).replace(".0", "")


def _fit(natural: list[int], floors: list[int], room: int) -> list[int]:
    """Shrink the widest-above-its-floor column until the columns fit ``room``."""
    widths = list(natural)
    while sum(widths) > room and any(w > f for w, f in zip(widths, floors, strict=True)):
        i = max(range(len(widths)), key=lambda i: widths[i] - floors[i])
        widths[i] -= 1
    return widths


def _vm_row(vm: Vm, mark: Mark | None) -> list[Text]:
    letter = Text(mark.letter, style=f"bold reverse {mark.colour}") if mark else Text("-", style="dim")
    pinned = vm.pinned_cpus()
    pinned_vcpus = len({p.vcpu for p in vm.pinning if p.cpus})
    cpus = Text(format_cpuset(pinned)) if pinned else Text("floating", style="italic")
    if pinned and pinned_vcpus < vm.vcpus:
        cpus.append(f" ({pinned_vcpus}/{vm.vcpus} pinned)", style="yellow")
    placed = vm.memory_by_cell()
    if placed is None:
        where = Text("placement unknown", style="yellow")
    elif len(placed) == 1:
        where = Text(cells_text(placed))
    else:
        where = Text(" ".join(f"{c}:{_short(k)}" for c, k in sorted(placed.items())))
    return [letter, Text(vm.name), vm_state(vm.state), Text(str(vm.vcpus)), Text(format_kib(vm.memory_kib)),
            cpus, where]


def legend(vms: Sequence[Vm], marks: Mapping[str, Mark], selected: str | None, width: int) -> Table:
    """One row per VM: mark, name, state, vCPUs, memory, pinning and where its memory sits."""
    rank = {letter: i for i, letter in enumerate(LETTERS + OVERFLOW)}
    ordered = sorted(vms, key=lambda v: (not v.active, rank[marks[v.name].letter] if v.name in marks else 0, v.name))
    rows = [_vm_row(vm, marks.get(vm.name)) for vm in ordered]
    headers = ("", "VM", "state", "vCPUs", "memory", "CPUs", "memory on")
    natural = [max([len(h)] + [r[i].cell_len for r in rows]) for i, h in enumerate(headers)]
    natural[1] = min(natural[1], 32)
    fixed = sum(natural[i] for i in (0, 2, 3, 4)) + 2 * (len(headers) - 1)  # mark, state, vCPUs, memory, gaps
    name, cpus, where = _fit([natural[1], natural[5], natural[6]], [10, 9, 11], width - fixed)
    widths = [natural[0], name, *natural[2:5], cpus, where]
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="dim", show_edge=False)
    for i, header in enumerate(headers):
        table.add_column(header, width=widths[i], no_wrap=True, overflow="ellipsis",
                         justify="right" if header in ("vCPUs", "memory") else "left")
    for vm, row in zip(ordered, rows, strict=True):
        if vm.name == selected:  # one plain reverse bar across the row, the mark keeps its colour
            row[1:] = [Text(cell.plain) for cell in row[1:]]
        style = "dim" if not vm.active else "reverse bold" if vm.name == selected else ""
        table.add_row(*row, style=style)
    return table


def distances(host: Host) -> Group:
    """The SLIT distances between cells, under a heading; '?' where the host does not say."""
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
    table.add_column("", style="dim", justify="right")
    for cell in host.numa:
        table.add_column(str(cell.id), justify="right", header_style="dim")
    for cell in host.numa:
        row: list[Text] = []
        for other in host.numa:
            distance = cell.distance_to(other.id)
            style = "dim" if other.id == cell.id else "yellow" if distance is None else ""
            row.append(Text("?" if distance is None else str(distance), style=style))
        table.add_row(str(cell.id), *row)
    return Group(Text("distances", style="bold"), table)


def key_text() -> RenderableType:
    key = Text(style="dim")
    for glyph, style, meaning in (("·", "", "idle CPU"), ("!", "bold reverse red", "CPU pinned by 2+ VMs"),
                                  ("▒", "", "other use"), ("░", "", "free"), ("╌", "", "unknown")):
        key.append("  " if key.plain else "")
        key.append(glyph, style=style)
        key.append(f" {meaning}")
    return key
