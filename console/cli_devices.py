"""S1 verbs: detach a device into a backing image, attach matching hardware, list the images.

The S2 host ↔ VM handoff is ``hvc handoff DEVICE --to VM`` / ``--to host`` (in ``cli_ops``).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from backends.requests import AttachRequest, DetachRequest, Request
from console.cli_ops import _backend_only, _operation_options


def _run(ctx: click.Context, opts: dict[str, Any], request: Request | None, question: str | None,
         device: str = "", host: str | None = None) -> None:
    """Run ``request``; without one, detach ``device`` from whichever VM holds it."""
    from backends.errors import BadInput, NotFound
    from backends.models import OwnerKind
    from console.cli import merged, open_backend_from
    from console.operate import run_operation

    options = merged(ctx, **opts)
    backend = open_backend_from(options, live=True)
    try:
        if request is None:
            wanted = device.lower()
            found = [d for d in backend.snapshot().devices if wanted in (d.address, (d.name or "").lower())
                     and (host is None or d.host == host)]
            if not found:
                raise NotFound(f"no PCI device {device!r}" + (f" on {host}" if host else ""),
                               hint="see `hvc inventory` for the devices")
            if len(found) > 1:
                raise BadInput(f"{device} exists on {', '.join(d.host for d in found)}", hint="say which with --host")
            if found[0].owner.kind is not OwnerKind.VM or not found[0].owner.vm:
                raise BadInput(f"{device} on {found[0].host} is not assigned to a VM (owner {found[0].owner})",
                               hint="only a VM's device can be detached into an image")
            request = DetachRequest(found[0].owner.vm, found[0].address, found[0].host)
            question = f"Detach {found[0].address} from running {found[0].owner.vm} (an image answers for it)?"
        code = run_operation(backend, request, as_json=options.get("as_json", False), question=question,
                             yes=bool(options.get("yes")))
    finally:
        backend.close()
    sys.exit(code)


@click.command()
@click.argument("device")
@click.option("--vm", default=None, help="The VM holding DEVICE (default: its owner).")
@click.option("--host", default=None, help="The host of DEVICE when its address exists on several hosts.")
@click.option("--yes", is_flag=True, help="Confirm without a terminal.")
@_operation_options
@click.pass_context
def detach(ctx: click.Context, device: str, vm: str | None, host: str | None, yes: bool, **opts: Any) -> None:
    """S1: remove DEVICE from its VM; a backing image of its registers answers for it and travels with the VM."""
    request = DetachRequest(vm, device, host) if vm else None
    _run(ctx, {**opts, "yes": yes}, request, f"Detach {device} from {vm} (an image answers for it)?",
         device=device, host=host)


@click.command()
@click.argument("vm")
@click.option("--device", required=True, metavar="ADDR", help="Matching hardware on the VM's host.")
@click.option("--host", default=None, help="The VM's host when its name exists on several hosts.")
@_operation_options
@click.pass_context
def attach(ctx: click.Context, vm: str, device: str, host: str | None, **opts: Any) -> None:
    """S1: attach hardware matching one of VM's device images; the device is restored from it."""
    _run(ctx, opts, AttachRequest(vm, device, host), None)


@click.command("images")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_backend_only
@click.pass_context
def images_cmd(ctx: click.Context, as_json: bool, **opts: Any) -> None:
    """S1: every device backing image, by VM: what it stands for, where it was captured, matching hardware."""
    import json
    import time
    from dataclasses import asdict

    from backends import images
    from backends.models import OwnerKind
    from console.cli import merged, open_backend_from

    backend = open_backend_from(merged(ctx, **opts))
    try:
        inv = backend.snapshot()
    finally:
        backend.close()
    rows = []
    for vm in inv.vms:
        free = [d for d in inv.devices_on(vm.host) if d.owner.kind is not OwnerKind.VM]
        for image in vm.device_images:
            match = [d.address for d in free if images.mismatch(image, d) is None]
            rows.append((vm, image, match))
    if as_json:
        click.echo(json.dumps({"images": [
            {"vm": vm.name, "host": vm.host, **{k: v for k, v in asdict(image).items() if k != "registers"},
             "register_bytes": len(image.registers) // 2, "matching_hardware": match}
            for vm, image, match in rows]}, indent=1))
        return
    if not rows:
        click.echo("no device images: no VM is backed by an image")
        return
    for vm, image, match in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(image.captured_at))
        here = f"matching hardware here: {', '.join(match)}" if match else f"no matching hardware on {vm.host}"
        click.echo(f"{vm.name} ({vm.host})  {image.address}  backed by image of {images.describe_image(image)}  "
                   f"from {image.source_host} {image.source_address} at {when}  · {here}")


COMMANDS = [detach, attach, images_cmd]
