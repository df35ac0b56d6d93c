"""The NUMA map draws exactly what the model says, on hand-built topologies, at 120 and 80 columns."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

from rich.console import Console
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.widgets import Static

from backends.models import CellShare, Cpu, Host, HugePages, NumaCell, VcpuPin, Vm, VmState, VNumaCell
from widgets.numa_map import NumaMap, map_state, render_map

GIB = 1 << 20


def cell(
    cid: int,
    cpus: Sequence[int],
    mem_gib: int = 256,
    free_gib: int | None = 128,
    *,
    socket: int = 0,
    smt: int | None = None,
    cells: int = 2,
    hugepages: tuple[HugePages, ...] = (),
) -> NumaCell:
    """A cell whose CPU ``c`` has sibling ``c + smt`` (also in ``cpus``) when ``smt`` is given."""

    def siblings(c: int) -> tuple[int, ...]:
        if smt is None:
            return ()
        return (c, c + smt) if c + smt in cpus else (c - smt, c)

    return NumaCell(
        cid,
        tuple(Cpu(c, socket, c % smt if smt else c, siblings(c)) for c in cpus),
        mem_gib * GIB,
        None if free_gib is None else free_gib * GIB,
        hugepages,
        tuple((o, 10 if o == cid else 21) for o in range(cells)),
    )


def host(*cells: NumaCell, name: str = "hv1") -> Host:
    threads = sum(len(c.cpus) for c in cells)
    return Host(name, f"test:///{name}", "fra", "Test CPU", threads, sum(c.memory_kib for c in cells), numa=cells)


def vm(
    name: str,
    mem_gib: int = 8,
    *,
    on: int | None = 0,
    pins: Sequence[int] = (),
    vcpus: int | None = None,
    vnuma: tuple[VNumaCell, ...] = (),
    state: VmState = VmState.RUNNING,
) -> Vm:
    """A VM with ``mem_gib`` on cell ``on`` (None: placement unknown), vCPU i pinned to ``pins[i]``."""
    return Vm(
        name,
        f"uuid-{name}",
        "hv1",
        state,
        vcpus or max(len(pins), 2),
        mem_gib * GIB,
        vnuma=vnuma,
        pinning=tuple(VcpuPin(i, (c,)) for i, c in enumerate(pins)),
        memory_nodeset=() if on is None or vnuma else (on,),
    )


def text(h: Host, vms: Sequence[Vm], width: int = 118, selected: str | None = None) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_map(map_state(h, vms, selected), width))
    return console.export_text()


def block(out: str, title: str) -> list[str]:
    """The inside lines of the box whose title starts with ``title`` (boxes may sit side by side)."""
    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if f"╭─ {title}" in line)
    left = lines[top].index(f"╭─ {title}")
    right = lines[top].index("╮", left)
    inside: list[str] = []
    for line in lines[top + 1 :]:
        if line[left] == "╰":
            return inside
        inside.append(line[left + 1 : right].strip())
    raise AssertionError("box not closed")


def grid_of(out: str, title: str) -> dict[str, str]:
    """Row label → the CPU glyphs of that row, e.g. {'0-15': 'AAAA····…'}."""
    rows = {}
    for line in block(out, title):
        match = re.fullmatch(r"(\d+(?:-\d+|…)) ((?:\S\s*)+)", line)
        if match and not line.startswith("mem"):
            rows[match.group(1)] = match.group(2).replace(" ", "")
    return rows


def two_socket() -> Host:
    return host(
        cell(0, [*range(0, 16), *range(32, 48)], smt=32), cell(1, [*range(16, 32), *range(48, 64)], socket=1, smt=32)
    )


def test_one_cell_has_no_distance_table_and_fills_its_grid() -> None:
    h = host(cell(0, range(16), 64, 40, cells=1, hugepages=(HugePages(1 << 20, 16, 4), HugePages(2048, 0, 0))))
    out = text(h, [vm("db", 16, pins=[0, 1, 2, 3])])
    assert "cell 0 · socket 0 · 16 CPUs" in out
    assert grid_of(out, "cell 0") == {"0-15": "AAAA" + "·" * 12}
    assert "used 24.0G/64.0G · free 40.0G · VMs 16.0G" in out
    assert "hugepages 1G: 4/16 free" in out and "2M" not in out  # a size with no pages is left out
    assert "distances" not in out
    assert "no NUMA placement problems" in out


def test_smt_siblings_sit_one_above_the_other_and_pinned_cpus_carry_the_vm_letter() -> None:
    out = text(two_socket(), [vm("db", 64, on=1, pins=[16, 17, 48]), vm("web", 8, on=0, pins=[0])])
    assert grid_of(out, "cell 0") == {"0-15": "A" + "·" * 15, "32-47": "·" * 16}  # A: the VM nearest CPU 0
    assert grid_of(out, "cell 1") == {"16-31": "BB" + "·" * 14, "48-63": "B" + "·" * 15}
    assert re.search(r"B\s+db\s+running\s+3\s+64\.0G\s+16-17,48\s+cell 1", out)
    assert "(3/3 pinned)" not in out


def test_cells_sit_side_by_side_at_120_columns_and_stack_at_80() -> None:
    h = host(*(cell(i, range(8 * i, 8 * i + 8), 64, 32, cells=8) for i in range(8)))
    wide, narrow = text(h, [], 118), text(h, [], 78)
    assert [line.count("╭─ cell") for line in wide.splitlines() if "╭" in line] == [2, 2, 2, 2]
    assert [line.count("╭─ cell") for line in narrow.splitlines() if "╭" in line] == [1] * 8
    for out, width in ((wide, 118), (narrow, 78)):
        assert max(len(line) for line in out.splitlines()) <= width
        assert grid_of(out, "cell 7") == {"56-63": "·" * 8}
    matrix = wide[wide.index("distances") :].splitlines()
    assert re.match(r"\s*7(\s+21){7}\s+10\b", matrix[9])  # the last row: cell 7 is 21 from all but itself


def test_a_vm_spanning_three_cells_shows_in_each_with_its_share() -> None:
    h = host(*(cell(i, range(8 * i, 8 * i + 8), 128, 64, cells=4) for i in range(4)))
    nodes = tuple(VNumaCell(n, (2 * n, 2 * n + 1), 32 * GIB, (CellShare(n + 1, 32 * GIB),)) for n in range(3))
    solver = vm("solver", 96, pins=[8, 9, 16, 17, 24, 25], vnuma=nodes)
    out = text(h, [solver, vm("batch", 32, on=0)])
    for c in (1, 2, 3):
        assert grid_of(out, f"cell {c}") == {f"{8 * c}-{8 * c + 7}": "AA" + "·" * 6}
        assert "VMs 32.0G" in "\n".join(block(out, f"cell {c}"))
    assert grid_of(out, "cell 0") == {"0-7": "·" * 8}
    assert "1:32G 2:32G 3:32G" in out
    assert "no NUMA placement problems" in out  # each vNUMA cell sits with its vCPUs


def test_256_cpus_in_two_cells_are_all_drawn_in_bands() -> None:
    h = host(
        cell(0, [*range(0, 64), *range(128, 192)], 512, 256, smt=128),
        cell(1, [*range(64, 128), *range(192, 256)], 512, 256, socket=1, smt=128),
    )
    out = text(h, [vm("big", 64, on=0, pins=range(32))], 118)
    grid = grid_of(out, "cell 0")
    assert list(grid) == ["0-15", "128-143", "16-31", "144-159", "32-47", "160-175", "48-63", "176-191"]
    assert "".join(grid.values()).count("A") == 32 and sum(len(g) for g in grid.values()) == 128
    assert grid["16-31"] == "A" * 16 and grid["32-47"] == "·" * 16
    assert sum(len(g) for g in grid_of(out, "cell 1").values()) == 128
    assert max(len(line) for line in text(h, [], 78).splitlines()) <= 78


def test_unknown_free_memory_and_placement_are_shown_as_unknown() -> None:
    h = host(cell(0, range(4), 64, None, cells=1))
    out = text(h, [vm("mystery", 16, on=None), vm("known", 8, on=0)])
    inside = "\n".join(block(out, "cell 0"))
    assert "used ?/64.0G · free ? · VMs 8.0G" in inside
    bar = next(line for line in block(out, "cell 0") if line.startswith("mem"))
    assert "╌" in bar and "░" not in bar
    assert re.search(r"mystery .* placement unknown", out)


def test_split_vnuma_cell_and_remote_memory_are_flagged() -> None:
    split = (
        VNumaCell(0, (0, 1), 16 * GIB, (CellShare(0, 16 * GIB),)),
        VNumaCell(1, (2, 3), 16 * GIB, (CellShare(0, 8 * GIB), CellShare(1, 8 * GIB))),
    )
    out = text(two_socket(), [vm("replica", vnuma=split, vcpus=4), vm("analytics", 64, on=1, pins=[0, 1])])
    assert "▲ B replica: vNUMA cell v1 split across cells 0,1 (8.0G on 0 + 8.0G on 1)" in out
    assert "▲ A analytics: memory remote from vCPUs — 64.0G on cell 1, vCPUs on cell 0" in out
    assert "▲ 2 flags" in out.splitlines()[0]
    local = text(two_socket(), [vm("analytics", 64, on=0, pins=[0, 1])])
    assert "remote" not in local and "flag" not in local.splitlines()[0]


def test_two_vms_pinned_to_one_cpu_are_flagged_as_overcommitted() -> None:
    out = text(two_socket(), [vm("a", pins=[4, 5]), vm("b", pins=[5, 6])])
    assert grid_of(out, "cell 0")["0-15"] == "····A!B·········"
    assert "✖ A B hv1 CPU 5 is overcommitted: pinned by a and b" in out  # each VM led by its letter
    assert "✖ 1 flag" in out.splitlines()[0]


def test_a_cell_holding_more_vm_memory_than_it_has_is_overcommitted() -> None:
    h = host(cell(0, range(8), 128, 0, cells=1))
    out = text(h, [vm("x", 96), vm("y", 40), vm("off", 64, state=VmState.SHUTOFF)])
    assert "✖ A B hv1 cell 0 is overcommitted by 8.0G: VMs hold 136G of 128G" in out
    assert "cell 0 · socket 0 · 8 CPUs · overcommitted" in out
    assert "VMs 136G > 128G" in out
    bar = next(line for line in block(out, "cell 0") if line.startswith("mem"))
    assert bar.endswith("▓") and "B" in bar and "off" not in bar
    assert re.search(r"-\s+off\s+shutoff", out)  # listed, but without a letter


def test_known_memory_over_a_cell_is_overcommitted_beside_a_vm_of_unknown_placement() -> None:
    h = host(cell(0, range(8), 128, 0, cells=1))
    out = text(h, [vm("x", 96), vm("y", 40), vm("mystery", 16, on=None)])
    assert ("✖ A B hv1 cell 0 is overcommitted by at least 8.0G: VMs hold 136G of 128G, "
            "not counting 1 VM of unknown placement") in out.replace("\n", " ")
    assert "cell 0 · socket 0 · 8 CPUs · overcommitted" in out


def test_cpus_the_host_does_not_report_are_flagged() -> None:
    out = text(two_socket(), [vm("ghost", 8, on=0, pins=[0, 99])])
    assert "▲ A ghost: uses CPU 99, which the host does not report" in out
    assert "▲ 1 flag" in out.splitlines()[0]


def test_no_numa_topology_is_said_not_invented() -> None:
    h = Host("bare", "test:///bare", "fra", None, 8, 16 * GIB)
    out = text(h, [vm("a", on=None)])
    assert "this host reports no NUMA topology" in out
    assert "CPU model ?" in out and "NUMA ?" in out
    assert "╭─ cell" not in out and "distances" not in out and "idle CPU" not in out
    assert "placement cannot be checked" in out and "no NUMA placement problems" not in out


def test_selected_vm_stands_out_and_long_names_are_truncated() -> None:
    long_name = "a-very-long-virtual-machine-name-for-the-tenant-x"
    vms = [vm("db", 64, pins=[0, 1]), vm(long_name, 64, on=0, pins=[2])]
    out = text(two_socket(), vms, 78, selected="db")
    bar = next(line for line in block(out, "cell 0") if line.startswith("mem"))
    assert re.fullmatch(r"mem A█+B▄+▒*░+", bar)  # the selected VM full height, the others half
    assert long_name not in out and re.search(r"B  a-very-long-virtual-\S+… ", out)
    assert max(len(line) for line in out.splitlines()) <= 78
    unselected = text(two_socket(), vms, 78)
    assert "▄" not in unselected


class MapApp(App[None]):
    def compose(self) -> ComposeResult:
        yield NumaMap()


async def test_widget_renders_in_an_app_and_keeps_letters_across_refreshes() -> None:
    h = two_socket()
    app = MapApp()
    async with app.run_test(size=(120, 40)) as pilot:
        numa = app.query_one(NumaMap)
        numa.show(h, [vm("web", pins=[0]), vm("db", on=1, pins=[16])])
        await pilot.pause()
        body = numa.query_one(Static)
        lines = [s.text for s in body.render_lines(Region(0, 0, body.size.width, body.size.height))]
        assert any(line.count("╭─ cell") == 2 for line in lines)  # side by side at 120 columns
        assert any(re.search(r"\b0-15 A · ·", line) for line in lines)
        numa.show(h, [vm("new", pins=[1]), vm("web", pins=[0]), vm("db", on=1, pins=[16])])
        await pilot.pause()
        out = "\n".join(
            line.rstrip()
            for line in (s.text for s in body.render_lines(Region(0, 0, body.size.width, body.size.height)))
        )
        assert re.search(r"0-15 A C ·", out)  # web keeps A, the new VM takes the next free letter
        assert re.search(r"16-31 B ·", out)
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        lines = [s.text for s in body.render_lines(Region(0, 0, body.size.width, body.size.height))]
        assert [line.count("╭─ cell") for line in lines if "╭" in line] == [1, 1]  # stacked at 80 columns
        assert all(len(line.rstrip()) <= body.size.width for line in lines)


def glyph_styles(out_vms: Sequence[Vm], selected: str | None) -> dict[str, set[bool]]:
    """Letter → whether it is drawn reversed, for the CPU glyphs of row 0-15 (colour dropped)."""
    console = Console(width=118, file=io.StringIO(), no_color=True)
    lines = console.render_lines(render_map(map_state(two_socket(), out_vms, selected), 118), pad=False)
    row = next(line for line in lines if "0-15" in "".join(s.text for s in line))
    found: dict[str, set[bool]] = {}
    for seg in row:
        if seg.text.isalpha() and len(seg.text) == 1:
            found.setdefault(seg.text, set()).add(bool(seg.style and seg.style.reverse))
    return found


def test_selected_vm_cpus_are_reversed_and_the_rest_are_not() -> None:
    vms = [vm("db", pins=[0, 1]), vm("web", pins=[2])]
    assert glyph_styles(vms, None) == {"A": {True}, "B": {True}}  # no selection: every VM a solid block
    assert glyph_styles(vms, "db") == {"A": {True}, "B": {False}}
    assert glyph_styles(vms, "web") == {"A": {False}, "B": {True}}
