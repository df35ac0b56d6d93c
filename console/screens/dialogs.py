"""Modal dialogs: the keys of a view, and confirmation of a destructive action."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console.actions import in_scope, key_label


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def __init__(self, scope: str, keymap: dict[str, str]) -> None:
        super().__init__()
        self.scope, self.keymap = scope, keymap

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for title, scope in ((f"this view ({self.scope})", self.scope), ("everywhere", "app")):
            actions = in_scope(scope)
            if not actions:
                continue
            table.add_row("", f"[b]{title}[/b]")
            for action in actions:
                table.add_row(key_label(action, self.keymap), action.description)
        table.add_row("", "[b]in lists[/b]")
        for keys, text in (("j k ↑ ↓", "move"), ("g G", "first / last"), ("tab", "next pane")):
            table.add_row(keys, text)
        with VerticalScroll(id="dialog", classes="help"):
            yield Static("Keys", id="dialog-title")
            yield Static(table)
            yield Static("remap keys in ~/.config/hvc/config.toml under [keys]", markup=False, classes="hint")


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question, self.detail = question, detail

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="dialog-title")
            if self.detail:
                yield Static(self.detail)
            yield Static("[b]y[/b] yes · [b]n[/b]/esc no", classes="hint")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
