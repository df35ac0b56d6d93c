"""The console on the demo datacenter, driven by keys as an operator would."""

from __future__ import annotations

from textual.command import CommandPalette
from textual.widgets import Input, Static

from backends.errors import HostUnreachable
from backends.models import Inventory, Vm, VmState
from backends.sim.backend import SimBackend
from backends.sim.fleet import demo_fleet_path, load_fleet
from console.app import HvcApp
from console.screens.dialogs import ConfirmScreen, HelpScreen
from console.screens.host import HostScreen
from console.screens.vms import VmsScreen
from tests.console.conftest import demo_app
from tests.text import plain
from widgets.device_tree import DeviceTree
from widgets.host_list import HostList
from widgets.numa_map import NumaMap
from widgets.vm_table import VmTable


async def test_fleet_lists_hosts_and_alerts_and_enter_opens_the_numa_map() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        hosts = app.screen.query_one(HostList)
        assert hosts.row_count == 7 and hosts.current_key == "fra-hv01"
        alerts = plain(app.screen.query_one("#alerts", Static))
        assert "fra-hv04 cell 1 is overcommitted by 8.0G" in alerts
        assert "web-02/vda replica lag 940s exceeds its RPO of 300s" in alerts
        await pilot.press("j", "j", "enter")
        assert isinstance(app.screen, HostScreen) and app.screen.host_name == "fra-hv03"
        numa = app.screen.query_one(NumaMap)
        assert numa.is_mounted
        await pilot.press("escape")
        assert app.screen.query_one(HostList).current_key == "fra-hv03"


async def test_number_keys_switch_views_and_keep_each_views_place() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        assert isinstance(app.screen, VmsScreen)
        await pilot.press("j", "j", "j")
        place = app.screen.query_one(VmTable).current_key
        await pilot.press("3")
        assert app.screen.query_one(DeviceTree).is_mounted
        await pilot.press("4", "2")
        assert app.screen.query_one(VmTable).current_key == place


async def test_slash_filters_the_vm_list_and_escape_clears_it() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"batch")
        table = app.screen.query_one(VmTable)
        assert table.row_count == 4 and all(_place(table.vm(str(k.value))).startswith("batch-") for k in table.rows)
        await pilot.press("enter")
        assert app.focused is table and table.row_count == 4  # the filter stays
        await pilot.press("slash", "escape")
        assert table.row_count == len(app.backend.snapshot().vms) == 30


async def test_sort_detail_and_vnuma_placement() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "o", "o", "o", "o")  # name → host → state → vcpus → memory
        table = app.screen.query_one(VmTable)
        order = [_place(table.vm(str(row.key.value))) for row in table.ordered_rows]  # as shown
        assert order[:2] == ["ml-train-01@fra-gpu01", "erp-db-01@fra-hv04"]  # the biggest VMs first
        assert _place(table.vm(table.current_key)) == "analytics-01@fra-hv02"  # the cursor stays on the VM it was on
        await pilot.press("g")
        vm = app.screen.selected()  # type: ignore[attr-defined]
        assert vm is not None and vm.name == "ml-train-01"


async def test_question_mark_lists_the_keys_of_the_view() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "question_mark")
        assert isinstance(app.screen, HelpScreen) and app.screen.scope == "vms"
        hint = app.screen.query_one(".hint", Static)
        assert str(hint.render()).endswith("under [keys]")  # the section's name, not markup
        await pilot.press("escape")
        assert isinstance(app.screen, VmsScreen)


async def test_colon_palette_runs_actions_by_name() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"replication")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.current_mode == "replication"


async def test_start_runs_at_once_and_shutdown_asks_first() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash", *"cache-01", "enter", "S")
        await _jobs_done(app, pilot)
        assert app.backend.snapshot().vm("cache-01").state is VmState.RUNNING  # type: ignore[union-attr]
        await pilot.press("slash", "escape", "slash", *"web-01", "enter", "D")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert app.backend.snapshot().vm("web-01").state is VmState.RUNNING  # type: ignore[union-attr]
        await pilot.press("D")
        await pilot.press("y")
        await _jobs_done(app, pilot)
        assert app.backend.snapshot().vm("web-01").state is VmState.SHUTOFF  # type: ignore[union-attr]
        assert "done" in plain(app.screen.query_one("#status", Static))


async def test_refusals_reach_the_status_line() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash", *"cache-01", "enter", "P")
        assert "cannot pause cache-01: it is shutoff" in plain(app.screen.query_one("#status", Static))
    read_only = demo_app(read_only=True)
    async with read_only.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "S")
        assert "read-only" in plain(read_only.screen.query_one("#status", Static))


async def test_keys_can_be_remapped_and_unknown_ids_are_reported() -> None:
    app = demo_app(keymap={"vms": "v", "warp_drive": "w"})
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("v")
        assert isinstance(app.screen, VmsScreen)
        assert app.unknown_keys == ["warp_drive"]


class FailingBackend(SimBackend):
    def refresh(self) -> Inventory:
        raise HostUnreachable("fra-hv01 does not answer", hint="check libvirtd on it")


async def test_a_failed_refresh_reaches_the_screen_and_the_last_snapshot_stays() -> None:
    app = HvcApp(FailingBackend(load_fleet(demo_fleet_path())), refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = plain(app.screen.query_one("#status", Static))
        assert "refresh failed: fra-hv01 does not answer; check libvirtd on it" in status
        assert app.screen.query_one(HostList).row_count == 7


async def _jobs_done(app: HvcApp, pilot) -> None:  # type: ignore[no-untyped-def]
    for record in app.jobs.all():
        assert record.done.wait(5)
    await pilot.pause(0.2)
    await app.workers.wait_for_complete()
    await pilot.pause()


def _place(vm: Vm | None) -> str:
    return f"{vm.name}@{vm.host}" if vm else "-"


async def test_the_status_line_and_notices_show_names_and_errors_as_they_are() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        app._status("db[/] is gone from fra-hv01 [Errno 2]", error=True)  # not markup: no MarkupError
        await pilot.pause()
        status = app.screen.query_one("#status", Static)
        assert str(status.render()) == "db[/] is gone from fra-hv01 [Errno 2]"
        assert [n.message for n in app._notifications] == ["db[/] is gone from fra-hv01 [Errno 2]"]


async def test_tab_moves_to_the_detail_pane_whose_arrow_keys_scroll_a_detail_longer_than_it() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        table = app.screen.query_one(VmTable)
        erp = next(vm.uuid for vm in app.inventory.vms if vm.name == "erp-db-01")  # its detail is 11 lines
        table.move_cursor(row=table._keys.index(erp))
        await pilot.pause()
        pane = app.screen.query_one("#detail-pane")
        assert pane.max_scroll_y > 0 and pane.scroll_y == 0
        await pilot.press("tab")
        assert app.focused is pane
        await pilot.press("down", "down")
        assert pane.scroll_y == pane.max_scroll_y  # the last line, hidden until now, shows
        await pilot.press("tab")
        assert app.focused is table
