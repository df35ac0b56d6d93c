"""The list of hosts with their state, CPU, memory use and VM count."""

from __future__ import annotations

from rich.text import Text

from backends.models import HostState, Inventory
from backends.units import format_kib as kib
from widgets.keyed_table import Cell, KeyedTable
from widgets.text import meter


class HostList(KeyedTable):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(("host", "site", "state", "cells", "threads", "memory used", "VMs"), **kwargs)

    def show(self, inv: Inventory) -> None:
        counts: dict[str, int] = {}
        for vm in inv.vms:
            counts[vm.host] = counts.get(vm.host, 0) + 1
        rows: list[tuple[str, list[Cell]]] = []
        for h in inv.hosts:
            lost = h.state is HostState.LOST
            used = None if h.free_kib is None else h.memory_kib - h.free_kib
            rows.append((h.name, [
                Text(h.name, style="bold"),
                h.site,
                Text(h.state.value, style="red" if lost else "green"),
                str(len(h.numa)) if h.numa else "?",
                str(h.threads),
                meter(used, h.memory_kib) + Text(f" {kib(used)}/{kib(h.memory_kib)}"),
                str(counts.get(h.name, 0)),
            ]))
        self.set_rows(rows)
