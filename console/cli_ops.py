"""Operation verbs: migrate, handoff, rebalance, and VM lifecycle."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from backends.requests import (
    HandoffRequest,
    LifecycleAction,
    LifecycleRequest,
    MigrateRequest,
    RebalanceRequest,
    Request,
)


def _operation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    from console.cli import backend_options

    for option in reversed([
        click.option("--json", "as_json", is_flag=True, help="One JSON object per progress event (NDJSON)."),
        click.option("--speed", type=click.FloatRange(min=0.001), default=None,
                     help="Simulator only: run the clock this many times faster."),
    ]):
        func = option(func)
    return backend_options(func)


def _run(ctx: click.Context, opts: dict[str, Any], request: Request, question: str | None = None) -> None:
    from console.cli import merged, open_backend_from
    from console.operate import run_operation

    options = merged(ctx, **opts)
    backend = open_backend_from(options, live=True)
    try:
        code = run_operation(backend, request, as_json=options.get("as_json", False), question=question,
                             yes=bool(options.get("yes")))
    finally:
        backend.close()
    sys.exit(code)


@click.command()
@click.argument("vm")
@click.option("--to", "to_host", required=True, metavar="HOST", help="Destination host name or URI.")
@click.option("--bandwidth", type=click.IntRange(min=1), default=None, metavar="MiB/s", help="Cap the copy rate.")
@click.option("--auto-converge", is_flag=True, help="Throttle the guest's vCPUs until the copy converges.")
@click.option("--postcopy", is_flag=True, help="Switch to post-copy after two pre-copy rounds.")
@_operation_options
@click.pass_context
def migrate(ctx: click.Context, vm: str, to_host: str, bandwidth: int | None, auto_converge: bool,
            postcopy: bool, **opts: Any) -> None:
    """Live-migrate VM to another host, streaming pre-copy progress."""
    _run(ctx, opts, MigrateRequest(vm, to_host, bandwidth, auto_converge, postcopy))


@click.command()
@click.argument("device")
@click.option("--to", "target", required=True, metavar="VM|host", help="The VM to receive it, or 'host'.")
@click.option("--host", default=None, help="The host of DEVICE when its address exists on several hosts.")
@click.option("--yes", is_flag=True, help="Confirm without a terminal.")
@_operation_options
@click.pass_context
def handoff(ctx: click.Context, device: str, target: str, host: str | None, yes: bool, **opts: Any) -> None:
    """Hand DEVICE to another VM or the host: drain in flight, hold, reassign, replay."""
    _run(ctx, {**opts, "yes": yes}, HandoffRequest(device, target, host), question=f"Hand {device} to {target}?")


@click.command()
@click.argument("vm")
@click.option("--vnode", type=click.IntRange(min=0), required=True, help="The VM's vNUMA cell.")
@click.option("--to-cell", type=click.IntRange(min=0), default=None, help="Move its memory to this host cell.")
@click.option("--memory", "size", default=None, metavar="SIZE", help="Grow or shrink it to SIZE (e.g. 24G).")
@_operation_options
@click.pass_context
def rebalance(ctx: click.Context, vm: str, vnode: int, to_cell: int | None, size: str | None, **opts: Any) -> None:
    """Move or resize the memory of one vNUMA cell, page by page."""
    from backends.errors import BadInput
    from backends.units import parse_size_kib

    if (to_cell is None) == (size is None):
        raise BadInput("give exactly one of --to-cell CELL or --memory SIZE")
    _run(ctx, opts, RebalanceRequest(vm, vnode, to_cell, parse_size_kib(size) if size else None))


def _lifecycle(action: LifecycleAction) -> click.Command:
    @click.argument("vm")
    @click.option("--host", default=None, help="The VM's host when its name exists on several hosts.")
    @click.option("--yes", is_flag=True, help="Confirm without a terminal.")
    @_operation_options
    @click.pass_context
    def command(ctx: click.Context, vm: str, host: str | None, yes: bool, **opts: Any) -> None:
        question = f"{action.value.capitalize()} {vm}?" if action.destructive else None
        _run(ctx, {**opts, "yes": yes}, LifecycleRequest(vm, action, host), question=question)

    command.__doc__ = f"{action.value.capitalize()} a VM."
    return click.command(action.value)(command)


COMMANDS = [migrate, handoff, rebalance, *(_lifecycle(a) for a in LifecycleAction)]
