"""What one benchmark row holds, and the sizes the suite runs at (no Textual here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Size:
    name: str
    scale: str  # simulator fleet, HxV
    domains: int  # libvirt test:/// fleet
    calls_domains: tuple[int, int]  # two fleet sizes whose calls per refresh are compared
    idle_s: float  # console idle CPU window
    samples: int  # key presses timed while a migration streams (the p99 of 100 was the 2nd slowest: noise)
    handoff_requests: int
    repeats: int  # wall-time runs per command; the median is kept
    starts: int  # console starts timed (each a process); the median is kept
    lab_rounds: int  # lab rounds of each (migration there and back, replication), when the lab is up; 0: none


SIZES = {
    "full": Size("full", "100x100", 2000, (200, 2000), 10.0, 300, 1_000_000, 3, 5, 3),
    "smoke": Size("smoke", "4x10", 50, (10, 50), 1.0, 10, 20_000, 1, 1, 0),
}


@dataclass(slots=True)
class Row:
    """One figure; ``peer`` is what it is measured against in the same run (None when it has none)."""

    figure: str
    value: float | None
    unit: str
    target: str
    met: bool | None = None  # None: no target, or not measured
    peer: str = ""
    peer_value: float | None = None
    ratio: float | None = None
    note: str = ""

    def cells(self) -> list[str]:
        verdict = {True: "met", False: "MISSED", None: ""}[self.met]
        return [
            self.figure,
            _num(self.value, self.unit) if self.value is not None else self.note or "—",
            f"{self.peer}: {_num(self.peer_value, self.unit)}" if self.peer and self.peer_value is not None
            else self.peer or "—",
            f"{self.ratio:.2f}×" if self.ratio is not None else "—",
            self.target,
            verdict,
        ]


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "%":
        return f"{value:.2f} %"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}".rstrip()
    return f"{value:.1f} {unit}".rstrip() if value != int(value) else f"{int(value)} {unit}".rstrip()
