"""One VM disk's backing chain at the primary and at its replica, layer by layer.

The left side lists the primary's layers from the base up to the active top; the right side
shows, on the same rows, what the recovery host holds of each layer and whether it is there,
still shipping or missing. A header line says how far behind the replica is against its RPO.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from posixpath import basename

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from backends.models import DiskChain, DiskLayer, LayerState, ReplicaLink
from backends.units import format_bytes
from widgets.steady import SteadyStatic
from widgets.text import duration

STATE_MARK: dict[LayerState, tuple[str, str]] = {
    LayerState.PRESENT: ("✓ present", "green"),
    LayerState.SHIPPING: ("⇢ shipping", "yellow"),
    LayerState.MISSING: ("✗ missing", "red"),
}


def sync_header(link: ReplicaLink | None) -> Text:
    """lag · last sync · RPO target, and 'RPO violated' in red when the lag is past it."""
    if link is None:
        return Text("not replicated", style="dim italic")
    text = Text.assemble(
        ("lag ", "dim"),
        (duration(link.lag_s), "bold red" if link.rpo_violated else "bold"),
        (" · last sync ", "dim"),
        "never" if link.last_sync is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(link.last_sync)),
        (" · RPO ", "dim"),
        duration(link.rpo_s),
        (" · ", "dim"),
    )
    if link.rpo_violated:
        text.append("✗ RPO violated", style="bold red")
    else:
        text.append("✓ within RPO", style="green")
    return text


def align(primary: Sequence[DiskLayer], replica: Sequence[DiskLayer]) -> list[DiskLayer | None]:
    """For each primary layer, the replica layer holding it: same file name, else same position."""
    by_name = {basename(layer.path): layer for layer in replica}
    if not by_name.keys() & {basename(layer.path) for layer in primary}:
        return [replica[i] if i < len(replica) else None for i in range(len(primary))]
    return [by_name.get(basename(layer.path)) for layer in primary]


def _role(i: int, count: int) -> Text:
    if count == 1:
        return Text("base", style="dim")
    return Text("active" if i == count - 1 else "base" if i == 0 else "", style="dim")


def _layer_cells(layer: DiskLayer | None, style: str = "") -> list[Text]:
    if layer is None:
        return [Text("—", style="dim"), Text(""), Text(""), Text("")]
    return [
        Text(basename(layer.path), style=style),
        Text(layer.format or "?", style="dim"),
        Text(format_bytes(layer.virtual_bytes), style=style),
        Text(format_bytes(layer.allocated_bytes), style=style),
    ]


WIDE = 84  # below this many cells the role and format columns are left out
_drawn: dict[tuple[object, ...], list[list[Segment]]] = {}  # a chain's layers table, drawn, by chain and width


class ChainRender:
    """A rich renderable that picks its columns by the width it is given."""

    def __init__(self, chain: DiskChain, link: ReplicaLink | None) -> None:
        self.chain, self.link = chain, link

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        chain, link = self.chain, self.link
        title = Text.assemble((chain.vm, "bold"), (" · ", "dim"), (chain.disk, "bold"), "   ")
        title.append(chain.host if link is None else f"{chain.host} → {link.replica_host}", style="dim")
        yield title
        yield sync_header(link)
        # The layers' table, drawn once per chain and width: the lag above it ticks at every refresh.
        key = (chain, None if link is None else (link.replica, link.layer_states), options.max_width)
        lines = _drawn.get(key)
        if lines is None:
            if len(_drawn) >= 16:
                _drawn.clear()
            lines = _drawn[key] = console.render_lines(self.table(wide=options.max_width >= WIDE), options, pad=False)
        for line in lines:
            yield from line
            yield Segment.line()

    def table(self, wide: bool) -> Table:
        chain, link, layers = self.chain, self.link, self.chain.layers
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, header_style="bold")
        if wide:
            table.add_column("", no_wrap=True)
        table.add_column(f"primary · {chain.host}" if wide else "primary", overflow="ellipsis", min_width=10)
        if wide:
            table.add_column("fmt", no_wrap=True, header_style="dim")
        table.add_column("virtual", justify="right", no_wrap=True, header_style="dim")
        table.add_column("alloc", justify="right", no_wrap=True, header_style="dim")
        if link is not None:
            table.add_column("│", no_wrap=True, style="dim", header_style="dim")
            table.add_column(f"replica · {link.replica_host}" if wide else "replica", overflow="ellipsis", min_width=10)
            table.add_column("alloc", justify="right", no_wrap=True, header_style="dim")
            table.add_column("state", no_wrap=True, header_style="dim")
        held = align(layers, link.replica.layers) if link is not None else [None] * len(layers)
        for i, (layer, copy) in enumerate(zip(layers, held, strict=True)):
            name, fmt, virtual, alloc = _layer_cells(layer)
            row = [_role(i, len(layers)), name, fmt, virtual, alloc] if wide else [name, virtual, alloc]
            if link is not None:
                state = link.layer_states[i] if i < len(link.layer_states) else None
                mark, style = STATE_MARK[state] if state is not None else ("? unknown", "magenta")
                r_name, _fmt, _virtual, r_alloc = _layer_cells(copy, "dim" if state is LayerState.MISSING else "")
                row += [Text("│"), r_name, r_alloc, Text(mark, style=style)]
            table.add_row(*row)
        return table


def render_chain(chain: DiskChain, link: ReplicaLink | None) -> RenderableType:
    """The chain as a title, a sync line and one row per layer, primary left and replica right."""
    return ChainRender(chain, link)


class ChainView(SteadyStatic):
    """Shows one disk chain and its replica; call ``show`` again whenever either changes (a lag
    that ticks redraws it alone: the height stays)."""

    DEFAULT_CSS = """
    ChainView {
        height: auto;
        padding: 0 1;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.chain: DiskChain | None = None
        self.link: ReplicaLink | None = None

    def show(self, chain: DiskChain, link: ReplicaLink | None) -> None:
        self.chain, self.link = chain, link
        # The height: the layers (rows), and the sync line, which wraps when narrow: its length
        # moves with the lag's and whether the RPO is met.
        sync = None if link is None else (link.replica, link.layer_states, len(sync_header(link)))
        self.set_content(render_chain(chain, link), shape=(chain, sync))
