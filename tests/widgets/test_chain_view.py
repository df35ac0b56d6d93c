"""The chain view: primary and replica layers side by side, with lag and RPO on top."""

from __future__ import annotations

import io
from dataclasses import replace

from rich.console import Console, RenderableType
from rich.segment import Segment
from textual.app import App, ComposeResult

from backends.models import DiskChain, DiskLayer, Inventory, LayerState, ReplicaLink
from backends.sim.backend import SimBackend
from backends.sim.fleet import demo_fleet_path, load_fleet
from backends.units import format_bytes
from widgets.chain_view import ChainRender, ChainView, align, render_chain, sync_header
from widgets.text import duration

GIB = 1024**3


def demo() -> Inventory:
    return SimBackend(load_fleet(demo_fleet_path())).snapshot()


def link_of(inv: Inventory, vm: str) -> ReplicaLink:
    return next(r for r in inv.replicas if r.vm == vm)


def chain_of(inv: Inventory, vm: str) -> DiskChain:
    return next(c for c in inv.chains if c.vm == vm and c.disk == "vda")


def as_text(renderable: RenderableType, width: int = 120) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def segments(renderable: RenderableType, width: int = 120) -> list[Segment]:
    console = Console(width=width, color_system="truecolor")
    return list(console.render(renderable, console.options))


def style_of(renderable: RenderableType, fragment: str, width: int = 120) -> str:
    seg = next(s for s in segments(renderable, width) if fragment in s.text)
    return str(seg.style)


def line_with(text: str, fragment: str) -> str:
    return next(line for line in text.splitlines() if fragment in line)


def test_lagging_replica_shows_each_layer_state_lag_and_violation() -> None:
    inv = demo()
    view = render_chain(chain_of(inv, "web-02"), link_of(inv, "web-02"))
    text = as_text(view)
    assert "primary · fra-hv01" in text and "replica · dub-hv02" in text
    assert "lag 15m 40s" in text and "RPO 5m" in text and "✗ RPO violated" in text
    assert "last sync 2026-11-18 10:51:00Z" in text
    # Rows follow the primary from base to active; the replica holds only the base.
    rows = [line_with(text, name) for name in ("vda-base.qcow2", "vda-d1.qcow2", "vda-active.qcow2")]
    assert [text.index(r) for r in rows] == sorted(text.index(r) for r in rows)
    assert rows[0].count("vda-base.qcow2") == 2 and "✓ present" in rows[0] and rows[0].startswith("base")
    assert rows[1].count("vda-d1.qcow2") == 1 and "⇢ shipping" in rows[1]
    assert rows[2].count("vda-active.qcow2") == 1 and "✗ missing" in rows[2] and rows[2].startswith("active")
    base = chain_of(inv, "web-02").layers[0]
    assert "40.0G" in rows[0] and "qcow2" in rows[0]
    assert rows[0].count(format_bytes(base.allocated_bytes)) == 2  # allocated, at the primary and the replica
    assert "red" in style_of(view, "RPO violated")
    assert "red" in style_of(view, "✗ missing")
    assert "yellow" in style_of(view, "⇢ shipping")
    assert "green" in style_of(view, "✓ present")


def test_healthy_replica_is_within_rpo_with_every_layer_present() -> None:
    inv = demo()
    text = as_text(render_chain(chain_of(inv, "pg-main-01"), link_of(inv, "pg-main-01")))
    assert "lag 45s" in text and "✓ within RPO" in text and "violated" not in text
    assert text.count("✓ present") == 4
    assert "missing" not in text and "shipping" not in text


def test_unreplicated_disk_says_so_and_shows_only_the_primary() -> None:
    inv = demo()
    text = as_text(render_chain(chain_of(inv, "ci-runner-01"), None))
    assert "not replicated" in text
    assert "replica" not in text.replace("not replicated", "") and "lag" not in text
    assert all(f"vda-{n}.qcow2" in text for n in ("base", "d1", "d2", "d3", "active"))


def test_narrow_width_drops_role_and_format_but_keeps_states() -> None:
    inv = demo()
    view = render_chain(chain_of(inv, "web-02"), link_of(inv, "web-02"))
    text = as_text(view, width=76)
    assert max(len(line) for line in text.splitlines()) <= 76
    assert "fmt" not in text and "qcow2" not in text.replace(".qcow2", "")
    assert "✗ missing" in text and "⇢ shipping" in text and "RPO violated" in text
    assert "vda-base.qcow2" in line_with(text, "present")


def test_unknown_lag_counts_as_violated() -> None:
    layer = DiskLayer("/img/a.qcow2", "qcow2", 10 * GIB, GIB)
    chain = DiskChain("vm-a", "h1", "vda", (layer,))
    link = ReplicaLink(
        "vm-a",
        "vda",
        "h1",
        "h2",
        chain,
        DiskChain("vm-a", "h2", "vda", ()),
        (LayerState.MISSING,),
        last_sync=None,
        lag_s=None,
        rpo_s=60,
    )
    text = as_text(render_chain(chain, link))
    assert "lag unknown" in text and "last sync never" in text and "RPO 1m" in text and "RPO violated" in text
    assert "✗ missing" in line_with(text, "a.qcow2")


def test_replica_layers_align_by_name_else_by_position() -> None:
    a, b, c = (DiskLayer(f"/p/{n}.qcow2", "qcow2") for n in "abc")
    ra, rc = DiskLayer("/r/a.qcow2", "qcow2"), DiskLayer("/r/c.qcow2", "qcow2")
    assert align((a, b, c), (ra, rc)) == [ra, None, rc]
    x, y = DiskLayer("/r/x.qcow2", "raw"), DiskLayer("/r/y.qcow2", "raw")
    assert align((a, b, c), (x, y)) == [x, y, None]
    assert align((a,), ()) == [None]


def test_durations_read_like_an_operator_would_say_them() -> None:
    assert [duration(s) for s in (0, 45, 300, 940, 7500, 200000)] == ["0s", "45s", "5m", "15m 40s", "2h 05m", "2d 7h"]
    assert duration(None) == "unknown"


class ChainApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ChainView()


async def test_widget_shows_the_chain_it_is_given() -> None:
    inv = demo()
    app = ChainApp()
    async with app.run_test(size=(120, 20)) as pilot:
        view = app.query_one(ChainView)
        view.show(chain_of(inv, "web-02"), link_of(inv, "web-02"))
        await pilot.pause()
        screen = "\n".join(strip.text for strip in view.render_lines(view.size.region))
        assert "RPO violated" in screen and "✗ missing" in screen
        assert view.size.height == 6  # title, sync line, header and three layers
        view.show(chain_of(inv, "ci-runner-01"), None)
        await pilot.pause()
        assert isinstance(view.content, ChainRender) and view.content.link is None
        screen = "\n".join(strip.text for strip in view.render_lines(view.size.region))
        assert "not replicated" in screen and "missing" not in screen


async def test_a_lag_that_ticks_is_drawn_without_measuring_the_chain_again_and_its_height_follows_wrapping() -> None:
    inv = demo()
    chain, link = chain_of(inv, "web-02"), link_of(inv, "web-02")
    app = ChainApp()
    async with app.run_test(size=(120, 20)) as pilot:
        view = app.query_one(ChainView)
        view.show(chain, link)
        await pilot.pause()
        measured: list[int] = []
        height_for = view.height_for
        view.height_for = lambda width: measured.append(width) or height_for(width)  # type: ignore[method-assign]
        view.show(chain, replace(link, lag_s=(link.lag_s or 0) + 1))  # one second later: same length
        await pilot.pause()
        assert measured == []
        assert duration((link.lag_s or 0) + 1) in "\n".join(s.text for s in view.render_lines(view.size.region))
        view.show(chain, replace(link, lag_s=5.0, last_sync=1.0))  # "5s": a shorter sync line, measured
        await pilot.pause()
        assert measured == [view.size.width]


async def test_a_sync_line_that_wraps_when_narrow_makes_the_view_taller() -> None:
    inv = demo()
    chain, link = chain_of(inv, "web-02"), link_of(inv, "web-02")
    short = replace(link, lag_s=5.0)
    app = ChainApp()
    async with app.run_test(size=(len(sync_header(short)) + 2, 20)) as pilot:  # its sync line just fits
        view = app.query_one(ChainView)
        view.show(chain, short)
        await pilot.pause()
        fits = view.size.height
        view.show(chain, replace(link, lag_s=100_000.0))  # "1d 3h": longer, it wraps
        await pilot.pause()
        assert view.size.height == fits + 1
