"""The VM table: name, host, state, vCPUs, memory, vNUMA placement and devices."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from backends.models import Vm
from backends.units import format_kib as kib
from widgets.keyed_table import Cell, KeyedTable
from widgets.text import vm_state


class VmTable(KeyedTable):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(("VM", "host", "state", "vCPUs", "memory", "vNUMA", "devices"), **kwargs)

    def show(self, vms: Iterable[Vm]) -> None:
        rows: list[tuple[str, list[Cell]]] = []
        for vm in vms:
            vnuma = " ".join(
                f"{n.id}→{','.join(map(str, n.backing_cells)) or '?'}" for n in vm.vnuma
            ) or Text("-", style="dim")
            rows.append((vm.name, [
                vm.name, vm.host, vm_state(vm.state), str(vm.vcpus), kib(vm.memory_kib),
                vnuma, str(len(vm.devices)) if vm.devices else Text("-", style="dim"),
            ]))
        self.set_rows(rows)
