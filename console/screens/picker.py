"""Pick one of several targets; choices that cannot work are shown with the reason, disabled."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


class PickerScreen(ModalScreen[str | None]):
    """``choices``: (value, label, why it cannot work or None)."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("j", "cursor_down", show=False),
        Binding("k", "cursor_up", show=False),
    ]

    def __init__(self, title: str, choices: list[tuple[str, str, str | None]]) -> None:
        super().__init__()
        self.title_text, self.choices = title, choices

    def compose(self) -> ComposeResult:
        options = [
            Option(Text(label) if why is None else Text.assemble((label, "dim"), ("  — " + why, "dim italic")),
                   id=value, disabled=why is not None)
            for value, label, why in self.choices
        ]
        with Vertical(id="dialog", classes="picker"):
            yield Static(self.title_text, id="dialog-title")
            yield OptionList(*options, id="choices")
            yield Static("[b]enter[/b] choose · [b]esc[/b] cancel", classes="hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        first = next((i for i, (_, _, why) in enumerate(self.choices) if why is None), None)
        if first is not None:
            options.highlighted = first

    def action_cursor_down(self) -> None:
        self.query_one(OptionList).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(OptionList).action_cursor_up()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
