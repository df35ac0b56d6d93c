"""The NUMA map's key: VM letters and colours, the VM legend, the flags and the distance table.

The flags themselves come from ``backends.analysis.host_flags``, so the map, the alerts and the
command line word the same problems the same way; this module only draws them.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from backends.analysis import Alert, Severity
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


def cells_text(cells: Iterable[int]) -> str:
    ids = sorted(set(cells))
    return f"cell{'s' if len(ids) > 1 else ''} {','.join(map(str, ids))}"


def flags_text(flags: Sequence[Alert], marks: Mapping[str, Mark], topology: bool = True) -> Text:
    """The host's placement alerts (``backends.analysis.host_flags``), each led by the marks of its VMs."""
    if not flags:
        if not topology:
            return Text("placement cannot be checked without the host's NUMA topology", style="dim")
        return Text("✓ no NUMA placement problems", style="green")
    out = Text()
    for i, flag in enumerate(flags):
        colour = "red" if flag.severity is Severity.ERROR else "yellow"
        out.append("\n" if i else "")
        out.append("✖ " if flag.severity is Severity.ERROR else "▲ ", style=f"bold {colour}")
        for mark in dict.fromkeys(marks[name] for name in flag.vms if name in marks):
            out.append(mark.letter, style=f"bold reverse {mark.colour}")
            out.append(" ")
        out.append(flag.message, style=colour)
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
