"""S7 and S3 from the console: a device operation with the policy's decision, and ballooning a VM."""

from __future__ import annotations

from textual.widgets import Input, OptionList, Static

from console import audit
from console.screens.input_dialog import InputScreen
from console.screens.picker import PickerScreen
from tests.console.conftest import demo_app, pick_and_confirm
from tests.text import plain
from widgets.device_tree import DeviceTree


async def test_device_op_shows_the_decisions_runs_the_translation_and_lists_it_as_recent() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        tree = app.screen.query_one(DeviceTree)
        while (node := tree.cursor_node) is None or node.data is None or node.data.address != "0000:18:01.0":
            await pilot.press("j")
        policy = plain(app.screen.query_one("#device-policy", Static))
        assert "policy network · SR-IOV VF" in policy and "→ flr" in policy and "none yet" in policy
        await pilot.press("O")
        assert isinstance(app.screen, PickerScreen)
        options = app.screen.query_one(OptionList)
        by_id = {options.get_option_at_index(i).id: options.get_option_at_index(i) for i in range(options.option_count)}
        assert by_id["rom-write"].disabled and "option ROM" in str(by_id["rom-write"].prompt)
        assert not by_id["bus-reset"].disabled and "runs flr instead" in str(by_id["bus-reset"].prompt)
        await pick_and_confirm(app, pilot, "bus-reset")
        assert app.backend.device_state[("fra-hv01", "0000:18:01.0")].resets == 1  # type: ignore[attr-defined]
        entries = [e for e in audit.read() if e["kind"] == "device-op"]
        assert len(entries) == 1 and "bus-reset translated to flr" in entries[0]["what"]
        app.screen._show_policy()  # type: ignore[attr-defined]
        assert "bus-reset translated to flr" in plain(app.screen.query_one("#device-policy", Static))


async def test_balloon_from_the_vms_view_is_refused_for_a_vfio_guest_and_audited() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash", *"erp-db-01", "enter")
        assert "pinned 160G (all of it" in plain(app.screen.query_one("#detail", Static))
        await pilot.press("B")
        assert isinstance(app.screen, InputScreen)
        app.screen.query_one(Input).value = "100G"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert "all its memory is pinned" in plain(app.screen.query_one("#status", Static))
        assert not app.jobs.all()
    assert [e["outcome"] for e in audit.read() if e["kind"] == "balloon"] == ["refused"]
