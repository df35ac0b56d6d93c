"""The VM table: name, host, state, vCPUs, memory, vNUMA placement, devices, replication."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from rich.text import Text

from backends.models import Vm
from backends.units import format_kib as kib
from widgets.keyed_table import Cell, KeyedTable
from widgets.text import ellipsis, vm_state

NONE = Text("-", style="dim")


class VmTable(KeyedTable):
    """Rows are keyed ``name@host``: a VM name may exist on two hosts (after a migration)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(("VM", "host", "state", "vCPUs", "memory", "vNUMA", "devices", "replica",
                          "res/pin"), **kwargs)
        self._made: dict[str, tuple[tuple[object, ...], tuple[Cell, ...]]] = {}  # key → (what is shown, its cells)

    def show(self, vms: Iterable[Vm], replicated: Collection[str] = (), lagging: Collection[str] = ()) -> None:
        """Cells are made only for VMs whose shown facts changed; others keep the same tuple, which
        the table skips without comparing."""
        rows: list[tuple[str, tuple[Cell, ...]]] = []
        made: dict[str, tuple[tuple[object, ...], tuple[Cell, ...]]] = {}
        for vm in vms:
            key = f"{vm.name}@{vm.host}"
            shown = (vm.state, vm.vcpus, vm.memory_kib, vm.vnuma, len(vm.devices), vm.name in lagging,
                     vm.name in replicated, vm.residency)
            before = self._made.get(key)
            if before is not None and before[0] == shown:
                made[key] = before
                rows.append((key, before[1]))
                continue
            vnuma = " ".join(f"{n.id}→{','.join(map(str, n.backing_cells)) or '?'}" for n in vm.vnuma)
            replica = (Text("behind", style="red") if vm.name in lagging
                       else Text("ok", style="green") if vm.name in replicated else NONE)
            cells: tuple[Cell, ...] = (
                ellipsis(vm.name, 24), ellipsis(vm.host, 20), vm_state(vm.state), str(vm.vcpus),
                kib(vm.memory_kib), vnuma or NONE, str(len(vm.devices)) if vm.devices else NONE, replica,
                residency_cell(vm),
            )
            made[key] = (shown, cells)
            rows.append((key, cells))
        self._made = made
        self.set_rows(rows)


def residency_cell(vm: Vm) -> Cell:
    """S3 in one short cell: resident share of memory, then what is pinned ('all' when locked)."""
    res = vm.residency
    if res is None or (res.resident_kib is None and not res.pinned_kib):
        return NONE
    share = "?" if res.resident_kib is None or not vm.memory_kib else f"{100 * res.resident_kib // vm.memory_kib}%"
    if res.locked:
        return Text(f"{share}/all", style="yellow")
    if not res.pinned_kib:
        return Text(share)
    return Text(f"{share}/{kib(res.pinned_kib)}", style="red" if res.refused_reclaims else "")
