"""The console on the two lab hosts: every view shows real data; lifecycle acts on real guests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from textual.widgets import Static

from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.lab import LabStatus
from backends.models import VmState
from console.app import HvcApp
from console.screens.host import HostScreen
from tests.text import plain
from widgets.device_tree import DeviceTree
from widgets.host_list import HostList
from widgets.vm_table import VmTable


@pytest.fixture
async def app(lab: LabStatus) -> AsyncIterator[HvcApp]:
    backend = LibvirtBackend(lab.uris, poll_s=2)
    yield HvcApp(backend, refresh_s=3600)
    backend.close()


async def test_every_view_shows_the_lab(app: HvcApp, lab: LabStatus) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        hosts = app.screen.query_one(HostList)
        assert hosts.row_count == 2
        a_name = next(h.name for h in app.backend.snapshot().hosts if h.uri == lab.uris[0])
        while hosts.current_key != a_name:
            await pilot.press("j")
        await pilot.press("enter")
        assert isinstance(app.screen, HostScreen)
        numa_text = app.screen.query_one("#numa").render()
        assert numa_text is not None
        await pilot.press("escape", "2")
        table = app.screen.query_one(VmTable)
        keys = {vm.name for k in table.rows if (vm := table.vm(str(k.value))) is not None}
        assert {"hvc-lab-numa", "hvc-lab-idle", "hvc-lab-b1"} <= keys
        await pilot.press("slash", *"hvc-lab-numa", "enter")
        detail = plain(app.screen.query_one("#detail", Static))
        assert "hvc-lab-numa" in detail
        await pilot.press("3")
        tree = app.screen.query_one(DeviceTree)
        assert len(tree.root.children) == 2  # both hosts report PCI devices
        await pilot.press("4")
        assert app.current_mode == "replication"


async def test_start_and_force_off_a_real_guest_from_the_keyboard(app: HvcApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash", *"hvc-lab-idle", "enter", "S")
        await _settled(app, pilot)
        assert _state(app, "hvc-lab-idle") is VmState.RUNNING
        await pilot.press("F", "y")
        await _settled(app, pilot)
        assert _state(app, "hvc-lab-idle") is VmState.SHUTOFF
        assert "done" in plain(app.screen.query_one("#status", Static))


def _state(app: HvcApp, name: str) -> VmState | None:
    vm = next((v for v in app.backend.refresh().vms if v.name == name), None)
    return vm.state if vm else None


async def _settled(app: HvcApp, pilot) -> None:  # type: ignore[no-untyped-def]
    for record in app.jobs.all():
        assert record.done.wait(60), record.job.description
        assert record.result is not None
    await pilot.pause(0.2)
    await app.workers.wait_for_complete()
