"""Replication: each replicated disk, its lag against its RPO, and both chains side by side."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable

from backends.models import Inventory, LayerState, ReplicaLink
from backends.requests import FailoverRequest, ReplicateRequest
from console.actions import bindings
from console.screens.base import InventoryScreen, pane
from widgets.chain_view import ChainView
from widgets.keyed_table import Cell, KeyedTable, Since
from widgets.text import duration


class ReplicaTable(KeyedTable):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(("VM", "disk", "primary", "replica", "layers", "lag", "RPO", "state"), ticking=("lag",),
                         **kwargs)


class ReplicationScreen(InventoryScreen):
    SCOPE = "replication"
    BINDINGS = bindings("replication")
    TITLE_TEXT = "Replication"

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, tuple[tuple[object, ...], tuple[Cell, ...]]] = {}  # row → (what it shows, cells)

    def compose_body(self) -> ComposeResult:
        with pane("replicas-pane", "Replicated disks"):
            yield ReplicaTable(id="replicas")
        with pane("chain-pane", "Chain at primary and replica"):
            yield ChainView(id="chain")

    def show(self, inv: Inventory) -> None:
        super().show(inv)
        rows: list[tuple[str, tuple[Cell, ...]]] = []
        made: dict[str, tuple[tuple[object, ...], tuple[Cell, ...]]] = {}
        for r in sorted(inv.replicas, key=lambda r: (not r.rpo_violated, r.vm, r.disk)):
            key = f"{r.vm}/{r.disk}"
            # The lag is not among them: it is read from the last sync at each tick of the table,
            # which draws the rows on screen again; a row changes when a sync ends or the RPO is crossed.
            facts = (r.primary_host, r.replica_host, r.layer_states, r.last_sync, r.rpo_s, r.rpo_violated)
            kept = self._made.get(key)
            if kept is None or kept[0] != facts:
                kept = (facts, _cells(r))
            made[key] = kept
            rows.append((key, kept[1]))
        self._made = made
        table = self.query_one(ReplicaTable)
        table.tick(inv.taken_at)
        table.set_rows(rows)
        self._show_chain()

    def apply_filter(self, text: str) -> None:
        self.query_one(ReplicaTable).set_filter(text)
        self._show_chain()

    def action_replica_sync(self) -> None:
        if vm := _selected_vm(self):
            self.hvc.operate(ReplicateRequest(vm))

    def action_replica_test_failover(self) -> None:
        if vm := _selected_vm(self):
            self.hvc.operate(FailoverRequest(vm, test=True))

    def action_replica_failover(self) -> None:
        if vm := _selected_vm(self):
            self.hvc.operate(FailoverRequest(vm, test=False), f"Fail {vm} over to its recovery site for real?")

    @on(DataTable.RowHighlighted, "#replicas")
    def _show_chain(self) -> None:
        inv, key = self.hvc.inventory, self.query_one(ReplicaTable).current_key
        if inv is None or key is None:
            return
        link = next((r for r in inv.replicas if f"{r.vm}/{r.disk}" == key), None)
        if link:
            self.query_one(ChainView).show(link.primary, link)


def _selected_vm(screen: ReplicationScreen) -> str | None:
    key = screen.query_one(ReplicaTable).current_key
    return key.split("/")[0] if key else None


def _cells(r: ReplicaLink) -> tuple[Cell, ...]:
    present = sum(1 for s in r.layer_states if s is LayerState.PRESENT)
    shipping = any(s is LayerState.SHIPPING for s in r.layer_states)
    state = (Text("RPO violated", style="bold red") if r.rpo_violated
             else Text("shipping", style="yellow") if shipping else Text("in sync", style="green"))
    return (r.vm, r.disk, r.primary_host, r.replica_host, f"{present}/{len(r.layer_states)}",
            Since(r.last_sync, style="red" if r.rpo_violated else ""), duration(r.rpo_s), state)

