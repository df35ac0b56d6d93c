"""`hvc lab up | status | down`: print what the lab module does, one line per step."""

from __future__ import annotations

import sys

import click

from backends.libvirt.lab import LabStatus, lab_down, lab_status, lab_up


def run(action: str) -> None:
    def progress(step: str) -> None:
        click.echo(f"lab: {step}", err=True)

    if action == "up":
        status = lab_up(progress)
    elif action == "down":
        status = lab_down(progress)
    else:
        status = lab_status()
    _print(status, action)
    if action != "down" and not status.up:
        sys.exit(1)


def _print(status: LabStatus, action: str) -> None:
    if action == "down":
        click.echo("lab is down" if not status.up else "lab is still partly up")
    else:
        click.echo(f"lab is {'up' if status.up else 'not up'} ({status.virt_type} guests)")
    for label, uri in zip(("A", "B"), status.uris, strict=False):
        click.echo(f"host {label}: {uri}")
    for uri, name, state in status.guests:
        click.echo(f"  {name:<16} {state:<9} on {uri}")
    for problem in status.problems:
        click.echo(f"problem: {problem}")
    if status.up:
        connect = " ".join(f"-c '{u}'" for u in status.uris)
        click.echo(f"open the console: hvc {connect}")
