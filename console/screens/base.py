"""What every view shares: a summary line, a filter bar, the inventory, the keys."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Input, Static

from backends.analysis import Severity
from backends.models import HostState, Inventory
from widgets.footer import Footer

if TYPE_CHECKING:
    from console.app import HvcApp


class InventoryScreen(Screen[None]):
    """A view of the inventory; the app calls ``show`` with every new snapshot."""

    SCOPE = "app"
    TITLE_TEXT = ""

    def __init__(self) -> None:
        super().__init__()
        self._shown: Inventory | None = None  # the snapshot shown last
        self._summary: Text | None = None  # the summary line drawn last
        self._drawn_from: dict[str, tuple[object, ...]] = {}  # see unchanged()

    @property
    def hvc(self) -> HvcApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        yield from self.compose_body()
        yield Input(placeholder="filter…  (enter keeps it, esc clears)", id="filter")
        yield Static(id="status")
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        if self.hvc.inventory is not None:
            self.show(self.hvc.inventory)

    def on_screen_resume(self) -> None:
        # Mounting showed it already when the view is new: at 10,000 VMs a second pass costs ~0.3 s.
        if self.hvc.inventory is not None and self.hvc.inventory is not self._shown:
            self.show(self.hvc.inventory)

    def show(self, inv: Inventory) -> None:
        self._shown = inv
        line = summary(inv, self.TITLE_TEXT, self.hvc)
        if line != self._summary:  # an update re-renders the whole screen: only on change
            self._summary = line
            self.query_one("#summary", Static).update(line, layout=False)  # one line high (console.tcss)

    def unchanged(self, part: str, *sources: object) -> bool:
        """Whether ``part`` of the view was last drawn from these very objects (backends hand back
        unchanged parts of a snapshot as the same objects, so an idle refresh redraws nothing);
        if not, they are recorded as what it is drawn from now."""
        drawn = self._drawn_from
        kept = drawn.get(part)
        if kept is not None and len(kept) == len(sources) and all(map(operator.is_, kept, sources)):
            return True
        drawn[part] = sources
        return False

    # -- filtering ---------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def apply_filter(self, text: str) -> None:
        """Screens with a list override this."""

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.apply_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_kept(self, event: Input.Submitted) -> None:
        box = self.query_one("#filter", Input)
        box.display = bool(box.value)
        self.focus_next()

    def key_escape(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.apply_filter("")
            self.focus_next()

    def set_status(self, text: str | Text, error: bool = False) -> None:
        """``text`` as it is: a str is not read as markup (it carries names and libvirt's messages)."""
        status = self.query_one("#status", Static)
        # One line high (console.tcss): no layout pass, which costs tens of ms at 10,000 VMs.
        status.update(Text(text) if isinstance(text, str) else text, layout=False)
        status.set_class(error, "-error")


def pane(pane_id: str, title: str, *, scrolls: bool = False) -> Vertical:
    """A bordered, titled region of a view (``with pane(...): yield widget``). One that ``scrolls``
    takes focus (tab) and scrolls with the arrow and page keys: for text longer than the pane."""
    box = VerticalScroll(id=pane_id, classes="pane") if scrolls else Vertical(id=pane_id, classes="pane")
    box.border_title = title
    return box


def summary(inv: Inventory, title: str, app: HvcApp) -> Text:
    found = app.alerts
    errors = sum(1 for a in found if a.severity is Severity.ERROR)
    lost = sum(1 for h in inv.hosts if h.state is HostState.LOST)
    text = Text.assemble(
        (f" {title} ", "bold reverse"), "  ",
        (app.backend.name, "bold"), " · read-only" if app.backend.read_only else "",
        f" · {len(inv.hosts)} hosts · {len(inv.vms)} VMs · {len(inv.devices)} devices",
    )
    if lost:
        text.append(f" · {lost} lost", style="bold red")
    if errors:
        text.append(f" · {errors} errors", style="red")
    if len(found) - errors:
        text.append(f" · {len(found) - errors} warnings", style="yellow")
    running = len(app.jobs.running())
    if running:
        text.append(f" · {running} jobs running", style="cyan")
    return text
