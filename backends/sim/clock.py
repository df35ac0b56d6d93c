"""Injected clocks: the simulator never reads wall time directly, so runs are repeatable."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


EPOCH = 1_795_000_000.0  # 2026-11-18: where repeatable runs start (tests, scenarios, screenshots)


class ManualClock:
    """Time that moves only when told to; ``sleep`` advances it at once (tests, screenshots)."""

    def __init__(self, start: float = EPOCH) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)


class ScaledClock:
    """Wall time sped up by ``speed`` (2.0: simulated operations run twice as fast)."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._origin_wall = time.monotonic()
        self._origin_sim = time.time() if start is None else start

    def now(self) -> float:
        return self._origin_sim + (time.monotonic() - self._origin_wall) * self.speed

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.speed)
