"""A DataTable that updates rows in place by key, keeping the cursor across refreshes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.widgets import DataTable
from textual.widgets._data_table import Row, RowKey, RowRenderables

from widgets.text import duration


@dataclass(frozen=True, slots=True)
class Since:
    """A cell showing the time since ``at`` on its table's clock (``KeyedTable.tick``), '?' when
    ``at`` is None. It reads anew at each tick while its row stays the same, so a column of lags
    that all move costs the rows on screen at each refresh, not every row of the table."""

    at: float | None
    style: str = ""

    WIDTH: ClassVar[int] = 7  # its column's width: the widest duration below 100 days ('15m 40s')


Cell = str | Text | Since
Redrawn = dict[RowKey, tuple[int, set[str] | None]]  # row → its index, the columns to draw again (None: all)


class KeyedTable(DataTable[Cell]):
    """Rows are (key, cells); unchanged rows are left alone, so refreshes stay cheap.

    Every row is one line high, which lets the table skip DataTable's whole-table passes (at
    10,000 rows each cost tens of milliseconds to seconds): a row's offset is its index, column
    widths come from the width counts kept here instead of measuring every cell, and a rebuild
    adds its rows in one go. Drawing is DataTable's own, so the table looks the same.
    """

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("h", "scroll_left", "Left", show=False),
        Binding("l", "scroll_right", "Right", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    def __init__(self, columns: Sequence[str], *, ticking: Sequence[str] = (), **kwargs: object) -> None:
        """``ticking``: the columns whose cells are ``Since``."""
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self._columns = tuple(columns)
        self._ticking = frozenset(ticking)
        self._now = 0.0  # the clock Since cells are read on
        self._rows: dict[str, tuple[Cell, ...]] = {}  # what is shown
        self._keys: list[str] = []  # row keys in display order
        self._all: list[tuple[str, tuple[Cell, ...]]] = []  # before filtering
        self._at: dict[str, int] = {}  # key → its index in _all
        self._filter = ""
        self._widths: dict[str, Counter[int]] = {}  # column → how many shown cells have each width
        self._ordered: list[Row] | None = None  # DataTable.ordered_rows, kept until rows come or go
        self._grow_only = False  # the next width update follows added rows (columns only widen)

    def on_mount(self) -> None:
        for name in self._columns:
            self.add_column(name, key=name)

    def set_filter(self, text: str) -> None:
        """Show only rows with ``text`` in some cell (case-insensitive); '' shows all."""
        self._filter = text.strip().lower()
        self.set_rows(self._all)

    def set_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> None:
        self._all = [(key, tuple(cells)) for key, cells in rows]
        self._at = {key: i for i, (key, _) in enumerate(self._all)}
        new = {key: cells for key, cells in self._all if self._matches(cells)}
        if list(new) != self._keys:
            if new.keys() != self._rows.keys():
                self._rebuild(new)
                return
            self._reorder(list(new))
        redrawn: Redrawn = {}
        for index, (key, cells) in enumerate(new.items()):
            old = self._rows[key]
            if old is not cells:
                self._change(index, key, old, cells, redrawn)
        self._forget(redrawn)
        self._rows = new
        self._keys = list(new)

    def update_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> bool:
        """Replace the cells of rows already in the table, leaving every other row untouched (the
        cost is the rows given, not the table). False, with nothing changed, when a key is not in
        the table or a row would come or go under the filter: the caller then uses ``set_rows``."""
        if any(key not in self._at for key, _ in rows):
            return False
        if self._filter and any(self._matches(cells) != (key in self._rows) for key, cells in rows):
            return False
        redrawn: Redrawn = {}
        for key, cells in rows:
            cells = tuple(cells)
            self._all[self._at[key]] = (key, cells)
            old = self._rows.get(key)
            if old is not None and old is not cells:
                self._change(self._row_locations.get(RowKey(key)), key, old, cells, redrawn)
                self._rows[key] = cells
        self._forget(redrawn)
        return True

    def tick(self, now: float) -> None:
        """Move the clock the ``Since`` cells are read on; the rows on screen are drawn again."""
        if now == self._now:
            return
        self._now = now
        if not self._ticking:
            return
        # The ticking cells' drawing, and every drawn row and line that holds one, is dropped (the
        # caches hold the rows drawn lately: a few screens at most); only the screen is redrawn.
        for stale in [k for k in self._cell_render_cache.keys() if k[1] in self._ticking]:  # noqa: SIM118
            self._cell_render_cache.discard(stale)
        for cache in (self._row_render_cache, self._row_renderable_cache, self._line_cache):
            cache.clear()
        self.refresh()

    def _shown(self, cell: Cell | None) -> Text:
        """A cell as drawn: a ``str`` as it is (DataTable reads one as markup), a ``Since`` read now."""
        if isinstance(cell, Text):
            return cell
        if isinstance(cell, Since):
            text = "?" if cell.at is None else duration(self._now - cell.at)
            return Text(text, style=cell.style, no_wrap=True, end="")
        return Text(cell or "", no_wrap=True, end="")  # what DataTable makes of a str without markup

    def _matches(self, cells: tuple[Cell, ...]) -> bool:
        wanted = self._filter
        return not wanted or any(wanted in self._plain(c).lower() for c in cells)

    def _plain(self, cell: Cell) -> str:
        if isinstance(cell, str):
            return cell
        return cell.plain if isinstance(cell, Text) else self._shown(cell).plain

    def _change(self, index: int, key: str, old: tuple[Cell, ...], cells: tuple[Cell, ...],
                redrawn: Redrawn) -> None:
        """Put ``cells`` in row ``key`` (at ``index``) in place of ``old``; ``redrawn`` collects the
        cells whose drawing ``_forget`` must drop."""
        row_key = RowKey(key)
        for column, (before, after) in zip(self._columns, zip(old, cells, strict=True), strict=True):
            if before == after:
                continue
            self._data[row_key][self.columns[column].key] = after  # type: ignore[index]
            changed = redrawn.setdefault(row_key, (index, set()))[1]
            if changed is not None:
                changed.add(column)
            if self._width_changes(column, before, after):
                self._require_update_dimensions = True
                self._update_count += 1  # widths change: every line is drawn again anyway
                self.check_idle()

    def _forget(self, rows: Redrawn) -> None:
        """Drop DataTable's cached drawing of these rows' cells only, and redraw those rows on
        screen. ``update_cell`` drops every row's (its caches are keyed by an update count): at each
        refresh that changed a few rows, every row on screen was drawn again; and when one cell of a
        row changes (a lag ticking), the row's other cells are drawn from the cache."""
        if not rows:
            return
        indexes = {index for index, _ in rows.values()}
        header = self.header_height if self.show_header else 0  # reactives: read once, not per row
        lines = {i + header for i in indexes}

        def cell_hit(key: tuple[object, ...]) -> bool:
            row = rows.get(key[0])  # type: ignore[call-overload]
            return row is not None and (row[1] is None or key[1] in row[1])

        for cache, hit in ((self._row_render_cache, lambda k: k[0] in rows),
                           (self._cell_render_cache, cell_hit),
                           (self._row_renderable_cache, lambda k: k[1] in indexes),
                           (self._line_cache, lambda k: k[0] in lines)):
            for stale in [k for k in cache.keys() if hit(k)]:  # noqa: SIM118 (an LRUCache: no __iter__)
                cache.discard(stale)
        top, bottom = self._visible_rows()
        for index in indexes:
            if top <= index < bottom:
                self.refresh_row(index)

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

    def _reorder(self, keys: list[str]) -> None:
        """The same rows in another order (a replica crossing its RPO sorts to the top): each row that
        moved takes its new index, and only those lines are drawn again; the cursor's row keeps its
        place on screen. A rebuild cleared the table, added every row and redrew every line."""
        current, before = self.current_key, self.cursor_row
        moved: Redrawn = {}  # every cell of a moved row: a drawn cell holds its row's index
        for index, (key, was) in enumerate(zip(keys, self._keys, strict=True)):
            if key != was:
                row_key = RowKey(key)
                moved[row_key] = (index, None)
                self._row_locations[row_key] = index  # a permutation: every index gets its new key
        self._keys = keys
        self._ordered = None
        self._forget(moved)
        if current is not None and (at := moved.get(RowKey(current))) is not None:
            row = at[0]
            self.move_cursor(row=row, scroll=False)
            self.scroll_to(y=self.scroll_y + row - before, animate=False)

    def _rebuild(self, new: dict[str, tuple[Cell, ...]]) -> None:
        current = self.current_key
        self._widths = {column: Counter(_width(cells[i]) for cells in new.values())
                        for i, column in enumerate(self._columns)}
        self.clear()
        self._add_rows(new)
        self._rows = new
        self._keys = list(new)
        if current in new:
            row = self._keys.index(current)
            self.move_cursor(row=row, scroll=False)
            # Centre the kept row: after a filter clears, its neighbours show on both sides.
            self.call_after_refresh(self.scroll_to, y=max(0, row - self.scrollable_content_region.height // 2),
                                    animate=False)

    def _add_rows(self, new: dict[str, tuple[Cell, ...]]) -> None:
        """What ``add_row`` does for each row, once for all of them (it re-validates the cursor and
        wakes the idle handler per row)."""
        columns = [self.columns[c].key for c in self._columns]  # type: ignore[index]
        locations, data, rows = self._row_locations, self._data, self.rows
        first = self.row_count == 0
        for index, (key, cells) in enumerate(new.items(), start=self.row_count):
            row_key = RowKey(key)
            locations[row_key] = index
            data[row_key] = dict(zip(columns, cells, strict=True))
            rows[row_key] = Row(row_key, 1)
        self._ordered = None
        self._grow_only = True  # as DataTable: added rows widen columns, never narrow them
        self._require_update_dimensions = True
        self._update_count += 1
        self.cursor_coordinate = self.cursor_coordinate
        if first and new and self.columns and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()
        self.check_idle()

    def clear(self, columns: bool = False) -> KeyedTable:
        self._ordered = None
        super().clear(columns)
        return self

    # -- DataTable's whole-table passes, for rows one line high ----------------------------

    def _on_resize(self, event: events.Resize) -> None:
        """DataTable drops every cached line on any resize. A row is drawn at its columns' widths
        whatever the table's height (and its line cache is keyed by the width), so only a new
        width needs that: in the VMs view the detail pane below the table grows or shrinks with
        each VM the cursor reaches, and every key redrew every visible row."""
        event.prevent_default()  # DataTable's own handler (the only other one) would drop them all
        if event.size.width != getattr(self, "_drawn_width", None):
            self._drawn_width = event.size.width
            self._update_count += 1

    def _visible_rows(self) -> tuple[int, int]:
        """Indexes of the first row on screen and the one after the last (a row of margin)."""
        top = int(self.scroll_y)
        return max(0, top - 1), top + self.size.height + 1

    @property
    def ordered_rows(self) -> list[Row]:
        ordered = getattr(self, "_ordered", None)  # DataTable.__init__ asks before ours has run
        if ordered is None or len(ordered) != len(self.rows):
            ordered = self._ordered = [self.rows[self._row_locations.get_key(i)] for i in range(len(self.rows))]
        return ordered

    @property
    def _y_offsets(self) -> _Offsets:  # type: ignore[override]
        return _Offsets(self)

    def _get_row_region(self, row_index: int) -> Region:
        if not self.is_valid_row_index(row_index):
            return Region(0, 0, 0, 0)
        width = sum(column.get_render_width(self) for column in self.columns.values()) + self._row_label_column_width
        return Region(0, row_index + (self.header_height if self.show_header else 0), max(self.size.width, width), 1)

    def _update_dimensions(self, new_rows: object) -> None:
        """Column widths from the kept width counts (the widest shown cell, or the label); after
        rows were added, as DataTable does, a column keeps its width if that is wider."""
        self._new_rows.clear()
        for name in self._columns:
            column = self.columns[name]  # type: ignore[index]
            widths = self._widths.get(name)
            wanted = max(cell_len(column.label.plain), max(widths) if widths else 0)
            column.content_width = max(wanted, column.content_width) if self._grow_only else wanted
        self._grow_only = False
        width = sum(column.get_render_width(self) for column in self.columns.values()) + self._row_label_column_width
        self.virtual_size = Size(width, self.row_count + (self.header_height if self.show_header else 0))

    def _update_column_widths(self, updated_cells: object) -> None:
        self._require_update_dimensions = True

    def _compute_row_renderables(self, row_index: int) -> RowRenderables:
        """A row's cells as drawn (``_shown``): DataTable reads a ``str`` as markup, so a name with
        brackets lost them ('web[prod]' showed 'web') or broke the drawing ('db[/]')."""
        row_key = self._row_locations.get_key(row_index) if row_index >= 0 else None
        if row_key is None:
            return super()._compute_row_renderables(row_index)  # the header
        data = self._data.get(row_key, {})
        return RowRenderables(None, [self._shown(data.get(column.key)) for column in self.ordered_columns])

    @property
    def current_key(self) -> str | None:
        if not self._keys or not 0 <= self.cursor_row < len(self._keys):
            return None
        return self._keys[self.cursor_row]


class _Offsets:
    """DataTable's line → (row key, line in row) list, without building it: row i is line i."""

    def __init__(self, table: KeyedTable) -> None:
        self._table = table

    def __len__(self) -> int:
        return self._table.row_count

    def __getitem__(self, y: int) -> tuple[RowKey, int]:
        if not 0 <= y < self._table.row_count:
            raise IndexError(y)
        return self._table._row_locations.get_key(y), 0

    def clear(self) -> None:
        """DataTable.clear empties the list; there is nothing kept to empty."""


def _width(cell: Cell) -> int:
    if isinstance(cell, Since):
        return Since.WIDTH
    text = cell.plain if isinstance(cell, Text) else cell
    return max(map(cell_len, text.split("\n"))) if "\n" in text else cell_len(text)
