"""Progress samples for any operation: smoothed rate, an ETA that never runs backwards.

Raw rates from migration or copy loops jump around; operators read a jumping ETA as a lie.
The rate is an exponentially weighted average, and the ETA may fall freely but rise by at
most the sampling noise (``NOISE`` of itself, at least ``FLOOR_S``) per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from backends.models import Progress
from backends.units import format_bytes, format_kib

ALPHA = 0.3  # weight of the newest rate sample
NOISE = 0.10
FLOOR_S = 1.0


class Meter:
    """Feed it (done, remaining) as work drains; it returns ``Progress`` events."""

    def __init__(self, job_id: str, unit: str, now: Callable[[], float]) -> None:
        self.job_id, self.unit, self.now = job_id, unit, now
        self._last: tuple[float, int] | None = None  # (time, done) of the previous sample
        self._rate: float | None = None
        self._eta: tuple[float, float] | None = None  # (time, eta) of the previous sample
        self._phase = ""

    def sample(self, phase: str, done: int, remaining: int, *, held: int = 0,
               detail: Mapping[str, float | int | str] | None = None) -> Progress:
        at = self.now()
        remaining = max(0, remaining)
        if phase != self._phase:  # a new phase drains a new queue: forget the old pace
            self._phase, self._last, self._rate, self._eta = phase, None, None, None
        if self._last is not None and at > self._last[0]:
            raw = max(0.0, (done - self._last[1]) / (at - self._last[0]))
            self._rate = raw if self._rate is None else ALPHA * raw + (1 - ALPHA) * self._rate
        self._last = (at, done)
        eta = self._bounded_eta(at, remaining)
        return Progress(self.job_id, phase, done, remaining, self.unit, held=held, rate=self._rate,
                        eta_s=eta, at=at, detail=dict(detail or {}))

    def _bounded_eta(self, at: float, remaining: int) -> float | None:
        if remaining == 0:
            eta: float | None = 0.0
        elif not self._rate:
            eta = None
        else:
            eta = remaining / self._rate
        if eta is not None and self._eta is not None:
            before_at, before = self._eta
            expected = max(0.0, before - (at - before_at))
            eta = min(eta, expected + max(FLOOR_S, NOISE * expected))
        if eta is not None:
            self._eta = (at, eta)
        return eta


def amount(value: float, unit: str) -> str:
    if unit == "bytes":
        return format_bytes(int(value))
    if unit == "pages":
        return format_kib(int(value) * 4)
    return f"{value:,.0f} {unit}"


def describe(p: Progress) -> str:
    """One human line for a progress sample (the plain-log form and the bar's suffix)."""
    parts = [f"{p.fraction * 100:5.1f}%", f"{amount(p.done, p.unit)} done", f"{amount(p.remaining, p.unit)} left"]
    if p.held:
        parts.append(f"{p.held:,} held")
    if p.rate is not None:
        parts.append(f"{amount(p.rate, p.unit)}/s")
    if p.eta_s is not None:
        parts.append(f"eta {p.eta_s:.1f}s" if p.eta_s < 10 else f"eta {p.eta_s:.0f}s")
    for key, value in p.detail.items():
        if key == "dirty_rate" and isinstance(value, int | float):
            parts.append(f"dirtying {amount(value, p.unit)}/s")
        elif key != "memory_total":
            parts.append(f"{key.replace('_', ' ')} {value}")
    return " · ".join(parts)
