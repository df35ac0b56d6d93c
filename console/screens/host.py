"""One host: its NUMA map, and this machine's own view of itself when it is local."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult

from backends.local import is_local, local_stats
from backends.models import Inventory
from console.actions import bindings
from console.screens.base import InventoryScreen, pane
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

    def action_back(self) -> None:
        self.app.pop_screen()

    def key_escape(self) -> None:
        if self.query_one("#filter").display:
            super().key_escape()
        else:
            self.action_back()
