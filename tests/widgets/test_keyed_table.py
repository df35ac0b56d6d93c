"""KeyedTable: the same rows in a new order move in place (no rebuild), the cursor keeps its row
and its place on screen, and a changed cell is the only one of its row drawn again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets._data_table import RowKey

from widgets.keyed_table import KeyedTable, Since

COLUMNS = ("name", "lag", "state")


class _Host(App[None]):
    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS)


def _rows(names: list[str], lag: str = "1s") -> list[tuple[str, tuple[str, ...]]]:
    return [(name, (name, lag, "ok")) for name in names]


@asynccontextmanager
async def _table(rows: list[tuple[str, tuple[str, ...]]]) -> AsyncIterator[tuple[Pilot[None], KeyedTable]]:
    """A table of ``rows`` on screen (60×12: ten rows show)."""
    app = _Host()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(KeyedTable)
        table.set_rows(rows)
        await pilot.pause()
        yield pilot, table


def _shown(table: KeyedTable) -> list[str]:
    """The name cell of each line on screen, top to bottom (header left out)."""
    return [table.render_line(y).text.split()[0] for y in range(1, table.size.height)]


async def test_a_new_order_moves_rows_in_place_and_the_cursor_keeps_its_row_on_screen() -> None:
    names = [f"vm{i:02}" for i in range(40)]
    async with _table(_rows(names)) as (pilot, table):
        table.move_cursor(row=5)
        await pilot.pause()
        before = _shown(table).index("vm05")
        rebuilt: list[object] = []
        table._rebuild = lambda new: rebuilt.append(new)  # type: ignore[method-assign]
        reordered = [names[-1], *names[:-1]]  # the last one sorts to the top
        table.set_rows(_rows(reordered))
        await pilot.pause()
        assert rebuilt == []
        assert [str(r.key.value) for r in table.ordered_rows] == reordered
        assert table.current_key == "vm05" and table.cursor_row == 6
        assert _shown(table).index("vm05") == before  # the cursor's row did not move on screen
        assert _shown(table)[before - 1] == "vm04"


async def test_a_changed_cell_is_drawn_again_and_its_neighbours_come_from_the_cache() -> None:
    names = [f"vm{i:02}" for i in range(10)]
    async with _table(_rows(names)) as (pilot, table):
        cached = {(k[0], k[1]) for k in table._cell_render_cache.keys()}  # noqa: SIM118 (an LRUCache)
        assert (RowKey("vm03"), "name") in cached and (RowKey("vm03"), "lag") in cached
        table.set_rows([(n, (n, "2s" if n == "vm03" else "1s", "ok")) for n in names])
        cached = {(k[0], k[1]) for k in table._cell_render_cache.keys()}  # noqa: SIM118
        assert (RowKey("vm03"), "name") in cached and (RowKey("vm03"), "lag") not in cached
        await pilot.pause()
        assert "2s" in table.render_line(4).text  # vm03's line (under the header) shows the new lag


async def test_a_text_cell_is_shown_as_it_is_not_read_as_markup() -> None:
    names = ["web[prod]", "db[/]", "[bold]x"]
    async with _table(_rows(names)) as (_pilot, table):
        assert _shown(table)[:3] == names


class _Ticking(App[None]):
    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, ticking=("lag",))


async def test_a_ticking_column_reads_anew_at_each_tick_rows_on_screen_and_off_alike() -> None:
    names = [f"vm{i:02}" for i in range(40)]
    app = _Ticking()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(KeyedTable)
        rows = [(n, (n, Since(100.0 + i), "ok")) for i, n in enumerate(names)]
        table.set_rows(rows)
        table.tick(160.0)
        await pilot.pause()
        assert table.render_line(1).text.split()[:2] == ["vm00", "1m"]
        changed: list[object] = []
        table._change = lambda *args: changed.append(args)  # type: ignore[method-assign]
        table.set_rows(rows)  # the same rows, as a screen keeps them while nothing but time moved
        table.tick(175.0)
        await pilot.pause()
        assert changed == []  # no row changed: the tick alone moved the lags
        assert table.render_line(1).text.split()[:3] == ["vm00", "1m", "15s"]
        table.scroll_to(y=30, animate=False)  # rows not drawn since the first tick
        await pilot.pause()
        table.tick(200.0)
        table.scroll_to(y=0, animate=False)  # back to rows drawn at the tick before
        await pilot.pause()
        assert table.render_line(1).text.split()[:3] == ["vm00", "1m", "40s"]
        assert table.render_line(2).text.split()[:3] == ["vm01", "1m", "39s"]


async def test_a_ticking_cell_without_an_instant_shows_a_question_mark_and_filters_by_what_it_shows() -> None:
    app = _Ticking()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(KeyedTable)
        table.tick(500.0)
        table.set_rows([("a", ("a", Since(None), "ok")), ("b", ("b", Since(440.0), "ok"))])
        await pilot.pause()
        assert table.render_line(1).text.split()[:2] == ["a", "?"]
        table.set_filter("1m")
        await pilot.pause()
        assert table.row_count == 1 and table.current_key == "b"
