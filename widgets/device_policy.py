"""S7: the selected device's policy (each operation's scope and decision) beside its recent decisions."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

# (op, scope, verdict, runs or None, reason) per operation; (when, outcome, what) per recent decision.
PolicyRow = tuple[str, str, str, str | None, str]
RecentRow = tuple[str, str, str]
_MARK = {"permit": ("✓ permit", "green"), "translate": ("→ ", "yellow"), "deny": ("✗ deny", "red")}


class DevicePolicy(Static):
    DEFAULT_CSS = """
    DevicePolicy { padding: 0 1; height: auto; }
    """
    _shown: tuple[object, ...] | None = None  # what it shows now

    def show(self, title: str, rows: Sequence[PolicyRow], recent: Sequence[RecentRow]) -> None:
        shown = (title, tuple(rows), tuple(recent))
        if shown == self._shown:
            return  # redrawing re-lays out the screen: only when something changed
        self._shown = shown
        self.update(render_policy(title, rows, recent) if rows else Text("no device selected", style="dim"))


def render_policy(title: str, rows: Sequence[PolicyRow], recent: Sequence[RecentRow]) -> Group:
    ops = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for col in ("op", "scope", "decision"):
        ops.add_column(col, no_wrap=True)
    for op, scope, verdict, runs, _reason in rows:
        label, style = _MARK.get(verdict, (verdict, ""))
        if verdict == "translate":
            label = f"→ {runs}"
        ops.add_row(op, scope, Text(label, style=style))
    log = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    log.add_column("when", no_wrap=True, style="dim", min_width=8)
    log.add_column("recent decisions (audit log)", overflow="ellipsis", no_wrap=True)
    for when, outcome, what in recent:
        log.add_row(when, Text(what, style="red" if outcome == "refused" else "yellow" if outcome != "succeeded"
                               else ""))
    if not recent:
        log.add_row("", Text("none yet · O runs one", style="dim"))
    grid = Table.grid(padding=(0, 3), expand=True)
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row(ops, log)
    return Group(Text(title, style="bold"), grid)
