"""The host NUMA map: every cell's CPUs, memory and hugepages, which VM sits where, and what is wrong.

Each active VM gets a letter and a colour, the same in every cell; the letter carries the
meaning, so the map reads without colour. Layout adapts to the width it is rendered at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from backends.analysis import Alert, Severity, cpu_owners, host_flags, overcommitted_cells
from backends.models import Host, HostState, NumaCell, Vm
from backends.units import format_kib
from widgets.numa_legend import LETTERS, OVERFLOW, Mark, assign_marks, distances, flags_text, key_text, legend

MIN_BOX = 54  # narrowest cell box before the cells stack one per row
GAP = 1  # columns between boxes


@dataclass(frozen=True, slots=True)
class MapState:
    """Everything one rendering needs; the layout is decided only once the width is known."""

    host: Host
    vms: tuple[Vm, ...]
    marks: Mapping[str, Mark]
    selected: str | None = None
    owners: dict[int, list[str]] = field(default_factory=dict)
    memory: dict[int, list[tuple[str, int]]] = field(default_factory=dict)  # cell → (VM, KiB)
    flags: tuple[Alert, ...] = ()  # the host's placement problems, from backends.analysis
    overcommitted: frozenset[int] = frozenset()  # cells holding more VM memory than they have


def map_state(host: Host, vms: Sequence[Vm], selected: str | None = None,
              marks: Mapping[str, Mark] | None = None) -> MapState:
    active = [v for v in vms if v.active]
    marks = assign_marks(active) if marks is None else marks
    memory: dict[int, list[tuple[str, int]]] = {}
    for vm in sorted(active, key=lambda v: (LETTERS + OVERFLOW).index(marks[v.name].letter)):
        for cell, kib in sorted((vm.memory_by_cell() or {}).items()):
            if kib > 0:
                memory.setdefault(cell, []).append((vm.name, kib))
    return MapState(host, tuple(vms), marks, selected, cpu_owners(active), memory, host_flags(host, vms),
                    frozenset(overcommitted_cells(host, vms)))


def render_map(state: MapState, width: int) -> RenderableType:
    """The whole map laid out for ``width`` columns."""
    host = state.host
    parts: list[RenderableType] = [_header(host, state.flags, width)]
    if not host.numa:
        parts.append(Panel(Text("this host reports no NUMA topology", style="yellow"), box=box.ROUNDED,
                           border_style="dim", width=min(width, 60)))
    else:
        parts.append(_cells(state, width))
    if state.vms:
        parts += [Text(f"VMs on {host.name}", style="bold"),
                  legend(state.vms, state.marks, state.selected, width)]
        parts += [key_text()] if host.numa else []
    else:
        parts.append(Text("no VMs on this host", style="dim"))
    flag_block = Group(Text("flags", style="bold"), flags_text(state.flags, state.marks, bool(host.numa)))
    if len(host.numa) < 2:
        parts += [Text(""), flag_block]
    elif width >= 100:
        row = Table.grid(padding=(0, 3))
        row.add_column(no_wrap=True)
        row.add_column(ratio=1)
        row.add_row(distances(host), flag_block)
        parts += [Text(""), row]
    else:
        parts += [Text(""), distances(host), Text(""), flag_block]
    return Group(*parts)


def _header(host: Host, flags: Sequence[Alert], width: int) -> Text:
    text = Text(host.name, style="bold")
    if flags:
        errors = any(f.severity is Severity.ERROR for f in flags)
        text.append(f" {'✖' if errors else '▲'} {len(flags)} flag{'s' if len(flags) > 1 else ''}",
                    style="bold red" if errors else "bold yellow")
    if host.state is HostState.LOST:
        text.append(f" · lost: {host.error or 'no answer'} (last known layout)", style="bold red")
    facts = [host.cpu_model or "CPU model ?", f"{host.threads} threads", format_kib(host.memory_kib),
             f"{len(host.numa)} NUMA cell{'' if len(host.numa) == 1 else 's'}" if host.numa else "NUMA ?"]
    text.append(" · " + " · ".join(facts), style="dim")
    text.truncate(width, overflow="ellipsis")
    return text


def _cells(state: MapState, width: int) -> Table:
    cells = state.host.numa
    per_row = max(1, min(len(cells), (width + GAP) // (MIN_BOX + GAP)))
    box_width = min((width - GAP * (per_row - 1)) // per_row, 100)
    label_width = _label_width(state.host)
    grid = Table.grid(padding=(0, GAP, 0, 0))
    for _ in range(per_row):
        grid.add_column(width=box_width, no_wrap=True)
    for start in range(0, len(cells), per_row):
        row = cells[start:start + per_row]
        bodies = [_cell_body(state, cell, box_width - 4, label_width) for cell in row]
        height = max(len(b) for b in bodies)
        panels = [_cell_panel(state, cell, body + [Text("")] * (height - len(body)), box_width)
                  for cell, body in zip(row, bodies, strict=True)]
        grid.add_row(*panels)
    return grid


def _cell_panel(state: MapState, cell: NumaCell, body: list[Text], width: int) -> Panel:
    sockets = sorted({c.socket for c in cell.cpus if c.socket is not None})
    socket = ("socket " + ",".join(map(str, sockets))) if sockets else "socket ?"
    title = Text(f"cell {cell.id} · {socket} · {len(cell.cpus)} CPUs", style="bold default")
    over = cell.id in state.overcommitted
    if over:
        title.append(" · overcommitted", style="bold red")
    return Panel(Group(*body), title=title, title_align="left", box=box.ROUNDED, width=width,
                 padding=(0, 1), border_style="red" if over else "bright_black")


def _cell_body(state: MapState, cell: NumaCell, inner: int, label_width: int) -> list[Text]:
    lines = _cpu_grid(state, cell, inner, label_width) or [Text("no CPUs reported", style="dim")]
    lines.append(Text(""))
    lines += _memory(state, cell, inner)
    pages = [p for p in cell.hugepages if p.total > 0]
    if pages:
        text = Text("hugepages ", style="dim")
        for i, p in enumerate(pages):
            text.append(" · " if i else "")
            text.append(f"{_page_size(p.size_kib)}: ", style="bold")
            text.append(f"{'?' if p.free is None else p.free}/{p.total} free")
        lines.append(text)
    return lines


def _page_size(kib: int) -> str:
    for unit, size in (("G", 1 << 20), ("M", 1 << 10)):
        if kib % size == 0:
            return f"{kib // size}{unit}"
    return f"{kib}K"


def _label_width(host: Host) -> int:
    top = max((c.id for cell in host.numa for c in cell.cpus), default=0)
    return len(f"{top}-{top}")


def _core_groups(cell: NumaCell) -> list[list[int]]:
    """The cell's CPUs as SMT sibling groups (one per core), so siblings can sit one above the other."""
    ids = {c.id for c in cell.cpus}
    placed: set[int] = set()
    groups: list[list[int]] = []
    for cpu in sorted(cell.cpus, key=lambda c: c.id):
        if cpu.id in placed:
            continue
        group = [cpu.id, *sorted(s for s in cpu.siblings if s in ids and s != cpu.id and s not in placed)]
        placed.update(group)
        groups.append(group)
    return groups


def _grid_width(columns: int, label_width: int) -> int:
    return label_width + 1 + columns * 2 + (columns - 1) // 4


def _cpu_grid(state: MapState, cell: NumaCell, inner: int, label_width: int) -> list[Text]:
    groups = _core_groups(cell)
    if not groups:
        return []
    fit = next((n for n in (32, 16, 8, 4) if _grid_width(n, label_width) <= inner), 2)
    bands = -(-len(groups) // fit)
    per_row = -(-len(groups) // bands)
    threads = max(len(g) for g in groups)
    lines: list[Text] = []
    for start in range(0, len(groups), per_row):
        band = groups[start:start + per_row]
        if start and threads > 1:
            lines.append(Text(""))
        for t in range(threads):
            ids = [g[t] for g in band if len(g) > t]
            contiguous = ids == list(range(ids[0], ids[-1] + 1)) if ids else False
            label = (f"{ids[0]}-{ids[-1]}" if contiguous and len(ids) > 1 else f"{ids[0]}…") if ids else ""
            line = Text(label.rjust(label_width) + " ", style="dim")
            for i, group in enumerate(band):
                line.append(" " if i and i % 4 == 0 else "")
                line.append_text(_cpu_glyph(state, group[t]) if len(group) > t else Text(" "))
                line.append(" ")
            line.rstrip()
            lines.append(line)
    return lines


def _cpu_glyph(state: MapState, cpu: int) -> Text:
    names = state.owners.get(cpu, [])
    if not names:
        return Text("·", style="dim")
    if len(names) > 1:
        return Text("!", style="bold reverse red")
    mark = state.marks[names[0]]
    plain = state.selected is not None and names[0] != state.selected  # the selected VM stands out
    style = f"bold {mark.colour}" if plain else f"bold reverse {mark.colour}"
    return Text(mark.letter, style=style)


def _memory(state: MapState, cell: NumaCell, inner: int) -> list[Text]:
    vms = state.memory.get(cell.id, [])
    in_vms = sum(k for _, k in vms)
    total = cell.memory_kib
    free = cell.free_kib
    scale = max(total, in_vms, 1)
    if free is None:
        tail = [("╌", "dim", scale - in_vms)]
    else:
        shown_free = max(0, min(free, total - in_vms))
        tail = [("▒", "dim", max(0, total - in_vms - shown_free)), ("░", "dim", shown_free)]
    sizes = _allocate([k for _, k in vms] + [k for _, _, k in tail], scale, inner - 4)
    bar = Text("mem ", style="dim")
    for (name, _), cols in zip(vms, sizes, strict=False):
        mark = state.marks[name]
        if not cols:
            continue
        if state.selected in (None, name):
            bar.append(mark.letter, style=f"bold reverse {mark.colour}")
            bar.append("█" * (cols - 1), style=mark.colour)
        else:  # half height: the selected VM's full-height segments stand out
            bar.append(mark.letter, style=f"bold {mark.colour}")
            bar.append("▄" * (cols - 1), style=mark.colour)
    for (glyph, style, _), cols in zip(tail, sizes[len(vms):], strict=True):
        bar.append(glyph * cols, style=style)
    if in_vms > total:  # the part beyond the cell's size, re-drawn as red overflow
        start = 4 + round(total / scale * (inner - 4))
        overflow = "".join(c if c.isalnum() else "▓" for c in bar.plain[start:])
        bar = bar[:start] + Text(overflow, style="bold red")
    used = None if free is None else total - free
    figures = Text("used ", style="dim")
    figures.append(f"{format_kib(used)}/{format_kib(total)}", style="bold")
    figures.append(" · free ", style="dim")
    figures.append(format_kib(free), style="bold" if free is not None else "bold yellow")
    figures.append(" · VMs ", style="dim")
    figures.append(format_kib(in_vms), style="bold red" if in_vms > total else "")
    if in_vms > total:
        figures.append(f" > {format_kib(total)}", style="bold red")
    return [bar, figures]


def _allocate(amounts: list[int], scale: int, width: int) -> list[int]:
    """Columns per amount, proportional (largest remainder), every non-zero amount at least one."""
    width = max(width, 1)
    exact = [a * width / scale for a in amounts]
    cols = [int(e) for e in exact]
    budget = min(width, round(sum(exact))) - sum(cols)
    for i in sorted(range(len(amounts)), key=lambda i: exact[i] - cols[i], reverse=True)[:max(budget, 0)]:
        cols[i] += 1
    for i, amount in enumerate(amounts):
        if amount > 0 and cols[i] == 0:
            donor = max(range(len(cols)), key=lambda j: cols[j])
            if cols[donor] > 1:
                cols[donor] -= 1
                cols[i] = 1
    return cols


class _Map:
    """A rich renderable that lays the map out at whatever width Textual gives it."""

    def __init__(self, state: MapState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield render_map(self.state, options.max_width)


class NumaMap(VerticalScroll):
    """Scrollable NUMA map of one host; ``show`` replaces what it draws."""

    DEFAULT_CSS = """
    NumaMap {
        scrollbar-gutter: stable;
        padding: 0 1;
    }
    NumaMap > Static {
        width: 100%;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._state: MapState | None = None

    def compose(self) -> ComposeResult:
        yield Static(self._renderable(), id="numa-body")

    def show(self, host: Host, vms: Sequence[Vm], selected_vm: str | None = None) -> None:
        """Draw ``host`` with its VMs; VMs keep their letters across calls for the same host."""
        previous = self._state.marks if self._state and self._state.host.name == host.name else None
        marks = assign_marks(vms, previous)
        self._state = map_state(host, vms, selected_vm, marks)
        for body in self.query("#numa-body").results(Static):
            body.update(self._renderable())

    def render_map(self, width: int) -> RenderableType:
        """What the widget draws, laid out for ``width`` columns (for tests and exports)."""
        return self._renderable() if self._state is None else render_map(self._state, width)

    def _renderable(self) -> RenderableType:
        if self._state is None:
            return Text("no host selected", style="dim")
        return _Map(self._state)
