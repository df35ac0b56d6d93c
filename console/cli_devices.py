"""S1 verbs: detach a device into a backing image, attach matching hardware, list the images.

The S2 host ↔ VM handoff is ``hvc handoff DEVICE --to VM`` / ``--to host`` (in ``cli_ops``).
"""

from __future__ import annotations

from typing import Any

import click

from backends.requests import AttachRequest, DetachRequest, Request
from console.cli_ops import _backend_only, _operation_options, _run


def _owner_of(device: str, host: str | None) -> Any:
    """Resolve a detach without --vm: the VM that holds ``device``."""

    def resolve(inv: Any) -> tuple[Request, str]:
        from backends.base import find_device
        from backends.errors import BadInput
        from backends.models import OwnerKind

        found = find_device(inv, device, host)
        if found.owner.kind is not OwnerKind.VM or not found.owner.vm:
            raise BadInput(f"{device} on {found.host} is not assigned to a VM (owner {found.owner})",
                           hint="only a VM's device can be detached into an image")
        return (DetachRequest(found.owner.vm, found.address, found.host),
                f"Detach {found.address} from running {found.owner.vm} (an image answers for it)?")

    return resolve


@click.command()
@click.argument("device")
@click.option("--vm", default=None, help="The VM holding DEVICE (default: its owner).")
@click.option("--host", default=None, help="The host of DEVICE when its address exists on several hosts.")
@click.option("--yes", is_flag=True, help="Confirm without a terminal.")
@_operation_options
@click.pass_context
def detach(ctx: click.Context, device: str, vm: str | None, host: str | None, yes: bool, **opts: Any) -> None:
    """S1: remove DEVICE from its VM; a backing image of its registers answers for it and travels with the VM."""
    request = DetachRequest(vm, device, host) if vm else _owner_of(device, host)
    _run(ctx, {**opts, "yes": yes}, request, f"Detach {device} from {vm} (an image answers for it)?")


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
    from console.cli import snapshot_from

    inv = snapshot_from(ctx, opts)
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
