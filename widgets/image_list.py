"""S1: the VMs backed by device images — what each image stands for, where it came from, what could restore it."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from backends.models import DeviceImage, Vm

# (the VM carrying the image, the image, addresses of free hardware on the VM's host that matches it)
ImageRow = tuple[Vm, DeviceImage, tuple[str, ...]]


def image_name(image: DeviceImage) -> str:
    return " ".join(p for p in (image.vendor, image.product) if p) or image.source_address


def captured(at: float) -> str:
    return time.strftime("%m-%d %H:%M", time.gmtime(at))


class ImageList(Static):
    """One line per image: VM, guest address, 'backed by image' of what, source host/address, when, restore."""

    DEFAULT_CSS = """
    ImageList { padding: 0 1; height: auto; }
    """

    def show(self, rows: Sequence[ImageRow]) -> None:
        if not rows:
            self.update(Text("no VM is backed by a device image", style="dim"))
            return
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=True)
        table.add_column("VM", no_wrap=True)
        table.add_column("at", no_wrap=True)
        table.add_column("backed by image of", ratio=2, no_wrap=True, overflow="ellipsis")
        table.add_column("captured from", ratio=2, no_wrap=True, overflow="ellipsis")
        table.add_column("restore with", ratio=1, no_wrap=True, overflow="ellipsis")
        for vm, image, matching in rows:
            restore = (Text(", ".join(matching), style="green") if matching
                       else Text(f"no match on {vm.host}", style="yellow"))
            what = Text(image.product or image_name(image), style="magenta")
            table.add_row(Text(vm.name, style="bold"), image.address, what,
                          f"{image.source_host} {image.source_address} {captured(image.captured_at)}", restore)
        self.update(table)
