"""S1 choices for the console: the images VMs carry, and the hardware that could restore each one."""

from __future__ import annotations

from backends import images
from backends.base import Backend
from backends.errors import HvcError
from backends.models import Inventory, OwnerKind, PciDevice
from backends.requests import AttachRequest
from widgets.image_list import ImageRow, image_name

Choice = tuple[str, str, str | None]  # value, label, why it cannot work


def image_rows(inv: Inventory) -> list[ImageRow]:
    """Every image of every VM, with the free devices on the VM's host that match it."""
    rows: list[ImageRow] = []
    free: dict[str, list[PciDevice]] | None = None  # host → its devices no VM holds, made once if needed
    for vm in inv.vms:
        if not vm.device_images:
            continue
        if free is None:
            free = {}
            for d in inv.devices:
                if d.owner.kind is not OwnerKind.VM:
                    free.setdefault(d.host, []).append(d)
        for image in vm.device_images:
            rows.append((vm, image, tuple(d.address for d in free.get(vm.host, ())
                                          if images.mismatch(image, d) is None)))
    return rows


def attach_choices(backend: Backend, inv: Inventory) -> list[Choice]:
    """One choice per (image, matching device); an image with nothing to restore it shows why, disabled."""
    out: list[Choice] = []
    for vm, image, matching in image_rows(inv):
        label = f"{vm.name}  {image.address}  {image_name(image)}"
        if not matching:
            out.append((f"{vm.name}|{vm.host}|-", label, f"no matching hardware free on {vm.host}"))
        for address in matching:
            request = AttachRequest(vm.name, address, host=vm.host)
            try:
                backend.prepare(request)
                why = None
            except HvcError as exc:
                why = exc.message
            out.append((f"{vm.name}|{vm.host}|{address}", f"{label}  ← {address}", why))
    return sorted(out, key=lambda c: c[2] is not None)
