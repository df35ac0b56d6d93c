"""Where a VM's memory and vCPUs would go on a host: used by migration pre-checks and plans.

Each vNUMA cell (or the whole VM without vNUMA) must fit inside one physical cell's free
memory; cells are chosen greedily, the cell with most free memory first, so the plan is the
same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.errors import BadInput
from backends.models import Host, HostState, Inventory, Vm
from backends.units import format_kib


@dataclass(frozen=True, slots=True)
class Placement:
    """vNUMA cell (or 0 for a VM without vNUMA) → physical cell on the destination."""

    cells: dict[int, int]
    notes: tuple[str, ...] = ()


def plan_move(inv: Inventory, vm: Vm, dest: Host) -> Placement:
    """Check that ``vm`` can run on ``dest`` and say where; BadInput names what does not fit."""
    if dest.name == vm.host:
        raise BadInput(f"{vm.name} is already on {dest.name}", hint="pick another destination host")
    if dest.state is not HostState.CONNECTED:
        raise BadInput(f"{dest.name} is {dest.state.value}", hint="wait for it to come back or pick another host")
    if vm.vcpus > dest.threads:
        raise BadInput(f"{vm.name} has {vm.vcpus} vCPUs but {dest.name} has {dest.threads} threads",
                       hint="pick a larger host")
    if not dest.numa:
        raise BadInput(f"{dest.name} reports no NUMA cells, so placement cannot be checked",
                       hint="pick a host that reports its topology")
    free = {c.id: c.free_kib for c in dest.numa}
    if any(f is None for f in free.values()):
        raise BadInput(f"{dest.name} does not report free memory per cell", hint="refresh and try again")
    room: dict[int, int] = {c: f or 0 for c, f in free.items()}
    # Each cell stays on the same-numbered cell when it fits there, else the one with most room.
    wants = [(n.id, n.memory_kib, n.backing_cells[0] if n.backing else n.id) for n in vm.vnuma] or [
        (0, vm.memory_kib, vm.memory_nodeset[0] if vm.memory_nodeset else 0)]
    cells: dict[int, int] = {}
    for node, kib, same in sorted(wants, key=lambda w: -w[1]):
        best = same if room.get(same, 0) >= kib else max(room, key=lambda c: (room[c], -c))
        if room[best] < kib:
            what = f"vNUMA cell {node}" if vm.vnuma else vm.name
            raise BadInput(
                f"{dest.name} has no NUMA cell with {format_kib(kib)} free for {what} "
                f"(largest free: {format_kib(room[best])})",
                hint="free memory there, or pick another host",
            )
        cells[node] = best
        room[best] -= kib
    notes = []
    if vm.devices:
        notes.append(
            f"{vm.name} owns {', '.join(vm.devices)}: the device{'s stay' if len(vm.devices) > 1 else ' stays'} "
            f"on {vm.host} and {'are' if len(vm.devices) > 1 else 'is'} handed off to the host before switchover"
        )
    return Placement(dict(sorted(cells.items())), tuple(notes))


def find_host(inv: Inventory, name: str) -> Host:
    """A host by the name shown in the inventory, or by its URI."""
    host = next((h for h in inv.hosts if name in (h.name, h.uri)), None)
    if host is None:
        known = ", ".join(h.name for h in inv.hosts[:8])
        raise BadInput(f"no host called {name!r}", hint=f"known hosts: {known}")
    return host
