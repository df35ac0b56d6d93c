"""The console under faults: an internal error shows a panel and the app keeps running; a slow
host does not slow the keys; read-only refuses every mutating key."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import Static
from textual.widgets._toast import Toast

from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.testfleet import fleet_uri, write_test_fleet
from console import audit
from console.actions import ACTIONS
from console.app import HvcApp
from console.log import log_path
from console.screens.fleet import FleetScreen
from console.screens.vms import VmsScreen
from tests.console.conftest import demo_app
from tests.faults.faulty import Faults
from tests.faults.figures import Figures
from tests.text import plain


def shown(app: HvcApp) -> str:
    """The status line and every toast on screen, as plain text."""
    toasts = " | ".join(str(t.render()) for t in app.screen.query(Toast))
    return plain(app.screen.query_one("#status", Static)) + " | " + toasts


def assert_panel(app: HvcApp, where: str) -> None:
    text = shown(app)
    assert f"internal error in {where}" in text and str(log_path()) in text, text
    assert "Traceback" not in text
    assert "Traceback" in log_path().read_text()


async def test_an_exception_in_an_action_shows_a_panel_and_the_app_keeps_running(
        monkeypatch: pytest.MonkeyPatch, figures: Figures) -> None:
    def broken(_self: VmsScreen) -> None:
        raise RuntimeError("injected bug in vm_start")

    monkeypatch.setattr(VmsScreen, "action_vm_start", broken)
    app = demo_app()
    with figures.fault("an exception in an action handler"):
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.press("2", "S")
            await pilot.pause()
            assert app.is_running
            assert_panel(app, "action 'vm_start'")
            assert "RuntimeError: injected bug in vm_start" in shown(app)
            await pilot.press("1")  # still answers keys
            assert isinstance(app.screen, FleetScreen)


async def test_an_exception_in_a_refresh_worker_or_a_view_refresh_keeps_the_app_running(
        monkeypatch: pytest.MonkeyPatch, figures: Figures) -> None:
    app = demo_app()
    with figures.fault("an exception in the refresh worker and in a view's refresh"):
        async with app.run_test(size=(120, 40)) as pilot:
            real_refresh = app.backend.refresh
            monkeypatch.setattr(app.backend, "refresh", lambda: 1 / 0)
            await pilot.press("r")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.is_running
            assert_panel(app, "refresh")
            monkeypatch.setattr(app.backend, "refresh", real_refresh)

            def broken_show(_self: FleetScreen, _inv: object) -> None:
                raise KeyError("injected bug in the fleet view")

            monkeypatch.setattr(FleetScreen, "show", broken_show)
            await pilot.press("r")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.is_running
            assert_panel(app, "the fleet view's refresh")
            await pilot.press("2")
            assert isinstance(app.screen, VmsScreen)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_the_error_panel_fits_the_screen(monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    monkeypatch.setattr(VmsScreen, "action_vm_start", lambda _s: 1 / 0)
    app = demo_app()
    async with app.run_test(size=size, notifications=True) as pilot:
        await pilot.press("2", "S")
        await pilot.pause(0.2)
        (toast,) = app.screen.query(Toast)
        assert toast.region.right <= size[0] and toast.region.bottom <= size[1]
        assert "internal error in action 'vm_start'" in str(toast.render())


async def test_a_slow_host_does_not_slow_the_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  figures: Figures) -> None:
    faults = Faults().install(monkeypatch)
    slow = fleet_uri(write_test_fleet(tmp_path / "fleet.xml", 6))
    backend = LibvirtBackend(["test:///default", slow], poll_s=3600)
    app = HvcApp(backend, refresh_s=0.2)
    try:
        with figures.fault("a host answering in 3 s per call while keys are pressed"):
            async with app.run_test(size=(120, 40)) as pilot:
                await pilot.press("2", "3", "1")  # every view built once, before the host turns slow
                await pilot.pause()
                faults.make_slow(slow, 3.0)
                await pilot.press("r")  # a refresh is under way (3 s per call)
                worst = 0.0
                for key in ("2", "1", "3", "1", "2", "1"):
                    started = time.monotonic()
                    await pilot.press(key)
                    await pilot.pause()
                    worst = max(worst, time.monotonic() - started)
                assert isinstance(app.screen, FleetScreen)
                # a key that waited for one host call would take 3 s or more
                assert worst < 2.0, f"a key took {worst:.2f}s to show while a host was slow"
                faults.slow.clear()
        figures.notes.append(f"key→frame with a host answering in 3 s per call: worst {worst * 1000:.0f} ms")
    finally:
        faults.slow.clear()
        backend.close()


MUTATING = [a for a in ACTIONS if a.mutating]


async def test_read_only_refuses_every_mutating_key_in_the_console() -> None:
    app = demo_app(read_only=True)
    views = {"vms": "2", "devices": "3", "replication": "4", "jobs": "5", "services": "6"}
    async with app.run_test(size=(120, 40)) as pilot:
        for action in MUTATING:
            if action.scope == "host":
                await pilot.press("1", "enter")
            else:
                await pilot.press(views[action.scope])
            await pilot.pause()
            key = action.keys.split(",")[0]
            await pilot.press(key)
            await pilot.pause()
            assert hasattr(app.screen, "set_status"), f"{action.id} opened {app.screen} instead of refusing"
            assert not app.jobs.all(), f"{action.id} started a job in read-only mode"
            assert "read-only" in shown(app), f"{action.id}: {shown(app)}"
            await pilot.press("escape")
    refused = [e for e in audit.read() if e["outcome"] == "refused"]
    assert [e["kind"] for e in refused] == [a.id for a in MUTATING]
    assert all("read-only" in e["reason"] for e in refused)
    assert not [e for e in audit.read() if e["outcome"] != "refused"]
