"""Simulated vNUMA rebalancing (S9): move one vNUMA cell's memory to another physical cell,
or grow or shrink it, page by page. A VM without vNUMA is treated as one cell, vnode 0.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput
from backends.models import CellShare, JobKind, JobResult, Outcome, PhaseChanged, Vm, VNumaCell
from backends.progress import Meter
from backends.requests import RebalanceRequest
from backends.units import format_kib

PAGE_KIB = 4
MOVE_PAGES_S = 512 * 1024  # 2 GiB/s of page migration between cells
TICK_S = 0.25
MIN_NODE_KIB = 256 * 1024

if TYPE_CHECKING:
    from backends.sim.backend import SimBackend


class SimRebalance(Operation):
    def __init__(self, backend: SimBackend, request: RebalanceRequest) -> None:
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        host = inv.host(vm.host)
        if host is None:
            raise BadInput(f"{vm.host} is not in the inventory")
        nodes = _nodes(vm)
        node = next((n for n in nodes if n.id == request.vnode), None)
        if node is None:
            raise BadInput(f"{vm.name} has no vNUMA cell {request.vnode}",
                           hint=f"its cells are {', '.join(str(n.id) for n in nodes)}")
        if (request.to_cell is None) == (request.memory_kib is None):
            raise BadInput("say either --to-cell CELL or --memory SIZE")
        cells = {c.id: c for c in host.numa}
        if request.to_cell is not None:
            target = cells.get(request.to_cell)
            if target is None:
                raise BadInput(f"{host.name} has no cell {request.to_cell}",
                               hint=f"its cells are {', '.join(str(c) for c in cells)}")
            moving = sum(s.memory_kib or 0 for s in node.backing if s.cell != target.id)
            if moving == 0:
                raise BadInput(f"vNUMA cell {node.id} of {vm.name} is already on cell {target.id}")
            if (target.free_kib or 0) < moving:
                raise BadInput(f"cell {target.id} of {host.name} has {format_kib(target.free_kib)} free, "
                               f"{format_kib(moving)} would move there", hint="free memory on it or pick another cell")
            self.pages = moving // PAGE_KIB
            what = f"move vNUMA cell {node.id} of {vm.name} to cell {target.id}"
        else:
            new = request.memory_kib or 0
            others = vm.memory_kib - node.memory_kib
            limit = vm.max_memory_kib or vm.memory_kib
            if new < MIN_NODE_KIB:
                raise BadInput(f"{format_kib(new)} is below the {format_kib(MIN_NODE_KIB)} a vNUMA cell needs")
            if others + new > limit:
                raise BadInput(f"{vm.name} would have {format_kib(others + new)}, above its maximum "
                               f"{format_kib(limit)}", hint="raise the maximum memory first (needs a restart)")
            grow = new - node.memory_kib
            cell = cells.get(node.backing[0].cell) if node.backing else None
            if grow > 0 and cell is not None and (cell.free_kib or 0) < grow:
                raise BadInput(f"cell {cell.id} of {host.name} has {format_kib(cell.free_kib)} free; "
                               f"growing needs {format_kib(grow)}")
            if grow == 0:
                raise BadInput(f"vNUMA cell {node.id} of {vm.name} already has {format_kib(new)}")
            self.pages = abs(grow) // PAGE_KIB
            what = f"{'grow' if grow > 0 else 'shrink'} vNUMA cell {node.id} of {vm.name} to {format_kib(new)}"
        self.backend, self.vm, self.node, self.request = backend, vm, node, request
        super().__init__(new_job(JobKind.REBALANCE, (vm.name,), ("moving",), what))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        clock, job = self.backend.clock, self.job
        started = clock.now()
        meter = Meter(job.id, "pages", clock.now)
        emit(PhaseChanged(job.id, "moving", job.description, at=started))
        done = 0
        while done < self.pages:
            if cancel.is_set():
                # Pages already moved stay valid where they are: record the partial move.
                self._apply(done)
                return JobResult(job.id, Outcome.CANCELLED, f"cancelled after {done} of {self.pages} pages; "
                                 "the VM's placement reflects what moved", started, clock.now())
            clock.sleep(TICK_S)
            done = min(self.pages, done + int(MOVE_PAGES_S * TICK_S))
            emit(meter.sample("moving", done, self.pages - done, detail={"vnode": self.node.id}))
        self._apply(done)
        return JobResult(job.id, Outcome.SUCCEEDED, "", started, clock.now())

    def _apply(self, pages: int) -> None:
        kib = pages * PAGE_KIB
        with self.backend.lock:
            vm = self.backend.state.vms[self.vm.name]
            nodes = list(_nodes(vm))
            node = next(n for n in nodes if n.id == self.node.id)
            if self.request.to_cell is not None:
                target = self.request.to_cell
                left = {s.cell: s.memory_kib or 0 for s in node.backing if s.cell != target}
                moved = 0
                for cell in sorted(left):  # drain the source cells in order
                    take = min(left[cell], kib - moved)
                    left[cell] -= take
                    moved += take
                on_target = sum(s.memory_kib or 0 for s in node.backing if s.cell == target) + moved
                backing = (*(CellShare(c, k) for c, k in sorted(left.items()) if k), CellShare(target, on_target))
                new_node = replace(node, backing=tuple(sorted(backing, key=lambda s: s.cell)))
            else:
                grow = (self.request.memory_kib or 0) - node.memory_kib
                delta = kib if grow > 0 else -kib
                first = node.backing[0]
                backing = (replace(first, memory_kib=(first.memory_kib or 0) + delta), *node.backing[1:])
                new_node = replace(node, memory_kib=node.memory_kib + delta, backing=backing)
            self.backend.state.vms[vm.name] = _with_node(vm, new_node)
        self.backend.refresh()


def _nodes(vm: Vm) -> tuple[VNumaCell, ...]:
    """The VM's vNUMA cells; a VM without vNUMA is one cell holding all its memory."""
    if vm.vnuma:
        return vm.vnuma
    placed = vm.memory_by_cell() or {}
    backing = tuple(CellShare(c, k) for c, k in sorted(placed.items()))
    return (VNumaCell(0, tuple(range(vm.vcpus)), vm.memory_kib, backing),)


def _with_node(vm: Vm, node: VNumaCell) -> Vm:
    if vm.vnuma:
        vnuma = tuple(node if n.id == node.id else n for n in vm.vnuma)
        return replace(vm, vnuma=vnuma, memory_kib=sum(n.memory_kib for n in vnuma))
    cells = tuple(s.cell for s in node.backing)
    if len(cells) == 1:
        return replace(vm, memory_nodeset=cells, memory_kib=node.memory_kib)
    return replace(vm, vnuma=(node,), memory_kib=node.memory_kib)  # a split: only vNUMA can say so
