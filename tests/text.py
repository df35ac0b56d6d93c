"""Plain text of what a widget shows, for assertions in Pilot tests."""

from __future__ import annotations

import io

from rich.console import Console
from textual.widgets import Static


def plain(widget: Static, width: int = 200) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(widget.content)
    return console.export_text()
