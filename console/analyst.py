"""What the console derives from each snapshot (alerts, host CPU use), once per snapshot and off
the UI loop: backend and worker threads call ``analyse`` before posting the snapshot."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from backends.analysis import Alert, AlertMemo, alerts
from backends.models import Inventory
from backends.usage import cpu_use


@dataclass(frozen=True, slots=True)
class Analysed:
    inventory: Inventory
    alerts: tuple[Alert, ...]
    cpu_use: dict[str, float] = field(default_factory=dict)  # host → busy fraction, from the last two snapshots


class Analyst:
    """Analyses snapshots in the order they come; what did not change since the last one (same
    objects) is not analysed again (``AlertMemo``)."""

    def __init__(self, first: Inventory) -> None:
        self._lock = threading.Lock()
        self._memo = AlertMemo()
        self.last = Analysed(first, alerts(first, self._memo))

    def analyse(self, inv: Inventory) -> Analysed:
        with self._lock:
            last = self.last
            if inv is not last.inventory:
                use = cpu_use(last.inventory, inv) or last.cpu_use
                self.last = last = Analysed(inv, alerts(inv, self._memo), use)
            return last
