"""The one line a CLI command prints for each host it could not reach (no Textual)."""

from __future__ import annotations

import click

from backends.models import HostState, Inventory
from backends.uri import redact


def report_lost(inv: Inventory) -> bool:
    """On stderr, ``hvc: host NAME is lost: WHY`` for each lost host (any password redacted);
    True when there was one, so the command exits 1."""
    lost = [h for h in inv.hosts if h.state is HostState.LOST]
    for host in lost:
        click.echo(redact(f"hvc: host {host.name} is lost: {host.error}"), err=True)
    return bool(lost)
