"""The fleet's hosts, grouped by site: state, CPU and memory use, VM count, alerts."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text

from backends.models import HostState, Inventory, SiteRole
from backends.units import format_kib as kib
from widgets.keyed_table import Cell, KeyedTable
from widgets.text import meter


class HostList(KeyedTable):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(("host", "site", "state", "CPU", "vCPUs", "memory", "cells", "VMs", "alerts"), **kwargs)

    def show(self, inv: Inventory, alert_counts: Mapping[str, tuple[int, int]] | None = None,
             cpu_use: Mapping[str, float] | None = None) -> None:
        """``alert_counts``: host → (errors, warnings); ``cpu_use``: host → busy fraction."""
        counts = alert_counts or {}
        use = cpu_use or {}
        vcpus: dict[str, int] = {}
        running: dict[str, int] = {}
        total: dict[str, int] = {}
        for vm in inv.vms:
            total[vm.host] = total.get(vm.host, 0) + 1
            if vm.active:
                vcpus[vm.host] = vcpus.get(vm.host, 0) + vm.vcpus
                running[vm.host] = running.get(vm.host, 0) + 1
        order = {s.name: (s.role is not SiteRole.PRIMARY, i) for i, s in enumerate(inv.sites)}
        rows: list[tuple[str, list[Cell]]] = []
        for h in sorted(inv.hosts, key=lambda h: order.get(h.site, (True, 99))):
            lost = h.state is HostState.LOST
            used = None if h.free_kib is None else h.memory_kib - h.free_kib
            errors, warnings = counts.get(h.name, (0, 0))
            cpu = vcpus.get(h.name, 0)
            rows.append((h.name, [
                Text(h.name, style="bold"),
                h.site,
                Text(h.state.value, style="red" if lost else "green"),
                _cpu(use.get(h.name), lost),
                Text(f"{cpu}/{h.threads}", style="yellow" if h.threads and cpu > h.threads else ""),
                meter(used, h.memory_kib) + Text(f" {kib(used)}/{kib(h.memory_kib)}"),
                str(len(h.numa)) if h.numa else Text("?", style="dim"),
                f"{running.get(h.name, 0)}/{total.get(h.name, 0)}",
                _alerts(errors, warnings),
            ]))
        self.set_rows(rows)


def _cpu(fraction: float | None, lost: bool) -> Text:
    if fraction is None:
        return Text("?" if lost else "…", style="dim")  # … until a second sample gives a rate
    return meter(round(fraction * 1000), 1000, width=5) + Text(f" {fraction * 100:3.0f}%")


def _alerts(errors: int, warnings: int) -> Text:
    if not errors and not warnings:
        return Text("ok", style="green")
    return Text.assemble((f"{errors}✖ " if errors else "", "bold red"), (f"{warnings}⚠" if warnings else "", "yellow"))
