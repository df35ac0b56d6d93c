"""The VM detail fills its pane, and asks for a layout pass only when its height changes: moving
the cursor between VMs whose details fit the pane redraws the detail alone."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.containers import Vertical

from backends.models import Vm
from backends.sim.backend import SimBackend
from backends.sim.fleet import demo_fleet_path, load_fleet
from widgets.vm_detail import FITS_LISTED, VmDetail, render_vm


class _Host(App[None]):
    CSS = "#pane { height: 10; overflow-y: auto; }"

    def compose(self) -> ComposeResult:
        with Vertical(id="pane"):
            yield VmDetail()


def _vms() -> list[Vm]:
    return sorted(SimBackend(load_fleet(demo_fleet_path())).snapshot().vms, key=lambda v: v.name)


async def test_a_detail_that_fits_fills_the_pane_without_a_layout_pass() -> None:
    first, second = _vms()[:2]
    app = _Host()
    async with app.run_test(size=(100, 30)) as pilot:
        detail, pane = app.query_one(VmDetail), app.query_one("#pane", Vertical)
        detail.show(first, None, (), (), ())
        await pilot.pause()
        assert detail.size.height == pane.scrollable_content_region.height == 10
        detail.show(second, None, (), (), ())
        assert not detail._layout_required  # the content changed, its height did not
        await pilot.pause()
        assert detail.size.height == 10 and not pane.show_vertical_scrollbar


async def test_a_taller_detail_lays_out_and_scrolls_and_the_pane_is_filled_again_after() -> None:
    vm = _vms()[0]
    app = _Host()
    async with app.run_test(size=(100, 30)) as pilot:
        detail, pane = app.query_one(VmDetail), app.query_one("#pane", Vertical)
        detail.show(vm, None, (), (), ())
        await pilot.pause()
        detail.show(vm, None, (), (), [f"flag {i}" for i in range(12)])
        assert detail._layout_required
        await pilot.pause()
        assert detail.size.height > 10 and pane.show_vertical_scrollbar
        detail.show(vm, None, (), (), ())
        assert detail._layout_required
        await pilot.pause()
        assert detail.size.height == 10 and not pane.show_vertical_scrollbar


async def test_the_pane_is_filled_again_after_a_resize() -> None:
    app = _Host()
    app.CSS = "#pane { height: 40%; overflow-y: auto; }"
    async with app.run_test(size=(100, 30)) as pilot:
        detail, pane = app.query_one(VmDetail), app.query_one("#pane", Vertical)
        detail.show(_vms()[0], None, (), (), ())
        await pilot.pause()
        assert detail.size.height == pane.scrollable_content_region.height == 12
        await pilot.resize_terminal(100, 20)
        await pilot.pause()
        await pilot.pause()
        assert detail.size.height == pane.scrollable_content_region.height == 8


def test_a_large_site_is_one_line_led_by_how_many_fit() -> None:
    vm = _vms()[0]
    fits = [(f"h{i:03}", None if i % 5 else "no cell with room") for i in range(50)]
    group = render_vm(vm, None, (), (), (), fits)
    line = next(p for p in group.renderables if str(p).startswith("fits on"))
    assert str(line).startswith("fits on  40 of 50 hosts: h000 ✗  h001 ✓") and line.no_wrap
    small = render_vm(vm, None, (), (), (), fits[:FITS_LISTED])
    line = next(p for p in small.renderables if str(p).startswith("fits on"))
    assert str(line).startswith("fits on  h000 ✗  h001 ✓") and not line.no_wrap


def test_warnings_come_right_after_the_facts_where_a_long_detail_does_not_hide_them() -> None:
    vm = _vms()[0]
    parts = render_vm(vm, None, (), (), ["cell 1 is overcommitted"], [("h1", "no room")]).renderables
    assert str(parts[2]) == "⚠ cell 1 is overcommitted"
