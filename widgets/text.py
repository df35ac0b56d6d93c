"""Small rich-text helpers shared by widgets (bars, sizes, states, durations)."""

from __future__ import annotations

from rich.text import Text

from backends.models import VmState


def meter(used: int | None, total: int, width: int = 10) -> Text:
    """A one-line bar; red past 90 %, grey and '?' when unknown."""
    if used is None or total <= 0:
        return Text("?".center(width, "·"), style="dim")
    fraction = min(1.0, max(0.0, used / total))
    filled = round(fraction * width)
    style = "red" if fraction > 0.9 else "yellow" if fraction > 0.75 else "green"
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")


STATE_STYLE = {
    VmState.RUNNING: "green",
    VmState.PAUSED: "yellow",
    VmState.SHUTOFF: "dim",
    VmState.CRASHED: "red",
    VmState.SUSPENDED: "yellow",
    VmState.MIGRATING: "cyan",
    VmState.UNKNOWN: "magenta",
}


def vm_state(state: VmState) -> Text:
    return Text(state.value, style=STATE_STYLE[state])


def ellipsis(text: str, width: int) -> str:
    """Shorten ``text`` to ``width`` cells, keeping both ends (names and URIs differ at either)."""
    if len(text) <= width:
        return text
    head = (width - 1) * 2 // 3
    return f"{text[:head]}…{text[len(text) - (width - 1 - head):]}"


def duration(seconds: float | None) -> str:
    """Seconds → '45s', '15m 40s', '2h 05m', '3d 4h'; None → 'unknown'."""
    if seconds is None:
        return "unknown"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
