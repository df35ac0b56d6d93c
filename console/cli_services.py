"""S8 verbs: list storage services, and move one to another host keeping its identifier."""

from __future__ import annotations

from typing import Any

import click

from backends.requests import ServiceMoveRequest
from console import cli_ops
from console.cli_ops import _backend_only, _operation_options


@click.command("services")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_backend_only
@click.pass_context
def services(ctx: click.Context, as_json: bool, **opts: Any) -> None:
    """Storage services: identifier, protocol, VM, host and the VF carrying the identifier."""
    import json

    from backends.export import services_to_list
    from console.cli import snapshot_from
    from console.inventory_text import print_services

    inv = snapshot_from(ctx, opts)
    if as_json:
        click.echo(json.dumps({"services": services_to_list(inv)}, indent=1))
    else:
        print_services(inv)


@click.command("service-move")
@click.argument("service")
@click.option("--to", "to_host", required=True, metavar="HOST", help="Destination host: it needs a free SR-IOV VF.")
@click.option("--yes", is_flag=True, help="Confirm without a terminal.")
@_operation_options
@click.pass_context
def service_move(ctx: click.Context, service: str, to_host: str, yes: bool, **opts: Any) -> None:
    """Move SERVICE (name or identifier) to HOST: release its VF, migrate its VM, bind the same identifier there."""
    # Through the module: headless scenarios swap cli_ops._run to capture the request.
    cli_ops._run(ctx, {**opts, "yes": yes}, ServiceMoveRequest(service, to_host),
                 question=f"Move {service} to {to_host} (its initiators pause at switchover)?")


COMMANDS = [services, service_move]
