"""Shared fixtures for Pilot tests: the demo datacenter on a manual clock."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import OptionList

from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from console.app import HvcApp
from console.screens.dialogs import ConfirmScreen


def demo_app(read_only: bool = False, keymap: dict[str, str] | None = None) -> HvcApp:
    backend = SimBackend(load_fleet(demo_fleet_path()), ManualClock(), read_only=read_only)
    return HvcApp(backend, refresh_s=3600, keymap=keymap)


async def highlight(app: HvcApp, pilot: Pilot[Any], option_id: str) -> None:
    """Move the open picker's highlight to the option ``option_id``."""
    options = app.screen.query_one(OptionList)
    while options.get_option_at_index(options.highlighted or 0).id != option_id:
        await pilot.press("j")


async def pick_and_confirm(app: HvcApp, pilot: Pilot[Any], option_id: str, timeout: float = 10) -> Any:
    """Choose ``option_id`` in the open picker, answer the confirmation yes, and wait for the one job."""
    await highlight(app, pilot, option_id)
    await pilot.press("enter")
    assert isinstance(app.screen, ConfirmScreen)
    await pilot.press("y")
    (record,) = app.jobs.all()
    assert record.done.wait(timeout)
    await pilot.pause(0.3)
    return record
