"""Rates from two snapshots: CPU time is a counter, so use needs a previous sample."""

from __future__ import annotations

from backends.models import Inventory


def cpu_use(previous: Inventory | None, current: Inventory) -> dict[str, float]:
    """Host name → fraction of its threads kept busy by VMs between the two snapshots.

    Only VMs sampled on the same host in both count; hosts without any are absent: their use is
    not known yet.
    """
    if previous is None or current.taken_at <= previous.taken_at:
        return {}
    elapsed_ns = (current.taken_at - previous.taken_at) * 1e9
    before = previous.cpu_time_ns
    busy: dict[str, float] = {}
    for key, now in current.cpu_time_ns.items():
        start = before.get(key)
        if start is not None and now >= start:
            busy[key[0]] = busy.get(key[0], 0.0) + (now - start)
    return {
        h.name: min(1.0, busy[h.name] / (elapsed_ns * h.threads))
        for h in current.hosts if h.name in busy and h.threads
    }
