"""A DataTable that updates rows in place by key, keeping the cursor across refreshes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

Cell = str | Text


class KeyedTable(DataTable[Cell]):
    """Rows are (key, cells); unchanged rows are left alone, so refreshes stay cheap."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("h", "scroll_left", "Left", show=False),
        Binding("l", "scroll_right", "Right", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    def __init__(self, columns: Sequence[str], **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self._columns = tuple(columns)
        self._rows: dict[str, tuple[Cell, ...]] = {}  # what is shown
        self._keys: list[str] = []  # row keys in display order
        self._all: list[tuple[str, tuple[Cell, ...]]] = []  # before filtering
        self._filter = ""
        self._widths: dict[str, Counter[int]] = {}  # column → how many shown cells have each width

    def on_mount(self) -> None:
        for name in self._columns:
            self.add_column(name, key=name)

    def set_filter(self, text: str) -> None:
        """Show only rows with ``text`` in some cell (case-insensitive); '' shows all."""
        self._filter = text.strip().lower()
        self.set_rows(self._all)

    def set_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> None:
        self._all = [(key, tuple(cells)) for key, cells in rows]
        wanted = self._filter
        new = {
            key: cells for key, cells in self._all
            if not wanted or any(wanted in (c.plain if isinstance(c, Text) else c).lower() for c in cells)
        }
        if list(new) != list(self._rows):
            self._rebuild(new)
            return
        for key, cells in new.items():
            old = self._rows[key]
            if old is cells:
                continue
            for column, (before, after) in zip(self._columns, zip(old, cells, strict=True), strict=True):
                if before != after:
                    self.update_cell(key, column, after, update_width=self._width_changes(column, before, after))
        self._rows = new
        self._keys = list(new)

    def _width_changes(self, column: str, before: Cell, after: Cell) -> bool:
        """Whether the column's width may change: the new cell is wider, or the widest cell shrank
        and no other has its width. DataTable re-measures the whole column when told a cell narrowed,
        so telling it for every changed cell cost O(rows) each (seconds per refresh at 10,000 rows)."""
        widths = self._widths[column]
        old, now = _width(before), _width(after)
        widths[old] -= 1
        if not widths[old]:
            del widths[old]
        widths[now] += 1
        shown = self.columns[column].content_width  # type: ignore[index]
        return now > shown or (now < old and old >= shown and old not in widths)

    def _rebuild(self, new: dict[str, tuple[Cell, ...]]) -> None:
        current = self.current_key
        self._widths = {column: Counter(_width(cells[i]) for cells in new.values())
                        for i, column in enumerate(self._columns)}
        self.clear()
        for key, cells in new.items():
            self.add_row(*cells, key=key)
        self._rows = new
        self._keys = list(new)
        if current in new:
            row = self._keys.index(current)
            self.move_cursor(row=row, scroll=False)
            # Centre the kept row: after a filter clears, its neighbours show on both sides.
            self.call_after_refresh(self.scroll_to, y=max(0, row - self.scrollable_content_region.height // 2),
                                    animate=False)

    @property
    def current_key(self) -> str | None:
        if not self._keys or not 0 <= self.cursor_row < len(self._keys):
            return None
        return self._keys[self.cursor_row]


def _width(cell: Cell) -> int:
    text = cell.plain if isinstance(cell, Text) else cell
    return max(map(cell_len, text.split("\n"))) if "\n" in text else cell_len(text)
