"""VMs: a sortable, filterable table, a detail pane, and lifecycle actions."""

from __future__ import annotations

import operator
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable

from backends.analysis import vm_flags
from backends.models import Inventory, Vm
from backends.requests import BalloonRequest, LifecycleAction, RebalanceRequest
from backends.vnuma import fits_on
from console.actions import bindings
from console.choices import rebalance_targets
from console.screens.base import InventoryScreen, pane
from console.screens.input_dialog import InputScreen
from widgets.vm_detail import VmDetail
from widgets.vm_table import VmTable

SORTS = ("name", "host", "state", "vcpus", "memory")


class VmsScreen(InventoryScreen):
    SCOPE = "vms"
    BINDINGS = bindings("vms")
    TITLE_TEXT = "VMs"

    def __init__(self) -> None:
        super().__init__()
        self.sort = 0
        # What the table was last shown from: VMs, sort, replicated and lagging VM names.
        self._table_shows: tuple[tuple[Vm, ...], int, set[str], set[str]] | None = None
        self._detail: tuple[tuple[object, ...], tuple[Any, ...]] | None = None  # (made from, the detail's facts)

    def compose_body(self) -> ComposeResult:
        with pane("vms-pane", "VMs"):
            yield VmTable(id="vms")
        with pane("detail-pane", "Detail", scrolls=True):
            yield VmDetail(id="detail")

    def show(self, inv: Inventory) -> None:
        super().show(inv)
        replicated = {r.vm for r in inv.replicas}
        lagging = {r.vm for r in inv.replicas if r.rpo_violated}
        if not self._update_table(inv.vms, replicated, lagging):
            self.query_one(VmTable).show(sorted(inv.vms, key=_sort_key(SORTS[self.sort])), replicated, lagging)
        self._table_shows = (inv.vms, self.sort, replicated, lagging)
        title = f"VMs · sorted by {SORTS[self.sort]}"
        if self.query_one("#vms-pane").border_title != title:
            self.query_one("#vms-pane").border_title = title
        self._show_detail()

    def _update_table(self, vms: tuple[Vm, ...], replicated: set[str], lagging: set[str]) -> bool:
        """Update only the rows whose VM changed (backends keep unchanged VMs as the same objects),
        when the table was shown from a snapshot of the same VMs in the same order, sorted the same,
        and no changed VM moves in the sort. False: show the whole table."""
        before = self._table_shows
        if before is None or before[1] != self.sort or len(before[0]) != len(vms):
            return False
        key = _sort_key(SORTS[self.sort])
        changed = [] if before[0] is vms else [(a, b) for a, b in zip(before[0], vms, strict=True) if a is not b]
        if any(a.name != b.name or key(a) != key(b) for a, b in changed):
            return False
        marked = (replicated ^ before[2]) | (lagging ^ before[3])
        return not (changed or marked) or self.query_one(VmTable).update(changed, marked, replicated, lagging)

    def apply_filter(self, text: str) -> None:
        self.query_one(VmTable).set_filter(text)
        self._show_detail()

    @on(DataTable.RowHighlighted, "#vms")
    def _highlighted(self) -> None:
        self._show_detail()

    def selected(self) -> Vm | None:
        table = self.query_one(VmTable)
        return table.vm(table.current_key)

    def _show_detail(self) -> None:
        inv, vm = self.hvc.inventory, self.selected()
        if inv is None:
            return
        source = (vm, inv.vms, inv.hosts, inv.chains)
        kept = self._detail
        if kept is None or not all(map(operator.is_, kept[0], source)):
            # What only changes with the VMs, hosts or chains (each a scan of the fleet) is kept
            # while the snapshot hands back the same ones.
            host = inv.host(vm.host) if vm else None
            chains = [c for c in inv.chains if vm and c.vm == vm.name and c.host == vm.host]
            flags = vm_flags(vm, host, inv.vms_on(vm.host)) if vm else []
            site = [h for h in inv.hosts if host and h.site == host.site and h.numa]
            fits = fits_on(inv, vm, site) if vm and vm.active else []
            kept = self._detail = (source, (host, chains, flags, fits))
        host, chains, flags, fits = kept[1]
        replicas = [r for r in inv.replicas if vm and r.vm == vm.name]
        self.query_one(VmDetail).show(vm, host, chains, replicas, flags, fits)

    def action_sort(self) -> None:
        self.sort = (self.sort + 1) % len(SORTS)
        if self.hvc.inventory:
            self.show(self.hvc.inventory)

    def _lifecycle(self, action: LifecycleAction) -> None:
        vm = self.selected()
        if vm is not None:
            self.hvc.lifecycle(vm, action)

    def action_vm_start(self) -> None:
        self._lifecycle(LifecycleAction.START)

    def action_vm_shutdown(self) -> None:
        self._lifecycle(LifecycleAction.SHUTDOWN)

    def action_vm_reboot(self) -> None:
        self._lifecycle(LifecycleAction.REBOOT)

    def action_vm_force_off(self) -> None:
        self._lifecycle(LifecycleAction.FORCE_OFF)

    def action_vm_migrate(self) -> None:
        vm = self.selected()
        if vm is not None:
            self.hvc.pick_migration(vm)

    def action_vm_rebalance(self) -> None:
        vm, inv = self.selected(), self.hvc.inventory
        if vm is None or inv is None:
            return

        def chosen(value: str | None) -> None:
            if value:
                node, cell = (int(x) for x in value.split(":"))
                self.hvc.operate(RebalanceRequest(vm.name, node, to_cell=cell),
                                 f"Move vNUMA cell {node} of {vm.name} to cell {cell}?")

        self.hvc.pick(f"Rebalance {vm.name}: move a vNUMA cell's memory to…",
                      lambda: rebalance_targets(self.hvc.backend, inv, vm), chosen)

    def action_vm_balloon(self) -> None:
        vm = self.selected()
        if vm is None:
            return
        from backends.errors import BadInput
        from backends.units import format_kib, parse_size_kib

        res = vm.residency
        detail = f"now {format_kib(vm.memory_kib)}, at most {format_kib(vm.max_memory_kib or vm.memory_kib)}"
        if res is not None and res.pinned_kib:
            detail += f"; {format_kib(res.pinned_kib)} pinned for DMA" + (" (all of it)" if res.locked else "")

        def entered(size: str | None) -> None:
            if not size:
                return
            try:
                kib = parse_size_kib(size)
            except BadInput as exc:
                self.set_status(exc.one_line())
                return
            self.hvc.operate(BalloonRequest(vm.name, kib, host=vm.host))

        self.app.push_screen(InputScreen(f"Balloon {vm.name} to…", detail, placeholder="e.g. 12G"), entered)

    def action_vm_pause(self) -> None:
        vm = self.selected()
        if vm is not None:
            self._lifecycle(LifecycleAction.RESUME if vm.state.value == "paused" else LifecycleAction.PAUSE)


def _sort_key(field: str):  # type: ignore[no-untyped-def]
    if field in ("vcpus", "memory"):
        return lambda v: (-(v.vcpus if field == "vcpus" else v.memory_kib), v.name)
    return lambda v: (str(getattr(v, field)), v.name)
