"""Storage services (S8): each service, the identifier its VF carries, and where it runs; move one."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from backends.errors import HvcError
from backends.models import Inventory, StorageService
from backends.requests import ServiceMoveRequest
from backends.services import destinations
from console.actions import bindings
from console.screens.base import InventoryScreen, pane
from widgets.keyed_table import Cell, KeyedTable
from widgets.text import vm_state


class ServiceTable(KeyedTable):
    def __init__(self, **kwargs: object) -> None:
        # Where it runs first: at 80 columns the VM and protocol are what scrolls off.
        super().__init__(("service", "identifier", "host", "VF", "state", "VM", "protocol"), **kwargs)


class ServicesScreen(InventoryScreen):
    SCOPE = "services"
    BINDINGS = bindings("services")
    TITLE_TEXT = "Storage services"

    def compose_body(self) -> ComposeResult:
        with pane("services-pane", "Storage services · identifier on an SR-IOV VF"):
            yield ServiceTable(id="services")
        with pane("service-detail-pane", "Where it can move (the identifier goes with it)"):
            yield Static(id="service-detail")

    def show(self, inv: Inventory) -> None:
        super().show(inv)
        if self.unchanged("services", inv.services, inv.vms, inv.hosts, inv.devices):
            return
        rows: list[tuple[str, list[Cell]]] = []
        by_place = {(v.name, v.host): v for v in inv.vms}
        for s in sorted(inv.services, key=lambda s: s.name):
            vm = by_place.get((s.vm, s.host))
            state = (Text("unbound", style="bold yellow") if s.vf is None
                     else vm_state(vm.state) if vm else Text("VM gone", style="red"))
            vf = Text(s.vf.removeprefix("0000:")) if s.vf else Text("—", style="dim")
            rows.append((s.name, [s.name, Text(s.identifier, style="magenta"), s.host, vf, state, s.vm, s.protocol]))
        self.query_one(ServiceTable).set_rows(rows)
        if not inv.services:
            self.query_one("#service-detail", Static).update(Text(
                "No storage services. Declare them in the fleet file ([[services]]) or, on libvirt, with "
                "<hvc:service> in the domain's <metadata>.", style="dim"))
            return
        self._show_detail()

    def apply_filter(self, text: str) -> None:
        self.query_one(ServiceTable).set_filter(text)
        self._show_detail()

    def selected(self) -> StorageService | None:
        inv, key = self.hvc.inventory, self.query_one(ServiceTable).current_key
        return next((s for s in inv.services if s.name == key), None) if inv and key else None

    @on(DataTable.RowHighlighted, "#services")
    def _show_detail(self) -> None:
        inv, svc = self.hvc.inventory, self.selected()
        if inv is None or svc is None:
            return
        text = Text.assemble((svc.name, "bold"), f" ({svc.protocol}) · ", (svc.identifier, "magenta"),
                             f" on VF {svc.vf or '—'} · VM {svc.vm} on {svc.host}\n")
        for host, vf, why in destinations(inv, svc):
            if vf:
                text.append_text(Text.assemble("  ", ("✓ ", "green"), (host.name, "bold"), f"  VF {vf} takes it\n"))
            else:
                why = why.removeprefix(f"{host.name} ").removesuffix(f" to carry {svc.identifier}")
                text.append_text(Text.assemble("  ", ("✗ ", "dim"), (host.name, "dim"), (f"  {why}\n", "dim italic")))
        text.rstrip()
        self.query_one("#service-detail", Static).update(text)

    @on(DataTable.RowSelected, "#services")
    async def _selected(self) -> None:
        await self.action_open_vm()

    async def action_open_vm(self) -> None:
        """Jump to the service's VM in the VMs view."""
        svc = self.selected()
        if svc is None:
            return
        from widgets.vm_table import VmTable

        await self.app.switch_mode("vms")
        table = self.app.screen.query_one(VmTable)
        table.set_filter("")
        key = table.key_of(svc.vm, svc.host)
        if key is not None and key in table._rows:
            row = table.get_row_index(key)
            table.move_cursor(row=row, scroll=False)
            # Centred once the view has its size (the detail pane below grows with the new VM).
            table.call_after_refresh(lambda: table.scroll_to(
                y=max(0, row - table.scrollable_content_region.height // 2), animate=False))
        else:
            self.app.screen.set_status(f"{svc.vm} is not in the VM list")  # type: ignore[attr-defined]

    def action_service_move(self) -> None:
        svc, inv = self.selected(), self.hvc.inventory
        if svc is None or inv is None:
            self.set_status("pick a service first")
            return

        def chosen(host: str | None) -> None:
            if host:
                self.hvc.operate(ServiceMoveRequest(svc.name, host),
                                 f"Move {svc.name} ({svc.identifier}) from {svc.host} to {host}?")

        def choices() -> list[tuple[str, str, str | None]]:  # off the UI thread: prepare asks the hosts
            out: list[tuple[str, str, str | None]] = []
            for host, vf, why in destinations(inv, svc):
                if vf:  # the backend has the last word (read-only, capabilities)
                    try:
                        self.hvc.backend.prepare(ServiceMoveRequest(svc.name, host.name))
                    except HvcError as exc:
                        why = exc.message
                short = why.removeprefix(f"{host.name} ").removesuffix(f" to carry {svc.identifier}") if why else None
                out.append((host.name, f"{host.name}  ({host.site}" + (f", VF {vf})" if vf else ")"), short))
            return sorted(out, key=lambda c: c[2] is not None)

        self.hvc.pick(f"Move {svc.name} ({svc.identifier}) from {svc.host} to…", choices, chosen)
