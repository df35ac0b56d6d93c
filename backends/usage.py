"""Rates from two snapshots: CPU time is a counter, so use needs a previous sample."""

from __future__ import annotations

from backends.models import Inventory


def cpu_use(previous: Inventory | None, current: Inventory) -> dict[str, float]:
    """Host name → fraction of its threads kept busy by VMs between the two snapshots.

    Hosts without two samples of any VM are absent: their use is not known yet.
    """
    if previous is None or current.taken_at <= previous.taken_at:
        return {}
    elapsed_ns = (current.taken_at - previous.taken_at) * 1e9
    before = {(vm.host, vm.name): vm.cpu_time_ns for vm in previous.vms if vm.cpu_time_ns is not None}
    busy: dict[str, float] = {}
    for vm in current.vms:
        start = before.get((vm.host, vm.name))
        if start is not None and vm.cpu_time_ns is not None and vm.cpu_time_ns >= start:
            busy[vm.host] = busy.get(vm.host, 0.0) + (vm.cpu_time_ns - start)
    return {
        h.name: min(1.0, busy[h.name] / (elapsed_ns * h.threads))
        for h in current.hosts if h.name in busy and h.threads
    }
