"""Devices: PCI ownership per host, with conflicts flagged."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import Static, Tree

from backends.analysis import device_flags
from backends.models import Inventory, OwnerKind
from backends.requests import AttachRequest, DetachRequest, DeviceOpRequest, HandoffRequest
from console.actions import bindings
from console.choices import handoff_targets
from console.device_choices import attach_choices, image_rows
from console.device_policy_view import op_choices, policy_rows, recent_decisions
from console.screens.base import InventoryScreen, pane
from console.screens.picker import PickerScreen
from widgets.device_policy import DevicePolicy
from widgets.device_tree import DeviceTree
from widgets.image_list import ImageList, image_name


class DevicesScreen(InventoryScreen):
    SCOPE = "devices"
    BINDINGS = bindings("devices")
    TITLE_TEXT = "Devices"

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""

    def compose_body(self) -> ComposeResult:
        with pane("devices-pane", "PCI devices by host and IOMMU group"):
            yield DeviceTree(id="devices")
        with pane("images-pane", "Backed by image (S1): devices removed from VMs"):
            yield ImageList(id="images")
        yield Static(id="device-legend")
        with pane("policy-pane", "Device policy (S7)"):
            yield DevicePolicy(id="device-policy")

    def show(self, inv: Inventory) -> None:
        super().show(inv)
        if not self.unchanged("devices", inv.devices, inv.vms, inv.services, self.filter_text):
            self._show_devices(inv)
        self._show_policy()

    def _show_devices(self, inv: Inventory) -> None:
        wanted = self.filter_text.lower()
        devices = [
            d for d in inv.devices
            if not wanted or any(wanted in (v or "").lower()
                                 for v in (d.address, d.product, d.vendor, d.driver, d.host, d.owner.vm))
        ]
        flags = device_flags(inv)
        self.query_one(DeviceTree).show(devices, flags, inv.services)
        rows = image_rows(inv)
        self.query_one(ImageList).show([r for r in rows if not wanted or wanted in r[0].name.lower()
                                        or wanted in image_name(r[1]).lower()])
        self.query_one("#images-pane").display = bool(rows)  # no empty pane taking rows from the tree
        assigned = sum(1 for d in inv.devices if d.owner.kind is OwnerKind.VM)
        self.query_one("#device-legend", Static).update(Text.assemble(
            f" {len(devices)} shown · {assigned} assigned to VMs · {len(rows)} backed by image · ",
            (f"{len(flags)} in conflict", "red" if flags else "green"),
        ))

    @on(Tree.NodeHighlighted, "#devices")
    def _show_policy(self) -> None:
        node = self.query_one(DeviceTree).cursor_node
        device = node.data if node is not None else None
        self.query_one("#policy-pane").display = device is not None  # a host or group row has no policy
        if device is None:
            self.query_one(DevicePolicy).show("", [], [])
            return
        title, rows = policy_rows(self.hvc.backend, device)
        self.query_one(DevicePolicy).show(title, rows, recent_decisions(device))

    def action_device_op(self) -> None:
        node = self.query_one(DeviceTree).cursor_node
        device = node.data if node is not None else None
        if device is None:
            self.set_status("pick a device first")
            return

        def chosen(op: str | None) -> None:
            if op:
                self.hvc.operate(DeviceOpRequest(device.address, op, host=device.host),
                                 f"Run {op} on {device.address} ({device.host})?")
                self._show_policy()

        self.app.push_screen(PickerScreen(f"Operation on {device.address} ({device.host}) · policy decides",
                                          op_choices(self.hvc.backend, device)), chosen)

    def action_device_handoff(self) -> None:
        node, inv = self.query_one(DeviceTree).cursor_node, self.hvc.inventory
        device = node.data if node is not None else None
        if device is None or inv is None:
            self.set_status("pick a device first")
            return

        def chosen(target: str | None) -> None:
            if target:
                self.hvc.operate(HandoffRequest(device.address, target, host=device.host),
                                 f"Hand {device.address} ({device.owner}) to {target}?")

        self.hvc.pick(f"Hand {device.address} on {device.host} to…",
                      lambda: handoff_targets(self.hvc.backend, inv, device), chosen)

    def action_device_detach(self) -> None:
        node = self.query_one(DeviceTree).cursor_node
        device = node.data if node is not None else None
        if device is None or device.owner.kind is not OwnerKind.VM or not device.owner.vm:
            self.set_status("pick a device assigned to a VM first")
            return
        self.hvc.operate(DetachRequest(device.owner.vm, device.address, host=device.host),
                         f"Detach {device.address} from {device.owner.vm}? An image answers for it until "
                         "matching hardware is attached.")

    def action_device_attach(self) -> None:
        inv = self.hvc.inventory
        if inv is None:
            return
        def chosen(value: str | None) -> None:
            if value:
                vm, host, address = value.split("|")
                self.hvc.operate(AttachRequest(vm, address, host=host))

        self.hvc.pick("Restore a device image with matching hardware…", lambda: attach_choices(self.hvc.backend, inv),
                      chosen, empty="no VM is backed by an image: detach a device first (D)")

    def apply_filter(self, text: str) -> None:
        self.filter_text = text
        if self.hvc.inventory:
            self.show(self.hvc.inventory)
