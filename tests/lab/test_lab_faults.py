"""Faults on the two-host lab, seen through the console: host B's daemon stops while the console
refreshes; the fleet view shows B lost, A keeps refreshing, the keys keep answering, and B comes
back on its own after its daemon restarts. Host B is always restored (finally).

(A migration A→B whose destination daemon stops mid-way is in test_lab_operations.py.)
Run under the lab lock: flock /tmp/hvc-lab.lock .venv/bin/pytest -q tests/lab/test_lab_faults.py
"""

from __future__ import annotations

import asyncio
import time

from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.lab import LabStatus, lab_up, stop_host_b
from backends.models import HostState
from console.app import HvcApp
from console.screens.fleet import FleetScreen
from console.screens.vms import VmsScreen
from tests.faults.figures import FIGURES


async def wait_state(app: HvcApp, name: str, state: HostState, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        host = app.inventory.host(name) if app.inventory else None
        if host is not None and host.state is state:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} did not become {state.value} within {timeout:.0f}s")


async def test_console_keeps_working_while_host_b_is_down_and_b_comes_back(lab: LabStatus) -> None:
    backend = LibvirtBackend(lab.uris, poll_s=1.0)
    names = {h.uri: h.name for h in backend.snapshot().hosts}
    a_name, b_name = names[lab.uris[0]], names[lab.uris[1]]
    app = HvcApp(backend, refresh_s=0.5)
    FIGURES.faults_injected += 1
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_state(app, b_name, HostState.CONNECTED, 10)
            await asyncio.to_thread(stop_host_b)
            lost_after = await wait_state(app, b_name, HostState.LOST, 30)
            a_generation = backend.hosts[0].view.generation
            await pilot.press("2")
            assert isinstance(app.screen, VmsScreen)
            await pilot.press("1")
            assert isinstance(app.screen, FleetScreen)
            await asyncio.sleep(2.5)
            assert backend.hosts[0].view.generation > a_generation, "host A stopped refreshing"
            assert app.inventory is not None and app.inventory.host(a_name).state is HostState.CONNECTED  # type: ignore[union-attr]
            await pilot.pause()
            assert ">lost<" in app.export_screenshot().replace("&#160;", " ")  # the host list says so
            await asyncio.to_thread(lab_up)
            back_after = await wait_state(app, b_name, HostState.CONNECTED, 45)
            assert app.is_running
        FIGURES.faults_survived += 1
        FIGURES.notes.append(f"lab: host B seen lost {lost_after:.1f}s after its daemon stopped, "
                             f"connected again {back_after:.1f}s after it restarted")
    finally:
        lab_up()
        backend.close()
