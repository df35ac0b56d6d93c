"""Operation verbs: migrate, handoff, rebalance, and VM lifecycle."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from backends.requests import (
    FailoverRequest,
    HandoffRequest,
    LifecycleAction,
    LifecycleRequest,
    MigrateRequest,
    RebalanceRequest,
    ReplicateRequest,
    Request,
)


def _backend_only(func: Callable[..., Any]) -> Callable[..., Any]:
    from console.cli import backend_options

    return backend_options(func)


def _operation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    from console.cli import backend_options

    for option in reversed([
        click.option("--json", "as_json", is_flag=True, help="One JSON object per progress event (NDJSON)."),
        click.option("--speed", type=click.FloatRange(min=0), default=None,
                     help="Simulator only: run the clock this many times faster; 0 runs instantly."),
    ]):
        func = option(func)
    return backend_options(func)


Resolve = Callable[[Any], tuple[Request, "str | None"]]  # inventory → the request and its question


def _run(ctx: click.Context, opts: dict[str, Any], request: Request | Resolve, question: str | None = None) -> None:
    """Run ``request``, or the one ``request(inventory)`` resolves to on the opened backend."""
    from console.cli import merged, open_backend_from
    from console.operate import run_operation

    options = merged(ctx, **opts)
    backend = open_backend_from(options, live=True)
    try:
        if callable(request):
            request, question = request(backend.snapshot())
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


@click.command()
@click.argument("vm")
@click.option("--to", "to", default=None, metavar="HOST|SITE",
              help="Start replicating to this recovery host or site; without it, sync the existing replica.")
@click.option("--rpo", "rpo_s", type=click.FloatRange(min=1), default=300.0, metavar="SECONDS",
              help="Recovery point objective for a new replica.")
@_operation_options
@click.pass_context
def replicate(ctx: click.Context, vm: str, to: str | None, rpo_s: float, **opts: Any) -> None:
    """Ship VM's disk chain to its recovery site: missing layers, then new writes."""
    _run(ctx, opts, ReplicateRequest(vm, to, rpo_s))


@click.command()
@click.argument("vm")
@click.option("--test/--planned", "test", default=True,
              help="--test: start a copy on a throwaway overlay (default); --planned: move it for real.")
@click.option("--yes", is_flag=True, help="Confirm a planned failover without a terminal.")
@_operation_options
@click.pass_context
def failover(ctx: click.Context, vm: str, test: bool, yes: bool, **opts: Any) -> None:
    """Start VM at its recovery site from the replica chain."""
    question = None if test else f"Fail {vm} over to its recovery site for real?"
    _run(ctx, {**opts, "yes": yes}, FailoverRequest(vm, test), question=question)


@click.group()
def replication() -> None:
    """Replication status of every replicated disk."""


@replication.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_backend_only
@click.pass_context
def replication_status(ctx: click.Context, as_json: bool, **opts: Any) -> None:
    """Per disk: replica host, layers present/shipping/missing, last sync, lag, RPO."""
    import json

    from backends.export import replicas_to_list
    from console.cli import snapshot_from
    from console.inventory_text import print_replication
    from console.lost_hosts import report_lost

    inv = snapshot_from(ctx, opts)
    if as_json:
        click.echo(json.dumps({"replicas": replicas_to_list(inv)}, indent=1))
    else:
        print_replication(inv)
    lost = report_lost(inv)  # a lost host's replicas are not in the table: say so
    if lost or any(r.rpo_violated for r in inv.replicas):
        sys.exit(1)


@click.command("plan-vnuma")
@click.option("--vcpus", type=click.IntRange(min=1), required=True, help="vCPUs of the VM.")
@click.option("--memory", "size", required=True, metavar="SIZE", help="Memory of the VM (e.g. 96G).")
@click.option("--hosts", default=None, metavar="A,B,…", help="The hosts it may run on (default: all).")
@click.option("--site", default=None, help="Or: every host of this site.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_backend_only
@click.pass_context
def plan_vnuma(ctx: click.Context, vcpus: int, size: str, hosts: str | None, site: str | None, as_json: bool,
               **opts: Any) -> None:
    """S6: pick vNUMA nodes that fit one cell on every host the VM may use; print libvirt XML."""
    import json
    from dataclasses import asdict

    from backends.units import format_cpuset, format_kib, parse_size_kib
    from backends.vnuma import candidate_hosts
    from backends.vnuma import plan_vnuma as make_plan
    from console.cli import snapshot_from

    memory = parse_size_kib(size)
    inv = snapshot_from(ctx, opts)
    chosen = candidate_hosts(inv, [h.strip() for h in hosts.split(",") if h.strip()] if hosts else (), site)
    plan = make_plan(chosen, vcpus, memory)
    if as_json:
        click.echo(json.dumps({**asdict(plan), "xml": plan.libvirt_xml()}, indent=1))
        return
    click.echo(f"{len(plan.nodes)} vNUMA node{'s' if len(plan.nodes) > 1 else ''} for {vcpus} vCPUs and "
               f"{format_kib(memory)} on {len(plan.hosts)} hosts ({plan.limit})")
    for i, node in enumerate(plan.nodes):
        click.echo(f"  node {i}: vCPUs {format_cpuset(node.vcpus)}, {format_kib(node.memory_kib)}")
    click.echo(plan.libvirt_xml())


@click.command("audit")
@click.option("--last", type=click.IntRange(min=1), default=None, metavar="N", help="Only the last N entries.")
@click.option("--json", "as_json", is_flag=True, help="The raw JSON lines.")
def audit_log(last: int | None, as_json: bool) -> None:
    """Every operation run or refused: when, who, what, targets, outcome, duration."""
    import json
    import time

    from rich.table import Table

    from console.audit import audit_path, read
    from console.inventory_text import wide_console

    entries = read(last)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry, sort_keys=True))
        return
    table = Table(title=f"Audit log ({audit_path()})", title_justify="left")
    for col in ("when", "who", "what", "outcome", "took", "reason"):
        table.add_column(col)
    for e in entries:
        style = {"succeeded": "green", "refused": "yellow"}.get(e.get("outcome", ""), "red")
        table.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.get("at", 0))),
                      f"{e.get('user')}@{e.get('from')}", e.get("what", ""), f"[{style}]{e.get('outcome')}[/]",
                      f"{e.get('duration_s', 0):.1f}s", e.get("reason", ""))
    wide_console().print(table)


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


COMMANDS = [migrate, handoff, rebalance, replicate, failover, replication, plan_vnuma, audit_log,
            *(_lifecycle(a) for a in LifecycleAction)]
