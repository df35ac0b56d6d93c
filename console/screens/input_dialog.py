"""Ask for one value (a size, a name) in a dialog; enter submits, escape cancels."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class InputScreen(ModalScreen[str | None]):
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(self, title: str, detail: str = "", value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text, self.detail, self.value, self.placeholder = title, detail, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="dialog-title")
            if self.detail:
                yield Static(self.detail)
            yield Input(self.value, placeholder=self.placeholder, id="value")
            yield Static("[b]enter[/b] ok · [b]esc[/b] cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)
