"""Fleet: every site and host at a glance, and what needs attention."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from backends.analysis import Severity
from backends.models import Inventory
from console.actions import bindings
from console.screens.base import InventoryScreen, pane
from widgets.host_list import HostList

MAX_ALERTS = 12


class FleetScreen(InventoryScreen):
    SCOPE = "fleet"
    BINDINGS = bindings("fleet")
    TITLE_TEXT = "Fleet"

    _alerts_shown: Text | None = None

    def compose_body(self) -> ComposeResult:
        with pane("hosts-pane", "Hosts"):
            yield HostList(id="hosts")
        with pane("alerts-pane", "Alerts"):
            yield Static(id="alerts")

    def show(self, inv: Inventory) -> None:
        super().show(inv)
        found = self.hvc.alerts
        counts: dict[str, tuple[int, int]] = {}
        for a in found:
            e, w = counts.get(a.host, (0, 0))
            counts[a.host] = (e + 1, w) if a.severity is Severity.ERROR else (e, w + 1)
        self.query_one(HostList).show(inv, counts, self.hvc.cpu_use)
        lines = Text()
        for a in found[:MAX_ALERTS]:
            style = "red" if a.severity is Severity.ERROR else "yellow"
            lines.append("✖ " if a.severity is Severity.ERROR else "⚠ ", style=f"bold {style}")
            lines.append(a.message + "\n", style=style)
        if len(found) > MAX_ALERTS:
            lines.append(f"… and {len(found) - MAX_ALERTS} more", style="dim")
        if not found:
            lines.append("nothing needs attention", style="green")
        if lines != self._alerts_shown:  # a Static update re-renders the screen: only when it changed
            # The pane's height follows its lines: lay out again only when their number changed.
            relayout = self._alerts_shown is None or lines.plain.count("\n") != self._alerts_shown.plain.count("\n")
            self._alerts_shown = lines
            self.query_one("#alerts", Static).update(lines, layout=relayout)
        title = f"Alerts ({len(found)})"
        if self.query_one("#alerts-pane").border_title != title:
            self.query_one("#alerts-pane").border_title = title

    def apply_filter(self, text: str) -> None:
        self.query_one(HostList).set_filter(text)

    def action_open_host(self) -> None:
        host = self.query_one(HostList).current_key
        if host:
            self.hvc.open_host(host)

    @on(DataTable.RowSelected, "#hosts")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.hvc.open_host(str(event.row_key.value))
