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
    """Rows are keyed by the VM's UUID, which a migration keeps (so the row is updated in place,
    not the table rebuilt); should a UUID show twice (mid-migration on two hosts), the later
    row's key is ``uuid@host``. ``vm(key)`` is the VM a row shows."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(("VM", "host", "state", "vCPUs", "memory", "vNUMA", "devices", "replica",
                          "res/pin"), **kwargs)
        self._made: dict[str, tuple[tuple[object, ...], tuple[Cell, ...]]] = {}  # key → (what is shown, its cells)
        self._vms: dict[str, Vm] = {}  # key → the VM its row shows

    def show(self, vms: Iterable[Vm], replicated: Collection[str] = (), lagging: Collection[str] = ()) -> None:
        """Cells are made only for VMs whose shown facts changed; others keep the same tuple, which
        the table skips without comparing."""
        rows: list[tuple[str, tuple[Cell, ...]]] = []
        made: dict[str, tuple[tuple[object, ...], tuple[Cell, ...]]] = {}
        keyed: dict[str, Vm] = {}
        for vm in vms:
            key = vm.uuid if vm.uuid not in keyed else f"{vm.uuid}@{vm.host}"
            keyed[key] = vm
            shown = (vm.name, vm.host, vm.state, vm.vcpus, vm.memory_kib, vm.vnuma, len(vm.devices), vm.name in lagging,
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
        self._vms = keyed
        self.set_rows(rows)

    def vm(self, key: str | None) -> Vm | None:
        """The VM the row ``key`` shows (None for no row)."""
        return self._vms.get(key) if key is not None else None

    def key_of(self, name: str, host: str) -> str | None:
        """The row key of VM ``name`` on ``host``, if it has a row."""
        return next((k for k, v in self._vms.items() if v.name == name and v.host == host), None)


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
