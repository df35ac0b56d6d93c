"""The storage-services view: the table, jumping to a service's VM, moving a service from a picker."""

from __future__ import annotations

from textual.widgets import OptionList, Static

from console.screens.picker import PickerScreen
from console.screens.services import ServicesScreen, ServiceTable
from console.screens.vms import VmsScreen
from tests.console.conftest import demo_app, pick_and_confirm
from tests.text import plain
from widgets.device_tree import DeviceTree
from widgets.vm_table import VmTable


async def test_the_view_lists_services_and_enter_opens_the_vm() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        assert isinstance(app.screen, ServicesScreen)
        table = app.screen.query_one(ServiceTable)
        assert [table.get_row_at(i)[0] for i in range(table.row_count)] == ["iscsi-tier1", "nvme-pool-a"]
        assert [plain_cell(c) for c in table.get_row_at(1)] == [
            "nvme-pool-a", "02:5e:10:00:00:02", "fra-hv01", "18:01.7", "running", "storage-svc-02", "nvme-tcp"]
        detail = plain(app.screen.query_one("#service-detail", Static))
        assert "✓ dub-hv01  VF 0000:18:01.0 takes it" in detail and "✗ fra-hv03  has no free SR-IOV VF" in detail
        await pilot.press("j", "enter")
        await pilot.pause()
        assert isinstance(app.screen, VmsScreen)
        vms = app.screen.query_one(VmTable)
        vm = vms.vm(vms.current_key)
        assert vm is not None and (vm.name, vm.host) == ("storage-svc-02", "fra-hv01")
        await pilot.pause(0.1)
        assert vms.scroll_y <= vms.cursor_row < vms.scroll_y + vms.size.height - 1  # scrolled into view (header row)


async def test_move_a_service_from_the_picker_and_see_the_vf_in_the_device_tree() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6", "M")
        assert isinstance(app.screen, PickerScreen)
        options = app.screen.query_one(OptionList)
        prompts = {options.get_option_at_index(i).id: options.get_option_at_index(i)
                   for i in range(options.option_count)}
        assert prompts["fra-hv03"].disabled  # refused: no free VF, reason shown
        assert "no free SR-IOV VF" in str(prompts["fra-hv03"].prompt)
        assert "fra-hv02" not in prompts  # its own host
        await pick_and_confirm(app, pilot, "dub-hv01", timeout=20)
        svc = next(s for s in app.backend.snapshot().services if s.name == "iscsi-tier1")
        assert (svc.host, svc.vf, svc.identifier) == ("dub-hv01", "0000:18:01.0", "02:5e:10:00:00:01")
        await pilot.press("3")
        tree = app.screen.query_one(DeviceTree)
        node = tree.node_for("dub-hv01", "0000:18:01.0")
        assert node is not None and "⇄ 02:5e:10:00:00:01 iscsi-tier1" in str(node.label)
        old = tree.node_for("fra-hv02", "0000:18:01.3")
        assert old is not None and "02:5e" not in str(old.label)


async def test_read_only_refuses_the_move_at_the_key() -> None:
    app = demo_app(read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6", "M")
        await pilot.pause()
        assert isinstance(app.screen, ServicesScreen)
        assert "read-only" in plain(app.screen.query_one("#status", Static))
        assert not app.jobs.all()


def plain_cell(cell: object) -> str:
    return getattr(cell, "plain", str(cell))
