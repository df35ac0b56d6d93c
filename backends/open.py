"""Choose and open a backend from command-line style options."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from backends import gcpause
from backends.errors import BadInput

if TYPE_CHECKING:  # not at run time: a libvirt connection starts opening before the model is imported
    from backends.base import Backend
    from backends.sim.clock import Clock


def open_backend(
    connect: tuple[str, ...] = (),
    *,
    fleet: Path | None = None,
    scale: str | None = None,
    demo: bool = False,
    read_only: bool = False,
    clock: Clock | None = None,
) -> Backend:
    """libvirt hosts when URIs are given, else the simulated datacenter (demo by default)."""
    simulated = [name for name, on in (("--demo", demo), ("--fleet", fleet), ("--scale", scale)) if on]
    if len(simulated) > 1:
        raise BadInput(f"{' and '.join(simulated)} both pick a simulated fleet", hint="give one")
    if connect and simulated:
        raise BadInput(
            f"-c/--connect and {simulated[0]} pick different backends",
            hint="use libvirt hosts (-c) or the simulator, not both",
        )
    if connect:
        from backends.libvirt.connect import open_ahead

        opened = open_ahead(connect, read_only)
        from backends.libvirt.backend import LibvirtBackend

        return LibvirtBackend(connect, read_only=read_only, opened=opened)
    from backends.sim.backend import SimBackend
    from backends.sim.fleet import demo_fleet_path, load_fleet

    with _long_lived():
        if scale:
            from backends.sim.scale import generate_fleet, parse_scale

            spec = generate_fleet(*parse_scale(scale))
        else:
            spec = load_fleet(fleet or demo_fleet_path())
        return SimBackend(spec, clock, read_only=read_only)


@contextmanager
def _long_lived() -> Iterator[None]:
    """Building a fleet allocates a few hundred thousand objects that all stay alive as long as the
    backend: collecting while they are made finds nothing (10,000 VMs: ~0.15 s), and so would every
    later full collection scanning them again. So no collection runs while they are made, and they
    are then frozen out of the collector's generations (before it is enabled again: else its
    first pass scans all of them at once)."""
    with gcpause.paused():
        yield
        gc.freeze()
