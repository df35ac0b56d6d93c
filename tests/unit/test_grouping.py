"""VMs grouped by host from the previous grouping are the same as grouped from scratch."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.grouping import FEW, group_by_host
from backends.models import Vm, VmState

HOSTS = ("a", "b", "c", "d")


def _vm(i: int, host: str) -> Vm:
    return Vm(f"vm{i}", f"uuid-{i}", host, VmState.RUNNING, 1, 1024)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=40),
       st.lists(st.lists(st.tuples(st.integers(0, 39), st.sampled_from(HOSTS)), max_size=6), max_size=8))
def test_regrouping_a_few_changes_matches_grouping_from_scratch(placement: list[str],
                                                                 rounds: list[list[tuple[int, str]]]) -> None:
    vms = tuple(_vm(i, host) for i, host in enumerate(placement))
    grouped = group_by_host(vms)
    for changes in rounds:
        changed = list(vms)
        for i, host in changes:
            if i < len(changed):
                changed[i] = replace(changed[i], host=host, vcpus=changed[i].vcpus + 1)
        new = tuple(changed)
        again = group_by_host(new, grouped)
        fresh = group_by_host(new)
        assert again.hosts == fresh.hosts and again.at == fresh.at
        touched = {vms[i].host for i, _ in changes if i < len(vms)} | {h for i, h in changes if i < len(vms)}
        for host, members in again.hosts.items():
            if host not in touched and host in grouped.hosts:
                assert members is grouped.hosts[host]  # untouched hosts keep their list (caches key on it)
        vms, grouped = new, again


def test_many_changes_group_from_scratch() -> None:
    vms = tuple(_vm(i, HOSTS[i % 4]) for i in range(FEW * 3))
    moved = tuple(replace(vm, host="a") for vm in vms)
    assert group_by_host(moved, group_by_host(vms)).hosts == {"a": list(moved)}


def test_alerts_from_a_memo_match_alerts_from_scratch() -> None:
    """AlertMemo reuses a host's findings while it and its VMs are the same objects: after VMs
    move between hosts on the demo fleet, what it answers is what a fresh analysis finds."""
    from backends.analysis import AlertMemo, alerts
    from backends.sim.backend import SimBackend
    from backends.sim.clock import ManualClock
    from backends.sim.fleet import demo_fleet_path, load_fleet

    clock = ManualClock(1000.0)
    backend = SimBackend(load_fleet(demo_fleet_path()), clock)
    memo = AlertMemo()
    hosts = [h.name for h in backend.snapshot().hosts]
    for step in range(6):
        inv = backend.refresh()
        assert alerts(inv, memo) == alerts(inv)
        vm = inv.vms[(step * 5) % len(inv.vms)]
        backend.state.vms[vm.name] = replace(backend.state.vms[vm.name], host=hosts[step % len(hosts)])
        clock.advance(2)
