"""S1 from the console: detach a device into an image (D), see it backed by an image, restore it (A)."""

from __future__ import annotations

from textual.widgets import OptionList, Static

from console.screens.dialogs import ConfirmScreen
from console.screens.picker import PickerScreen
from tests.console.conftest import demo_app, highlight
from tests.text import plain
from widgets.device_tree import DeviceTree
from widgets.image_list import ImageList

GPU = "0000:17:00.0"


async def test_detach_then_attach_from_the_devices_view() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        images = app.screen.query_one(ImageList)
        assert "hpc-solver-01" in plain(images) and "GA100" in plain(images)  # the demo's image
        tree = app.screen.query_one(DeviceTree)
        node = tree.node_for("fra-gpu01", GPU)
        assert node is not None
        tree.move_cursor(node)
        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        (record,) = app.jobs.all()
        assert record.done.wait(10)
        await pilot.pause(0.3)
        vm = app.backend.snapshot().vm("ml-train-01")
        assert vm is not None and GPU not in vm.devices and len(vm.device_images) == 1
        assert "ml-train-01" in plain(app.screen.query_one(ImageList))
        assert "2 backed by image" in plain(app.screen.query_one("#device-legend", Static))

        await pilot.press("A")
        assert isinstance(app.screen, PickerScreen)
        options = app.screen.query_one(OptionList)
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        disabled = [options.get_option_at_index(i).id for i in range(options.option_count)
                    if options.get_option_at_index(i).disabled]
        assert "hpc-solver-01|fra-hv03|-" in disabled  # no A100 on fra-hv03: shown, with the reason
        assert {"ml-train-01|fra-gpu01|0000:17:00.0", "ml-train-01|fra-gpu01|0000:e3:00.0"} <= set(ids)
        await highlight(app, pilot, "ml-train-01|fra-gpu01|0000:e3:00.0")
        await pilot.press("enter")
        records = app.jobs.all()
        assert len(records) == 2 and records[-1].done.wait(10)
        await pilot.pause(0.3)
        vm = app.backend.snapshot().vm("ml-train-01")
        assert vm is not None and "0000:e3:00.0" in vm.devices and vm.device_images == ()
        assert "ml-train-01" not in plain(app.screen.query_one(ImageList))


async def test_detach_needs_a_device_assigned_to_a_vm() -> None:
    app = demo_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "D")
        assert "pick a device assigned to a VM first" in plain(app.screen.query_one("#status", Static))
        assert not app.jobs.all()


async def test_the_vm_detail_lists_its_images() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash", *"hpc-solver", "enter")
        await pilot.pause(0.2)
        detail = plain(app.screen.query_one("VmDetail"))  # type: ignore[arg-type]
        assert "backed by image of NVIDIA Corporation GA100" in detail and "from fra-gpu01 0000:e3:00.0" in detail
