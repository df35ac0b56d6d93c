"""The first app shell on the demo datacenter, driven with Pilot."""

from __future__ import annotations

from backends.errors import HostUnreachable
from backends.models import Inventory
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from console.app import HvcApp
from widgets.host_list import HostList
from widgets.vm_table import VmTable


def demo_backend() -> SimBackend:
    return SimBackend(load_fleet(demo_fleet_path()), ManualClock())


async def test_hosts_and_vms_of_the_selected_host_are_listed() -> None:
    app = HvcApp(demo_backend(), refresh_s=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        hosts, vms = app.query_one(HostList), app.query_one(VmTable)
        assert hosts.row_count == 7
        assert hosts.current_key == "fra-hv01"
        assert vms.row_count == 7 and vms.current_key == "pg-main-01"
        await pilot.press("j", "j")
        assert hosts.current_key == "fra-hv03"
        assert app.selected_host == "fra-hv03"
        assert {str(k.value) for k in vms.rows} == {v.name for v in app.backend.snapshot().vms_on("fra-hv03")}
        await pilot.press("G")
        assert hosts.current_key == "dub-hv02"


async def test_refresh_keeps_the_cursor_on_the_same_host() -> None:
    backend = demo_backend()
    app = HvcApp(backend, refresh_s=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("j", "j", "j")
        assert app.query_one(HostList).current_key == "fra-hv04"
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.query_one(HostList).current_key == "fra-hv04"


class FailingBackend(SimBackend):
    def refresh(self) -> Inventory:
        raise HostUnreachable("fra-hv01 does not answer", hint="check libvirtd on it")


async def test_a_failed_refresh_reaches_the_screen() -> None:
    app = HvcApp(FailingBackend(load_fleet(demo_fleet_path())), refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = app.query_one("#status")
        assert "refresh failed: fra-hv01 does not answer; check libvirtd on it" in str(status.render())
        assert app.query_one(HostList).row_count == 7  # the last good snapshot stays on screen
