"""S7 and S3 verbs: device-op and device-policy (the policy authority), balloon (residency)."""

from __future__ import annotations

from typing import Any

import click

from backends.requests import BalloonRequest, DeviceOpRequest
from console.cli_ops import _backend_only, _operation_options, _run


@click.command("device-op")
@click.argument("device")
@click.argument("op", metavar="OP")
@click.option("--host", default=None, help="The host of DEVICE when its address exists on several hosts.")
@_operation_options
@click.pass_context
def device_op(ctx: click.Context, device: str, op: str, host: str | None, **opts: Any) -> None:
    """Run OP (flr, bus-reset, power-state, config-write, rom-write, link-disable) on DEVICE.

    The device policy authority permits local operations, translates system-wide ones into a
    local equivalent where it can (bus-reset → flr), and denies the rest; every decision is audited.
    """
    _run(ctx, opts, DeviceOpRequest(device, op, host))


@click.command("device-policy")
@click.argument("device")
@click.option("--host", default=None, help="The host of DEVICE when its address exists on several hosts.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_backend_only
@click.pass_context
def device_policy(ctx: click.Context, device: str, host: str | None, as_json: bool, **opts: Any) -> None:
    """Show what the policy authority decides for every operation on DEVICE."""
    import json
    from dataclasses import asdict

    from rich.table import Table

    from backends.base import find_device
    from backends.policy import load_authority
    from console.cli import merged, open_backend_from
    from console.inventory_text import wide_console

    backend = open_backend_from(merged(ctx, **opts))
    try:
        found = find_device(backend.snapshot(), device, host)
        authority = load_authority(backend.policy_dir)
    finally:
        backend.close()
    policy, rows = authority.policy_for(found), authority.table(found)
    if as_json:
        click.echo(json.dumps({"device": found.address, "host": found.host, "policy": policy.name,
                               "decisions": [{**asdict(d), "verdict": d.verdict.value} for d in rows]}, indent=1))
        return
    role = " (SR-IOV PF)" if found.vfs else " (SR-IOV VF)" if found.is_vf else ""
    table = Table(title=f"{found.address} on {found.host}{role}: policy {policy.name}", title_justify="left")
    for col in ("op", "scope", "decision", "runs", "reason"):
        table.add_column(col)
    for d in rows:
        style = {"permit": "green", "translate": "yellow"}.get(d.verdict.value, "red")
        table.add_row(d.op, d.scope, f"[{style}]{d.verdict.value}[/]", d.run or "-", d.reason)
    wide_console().print(table)


@click.command()
@click.argument("vm")
@click.option("--memory", "size", required=True, metavar="SIZE", help="The guest's new memory (e.g. 12G).")
@click.option("--host", default=None, help="The VM's host when its name exists on several hosts.")
@_operation_options
@click.pass_context
def balloon(ctx: click.Context, vm: str, size: str, host: str | None, **opts: Any) -> None:
    """Set a running VM's memory with its balloon; refused below what is pinned for DMA."""
    from backends.units import parse_size_kib

    _run(ctx, opts, BalloonRequest(vm, parse_size_kib(size), host))


COMMANDS = [device_op, device_policy, balloon]
