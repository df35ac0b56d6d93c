"""VMs grouped by host, kept from one snapshot to the next.

A refresh where a few VMs changed (a migration, a lifecycle action) regroups only their hosts:
at 10,000 VMs a full regrouping costs more than everything else such a refresh does. The
result is the same as grouping from scratch: each host's VMs in snapshot order, and a host
whose VMs did not change keeps the very list it had (so caches keyed on it stay valid).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from backends.models import Vm

FEW = 64  # changed VMs beyond which grouping from scratch is as cheap


@dataclass(frozen=True, slots=True)
class Grouped:
    vms: tuple[Vm, ...]  # what was grouped
    hosts: dict[str, list[Vm]]  # host → its VMs, in snapshot order
    at: dict[str, list[int]]  # host → the positions of those VMs in ``vms``


_last: Grouped | None = None  # the last grouping made: a backend and the analysis group the same snapshot


def group_by_host(vms: tuple[Vm, ...], before: Grouped | None = None) -> Grouped:
    """``vms`` by host; from ``before`` when it grouped as many VMs and only a few changed."""
    global _last
    if before is not None and before.vms is vms:
        return before
    last = _last
    if last is not None and last.vms is vms:
        return last
    _last = _grouped(vms, before)
    return _last


def _grouped(vms: tuple[Vm, ...], before: Grouped | None) -> Grouped:
    changed = _changed(before.vms, vms) if before is not None and len(before.vms) == len(vms) else None
    if before is None or changed is None:
        hosts: dict[str, list[Vm]] = {}
        at: dict[str, list[int]] = {}
        for i, vm in enumerate(vms):
            hosts.setdefault(vm.host, []).append(vm)
            at.setdefault(vm.host, []).append(i)
        return Grouped(vms, hosts, at)
    hosts, at = dict(before.hosts), dict(before.at)
    for i in changed:
        old, new = before.vms[i], vms[i]
        _take(hosts, at, old.host, i)
        _put(hosts, at, new.host, i, new)
    return Grouped(vms, hosts, at)


def _changed(a: tuple[Vm, ...], b: tuple[Vm, ...]) -> list[int] | None:
    """Positions where ``a`` and ``b`` hold different objects; None when there are too many."""
    out: list[int] = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x is not y:
            out.append(i)
            if len(out) > FEW:
                return None
    return out


def _take(hosts: dict[str, list[Vm]], at: dict[str, list[int]], host: str, i: int) -> None:
    positions = at[host]
    j = bisect.bisect_left(positions, i)
    hosts[host] = hosts[host][:j] + hosts[host][j + 1:]  # a new list: the old one may be someone's cache key
    at[host] = positions[:j] + positions[j + 1:]
    if not at[host]:
        del hosts[host], at[host]


def _put(hosts: dict[str, list[Vm]], at: dict[str, list[int]], host: str, i: int, vm: Vm) -> None:
    positions = at.get(host, [])
    j = bisect.bisect_left(positions, i)
    hosts[host] = [*hosts.get(host, [])[:j], vm, *hosts.get(host, [])[j:]]
    at[host] = [*positions[:j], i, *positions[j:]]
