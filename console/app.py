"""The Textual app: routes messages between the backend poller and the views."""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Header, Static

from backends.base import Backend, Change
from backends.errors import HvcError
from backends.models import Inventory
from console.messages import BackendFailed, InventoryUpdated
from widgets.host_list import HostList
from widgets.vm_table import VmTable

REFRESH_S = 2.0


class HvcApp(App[None]):
    CSS_PATH = "console.tcss"
    TITLE = "hvc"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        ("q", "quit", "Quit"),
        ("r", "refresh", "Refresh"),
        ("tab", "focus_next", "Next pane"),
    ]

    def __init__(self, backend: Backend, *, refresh_s: float = REFRESH_S) -> None:
        super().__init__()
        self.backend = backend
        self.refresh_s = refresh_s
        self.inventory: Inventory | None = None
        self.selected_host: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="body"):
            with Vertical(id="hosts-pane") as hosts:
                hosts.border_title = "Hosts"
                yield HostList(id="hosts")
            with Vertical(id="vms-pane") as vms:
                vms.border_title = "VMs"
                yield VmTable(id="vms")
        yield Static("connecting…", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"{self.backend.name}{' · read-only' if self.backend.read_only else ''}"
        self._unwatch = self.backend.watch(self._on_change)
        self.show(self.backend.snapshot())
        self.poll()

    def on_unmount(self) -> None:
        self._unwatch()

    def _on_change(self, change: Change) -> None:
        # Called from backend threads; post_message is the thread-safe way in.
        self.post_message(InventoryUpdated(self.backend.snapshot()))

    @work(thread=True, exclusive=True, group="poll")
    def poll(self) -> None:
        """One refresh off the UI loop; the next is armed only after this one finished."""
        try:
            self.post_message(InventoryUpdated(self.backend.refresh()))
        except HvcError as exc:
            self.post_message(BackendFailed(exc.one_line()))
        finally:
            self.call_from_thread(self.set_timer, self.refresh_s, self.poll)

    def action_refresh(self) -> None:
        self.poll()

    @on(InventoryUpdated)
    def _updated(self, message: InventoryUpdated) -> None:
        self.show(message.inventory)

    @on(BackendFailed)
    def _failed(self, message: BackendFailed) -> None:
        status = self.query_one("#status", Static)
        status.update(f"refresh failed: {message.error}")
        status.add_class("-error")

    @on(DataTable.RowHighlighted, "#hosts")
    def _host_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selected_host = event.row_key.value
        if self.inventory:
            self._show_vms(self.inventory)

    def show(self, inv: Inventory) -> None:
        self.inventory = inv
        self.query_one(HostList).show(inv)
        self._show_vms(inv)
        lost = sum(1 for h in inv.hosts if h.state.value == "lost")
        status = self.query_one("#status", Static)
        status.remove_class("-error")
        status.update(
            f"{len(inv.hosts)} hosts · {len(inv.vms)} VMs · {len(inv.devices)} devices"
            + (f" · {lost} lost" if lost else "")
        )

    def _show_vms(self, inv: Inventory) -> None:
        vms = inv.vms_on(self.selected_host) if self.selected_host else inv.vms
        pane = self.query_one("#vms-pane")
        pane.border_title = f"VMs on {self.selected_host}" if self.selected_host else "VMs"
        self.query_one(VmTable).show(vms)
