"""Progress of a replication phase: bytes done, sampled into Progress events at a bounded rate."""

from __future__ import annotations

import threading
import time

from backends.base import Emit
from backends.progress import Meter

EMIT_EVERY_S = 0.1  # at most this often a Progress event (and at the end of every layer)


class Tally:
    """Bytes done in one phase, sampled into Progress events at most every ``EMIT_EVERY_S``;
    layers shipping at once count into one tally from their own threads."""

    def __init__(self, emit: Emit, meter: Meter, phase: str, total: int, layers_left: int = 0) -> None:
        self.emit, self.meter, self.phase, self.total = emit, meter, phase, total
        self.done, self.layers_left, self.disk = 0, layers_left, ""
        self._last = 0.0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        """Count ``n`` more bytes; emit a sample when the last one is old enough."""
        with self._lock:
            self.done += n
            if time.monotonic() - self._last >= EMIT_EVERY_S:
                self._sample()

    def sample(self) -> None:
        """Emit a Progress event for where the phase stands now."""
        with self._lock:
            self._sample()

    def _sample(self) -> None:
        self._last = time.monotonic()
        detail: dict[str, float | int | str] = {}
        if self.phase == "shipping":
            detail = {"disk": self.disk, "layers_left": self.layers_left, "bytes_shipped": self.done}
        self.emit(self.meter.sample(self.phase, self.done, max(0, self.total - self.done), detail=detail))
