"""The fleet's hosts, grouped by site: state, CPU and memory use, VM count, alerts."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text

from backends.models import Host, HostState, Inventory, SiteRole, Vm
from backends.units import format_kib as kib
from widgets.keyed_table import Cell, KeyedTable
from widgets.text import meter


class HostList(KeyedTable):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(("host", "site", "state", "CPU", "vCPUs", "memory", "cells", "VMs", "alerts"), **kwargs)
        # host → (what its row shows: the Host, alert counts, CPU use in ‰, vCPUs, running, VMs; its cells)
        self._made: dict[str, tuple[tuple[object, ...], tuple[Cell, ...]]] = {}
        self._tallies: tuple[tuple[Vm, ...], tuple[dict[str, int], dict[str, int], dict[str, int]]] | None = None

    def _tally(self, vms: tuple[Vm, ...]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """``_tallied``, kept while the snapshot hands back the same VMs (a scan of the fleet)."""
        kept = self._tallies
        if kept is None or kept[0] is not vms:
            kept = self._tallies = (vms, _tallied(vms))
        return kept[1]

    def show(self, inv: Inventory, alert_counts: Mapping[str, tuple[int, int]] | None = None,
             cpu_use: Mapping[str, float] | None = None) -> None:
        """``alert_counts``: host → (errors, warnings); ``cpu_use``: host → busy fraction."""
        counts = alert_counts or {}
        use = cpu_use or {}
        vcpus, running, total = self._tally(inv.vms)
        order = {s.name: (s.role is not SiteRole.PRIMARY, i) for i, s in enumerate(inv.sites)}
        rows: list[tuple[str, tuple[Cell, ...]]] = []
        made: dict[str, tuple[tuple[object, ...], tuple[Cell, ...]]] = {}
        for h in sorted(inv.hosts, key=lambda h: order.get(h.site, (True, 99))):
            fraction, errors = use.get(h.name), counts.get(h.name, (0, 0))
            cpu, up, vms = vcpus.get(h.name, 0), running.get(h.name, 0), total.get(h.name, 0)
            shown_use = None if fraction is None else round(fraction * 1000)  # as the meter shows it
            facts = (h, errors, shown_use, cpu, up, vms)
            kept = self._made.get(h.name)
            if kept is None or kept[0][0] is not h or kept[0][1:] != facts[1:]:
                kept = (facts, _cells(h, fraction, errors, cpu, up, vms))
            made[h.name] = kept
            rows.append((h.name, kept[1]))
        self._made = made
        self.set_rows(rows)


def _cells(h: Host, fraction: float | None, counts: tuple[int, int], cpu: int, running: int,
           total: int) -> tuple[Cell, ...]:
    lost = h.state is HostState.LOST
    used = None if h.free_kib is None else h.memory_kib - h.free_kib
    return (
        Text(h.name, style="bold"),
        h.site,
        Text(h.state.value, style="red" if lost else "green"),
        _cpu(fraction, lost),
        Text(f"{cpu}/{h.threads}", style="yellow" if h.threads and cpu > h.threads else ""),
        meter(used, h.memory_kib) + Text(f" {kib(used)}/{kib(h.memory_kib)}"),
        str(len(h.numa)) if h.numa else Text("?", style="dim"),
        f"{running}/{total}",
        _alerts(*counts),
    )


def _tallied(vms: tuple[Vm, ...]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Per host: vCPUs of its running VMs, how many run, how many it has."""
    vcpus: dict[str, int] = {}
    running: dict[str, int] = {}
    total: dict[str, int] = {}
    for vm in vms:
        total[vm.host] = total.get(vm.host, 0) + 1
        if vm.active:
            vcpus[vm.host] = vcpus.get(vm.host, 0) + vm.vcpus
            running[vm.host] = running.get(vm.host, 0) + 1
    return vcpus, running, total


def _cpu(fraction: float | None, lost: bool) -> Text:
    if fraction is None:
        return Text("?" if lost else "…", style="dim")  # … until a second sample gives a rate
    return meter(round(fraction * 1000), 1000, width=5) + Text(f" {fraction * 100:3.0f}%")


def _alerts(errors: int, warnings: int) -> Text:
    if not errors and not warnings:
        return Text("ok", style="green")
    return Text.assemble((f"{errors}✖ " if errors else "", "bold red"), (f"{warnings}⚠" if warnings else "", "yellow"))
