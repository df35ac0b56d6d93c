"""Shared fixtures for Pilot tests: the demo datacenter on a manual clock."""

from __future__ import annotations

from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from console.app import HvcApp


def demo_app(read_only: bool = False, keymap: dict[str, str] | None = None) -> HvcApp:
    backend = SimBackend(load_fleet(demo_fleet_path()), ManualClock(), read_only=read_only)
    return HvcApp(backend, refresh_s=3600, keymap=keymap)
