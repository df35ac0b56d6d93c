"""The VM table keys rows by UUID: a migration updates the row in place, the cursor stays on the VM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from textual.app import App, ComposeResult
from textual.pilot import Pilot

from backends.models import Vm
from backends.sim.backend import SimBackend
from backends.sim.fleet import demo_fleet_path, load_fleet
from widgets.vm_table import VmTable


class _Host(App[None]):
    def compose(self) -> ComposeResult:
        yield VmTable()


@asynccontextmanager
async def _shown(size: tuple[int, int]) -> AsyncIterator[tuple[Pilot[None], VmTable, list[Vm]]]:
    """The demo fleet's VMs, by name, shown in a VmTable of an app of ``size``."""
    vms = sorted(SimBackend(load_fleet(demo_fleet_path())).snapshot().vms, key=lambda v: v.name)
    app = _Host()
    async with app.run_test(size=size) as pilot:
        table = app.query_one(VmTable)
        table.show(vms)
        yield pilot, table, vms


async def test_a_migrated_vm_keeps_its_row_and_the_cursor() -> None:
    async with _shown((120, 40)) as (pilot, table, vms):
        await pilot.pause()
        table.move_cursor(row=5)
        moving = table.vm(table.current_key)
        assert moving is not None
        rebuilt: list[object] = []
        table._rebuild = lambda new: rebuilt.append(new)  # type: ignore[method-assign]
        elsewhere = "fra-hv09" if moving.host != "fra-hv09" else "fra-hv01"
        table.show([replace(v, host=elsewhere) if v is moving else v for v in vms])
        await pilot.pause()
        assert rebuilt == []  # updated in place
        now = table.vm(table.current_key)
        assert now is not None and (now.name, now.host) == (moving.name, elsewhere)
        assert table.get_row(table.current_key)[1] == elsewhere  # the host cell shows the new host
        assert table.cursor_row == 5


async def test_columns_fit_the_widest_cell_and_narrow_when_it_goes() -> None:
    async with _shown((160, 40)) as (pilot, table, vms):
        await pilot.pause()
        widest = max(len(v.name) for v in vms)
        assert table.columns["VM"].content_width == widest  # type: ignore[index]
        long_one = next(v for v in vms if len(v.name) == widest)
        table.show([replace(v, name="x") if v is long_one else v for v in vms])
        await pilot.pause()
        assert table.columns["VM"].content_width == max(len(v.name) for v in vms if v is not long_one)  # type: ignore[index]
        assert table.virtual_size.height == len(vms) + 1  # one line per row and the header


async def test_a_row_changed_off_screen_shows_its_new_cells_once_scrolled_to() -> None:
    async with _shown((120, 10)) as (pilot, table, vms):
        table.focus()
        await pilot.press("G")  # drawn once at the bottom (cached), then back to the top
        await pilot.pause()
        await pilot.press("g")
        await pilot.pause()
        last = vms[-1]
        table.show([*vms[:-1], replace(last, vcpus=97)])  # far below the 9 lines on screen
        await pilot.pause()
        assert table.get_row_at(len(vms) - 1)[3] == "97"
        await pilot.press("G")
        await pilot.pause()
        screen_text = "\n".join(strip.text for strip in table.render_lines(table.region.reset_offset))
        assert " 97 " in screen_text and last.name in screen_text


async def test_update_changes_only_the_rows_given() -> None:
    """The incremental path the VMs view takes on a refresh: the changed VM's row and a VM whose
    replica mark flipped are redrawn; every other row keeps the very cells it had."""
    async with _shown((120, 40)) as (pilot, table, vms):
        await pilot.pause()
        before = dict(table._rows)
        changed, marked = vms[3], vms[7]
        grown = replace(changed, vcpus=changed.vcpus + 8)
        assert table.update([(changed, grown)], {marked.name}, replicated={marked.name})
        await pilot.pause()
        assert table.get_row(changed.uuid)[3] == str(grown.vcpus)
        assert str(table.get_row(marked.uuid)[7]) == "ok"
        assert table.vm(changed.uuid) is grown
        redrawn = {k for k, cells in table._rows.items() if cells is not before[k]}
        assert redrawn == {changed.uuid, marked.uuid}


async def test_update_refuses_what_it_cannot_do_in_place() -> None:
    """A VM the table does not show, or a row the filter would now hide, is left to a full show."""
    async with _shown((120, 40)) as (pilot, table, vms):
        await pilot.pause()
        stranger = replace(vms[0], name="not-shown", uuid="0000")
        assert not table.update([(stranger, replace(stranger, vcpus=1))], set())
        table.set_filter(vms[2].name)
        await pilot.pause()
        assert list(table._rows) == [vms[2].uuid]
        hidden = replace(vms[5], vcpus=3)  # hidden by the filter before and after: fine in place
        assert table.update([(vms[5], hidden)], set())
        assert list(table._rows) == [vms[2].uuid] and table.vm(vms[5].uuid) is hidden
        appears = replace(hidden, host=vms[2].name)  # would now match the filter: a row comes
        assert not table.update([(hidden, appears)], set())
        assert table.vm(vms[5].uuid) is hidden  # nothing changed
