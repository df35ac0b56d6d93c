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
        self._made: dict[str, tuple[Vm, bool, bool, tuple[Cell, ...]]] = {}  # key → (VM, behind, replicated, cells)
        self._vms: dict[str, Vm] = {}  # key → the VM its row shows
        self._keys_of: dict[str, list[str]] = {}  # VM name → its rows' keys

    def show(self, vms: Iterable[Vm], replicated: Collection[str] = (), lagging: Collection[str] = ()) -> None:
        """All rows, in the order given. Cells are made only for VMs that are not the very object
        shown before (backends keep an unchanged VM's object) or whose replica marks changed; others
        keep the same tuple, which the table skips without comparing."""
        rows: list[tuple[str, tuple[Cell, ...]]] = []
        made: dict[str, tuple[Vm, bool, bool, tuple[Cell, ...]]] = {}
        keyed: dict[str, Vm] = {}
        for vm in vms:
            key = vm.uuid if vm.uuid not in keyed else f"{vm.uuid}@{vm.host}"
            keyed[key] = vm
            behind, copied = vm.name in lagging, vm.name in replicated
            before = self._made.get(key)
            if before is None or before[0] is not vm or before[1] != behind or before[2] != copied:
                before = (vm, behind, copied, _cells(vm, behind, copied))
            made[key] = before
            rows.append((key, before[3]))
        self._made = made
        self._vms = keyed
        self._keys_of = {}
        for key, vm in keyed.items():
            self._keys_of.setdefault(vm.name, []).append(key)
        self.set_rows(rows)

    def update(self, changed: Iterable[tuple[Vm, Vm]], marked: Collection[str], replicated: Collection[str] = (),
               lagging: Collection[str] = ()) -> bool:
        """Update only the rows of ``changed`` (old VM object → new one, in the same place in the
        order) and of the VMs named in ``marked`` (their replica marks changed). False, with
        nothing changed, when a row cannot be updated in place: then ``show`` everything."""
        updates: dict[str, Vm] = {}
        for old, new in changed:
            key = next((k for k in self._keys_of.get(old.name, ()) if self._vms[k] is old), None)
            if key is None or old.uuid != new.uuid or (key != new.uuid and key != f"{new.uuid}@{new.host}"):
                return False
            updates[key] = new
        for name in marked:
            for key in self._keys_of.get(name, ()):
                updates.setdefault(key, self._vms[key])
        rows = []
        for key, vm in updates.items():
            behind, copied = vm.name in lagging, vm.name in replicated
            rows.append((key, (vm, behind, copied, _cells(vm, behind, copied))))
        if not self.update_rows([(key, made[3]) for key, made in rows]):
            return False
        for key, made in rows:
            self._made[key] = made
            self._vms[key] = made[0]
        return True

    def vm(self, key: str | None) -> Vm | None:
        """The VM the row ``key`` shows (None for no row)."""
        return self._vms.get(key) if key is not None else None

    def key_of(self, name: str, host: str) -> str | None:
        """The row key of VM ``name`` on ``host``, if it has a row."""
        return next((k for k, v in self._vms.items() if v.name == name and v.host == host), None)


def _cells(vm: Vm, behind: bool, copied: bool) -> tuple[Cell, ...]:
    vnuma = " ".join(f"{n.id}→{','.join(map(str, n.backing_cells)) or '?'}" for n in vm.vnuma)
    replica = Text("behind", style="red") if behind else Text("ok", style="green") if copied else NONE
    return (
        ellipsis(vm.name, 24), ellipsis(vm.host, 20), vm_state(vm.state), str(vm.vcpus),
        kib(vm.memory_kib), vnuma or NONE, str(len(vm.devices)) if vm.devices else NONE, replica,
        residency_cell(vm),
    )


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
