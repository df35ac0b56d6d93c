"""One host: its NUMA map, and this machine's own view of itself when it is local."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult

from backends.local import is_local, local_stats
from backends.models import Inventory
from backends.units import format_kib
from console.actions import bindings
from console.screens.base import InventoryScreen, pane
from console.screens.picker import PickerScreen
from widgets.host_card import HostCard
from widgets.numa_map import NumaMap


class HostScreen(InventoryScreen):
    SCOPE = "host"
    BINDINGS = bindings("host")
    TITLE_TEXT = "Host"

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host_name = host

    def compose_body(self) -> ComposeResult:
        with pane("numa-pane", self.host_name):
            yield NumaMap(id="numa")
        yield HostCard(id="local")

    def show(self, inv: Inventory) -> None:
        super().show(inv)
        host = inv.host(self.host_name)
        if host is None:
            self.set_status(f"{self.host_name} is no longer in the inventory", error=True)
            return
        pane = self.query_one("#numa-pane")
        pane.border_title = f"NUMA topology · {host.name}"
        pane.border_subtitle = Text(host.state.value, style="green" if host.state.value == "connected" else "red")
        self.query_one(NumaMap).show(host, inv.vms_on(host.name))
        card = self.query_one(HostCard)
        card.display = is_local(host)
        if card.display:
            card.show(local_stats(), host)

    def action_host_migrate(self) -> None:
        """Pick one of this host's running VMs, then where it should go."""
        inv = self.hvc.inventory
        vms = [v for v in inv.vms_on(self.host_name) if v.active] if inv else []
        if not vms:
            self.set_status(f"no running VM on {self.host_name}")
            return

        def chosen(name: str | None) -> None:
            vm = next((v for v in vms if v.name == name), None)
            if vm is not None:
                self.hvc.pick_migration(vm)

        choices = [(v.name, f"{v.name}  ({v.vcpus} vCPUs, {format_kib(v.memory_kib)})", None) for v in vms]
        self.app.push_screen(PickerScreen(f"Migrate which VM off {self.host_name}?", choices), chosen)

    def action_back(self) -> None:
        self.app.pop_screen()

    def key_escape(self) -> None:
        if self.query_one("#filter").display:
            super().key_escape()
        else:
            self.action_back()
