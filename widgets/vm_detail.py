"""One VM in full: placement of each vNUMA cell, pinning, devices, disk chains, flags."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.css.scalar import Scalar
from textual.widget import Widget

from backends.models import DiskChain, Host, ReplicaLink, Vm
from backends.units import format_bytes, format_cpuset, format_kib
from widgets.steady import SteadyStatic
from widgets.text import duration, vm_state


class VmDetail(SteadyStatic):
    """At least as tall as the pane it scrolls in, so that its height, and with it the screen's
    layout, changes only when a detail taller than the pane comes or goes."""

    DEFAULT_CSS = """
    VmDetail { padding: 0 1; }
    """
    _shown: tuple[object, ...] | None = None  # what it shows now

    def show(self, vm: Vm | None, host: Host | None, chains: Sequence[DiskChain],
             replicas: Sequence[ReplicaLink], flags: Sequence[str],
             fits: Sequence[tuple[str, str | None]] = ()) -> None:
        """``fits``: other hosts of its site, each with why the VM could not move there (None: it could).
        Nothing is redrawn when all of it is what was shown (unchanged objects compare by identity first)."""
        shown = (vm, host, tuple(chains), tuple(replicas), tuple(flags), tuple(fits))
        if shown == self._shown:
            return
        self._shown = shown
        self.set_content(render_vm(vm, host, chains, replicas, flags, fits) if vm
                         else Text("no VM selected", style="dim"))

    def height_for(self, width: int) -> int:
        return max(super().height_for(width), self._fill_pane())

    def on_mount(self) -> None:
        self.screen.screen_layout_refresh_signal.subscribe(self, lambda _screen: self._fill_pane())

    def _fill_pane(self) -> int:
        """Keep the minimum height at the height the pane shows (a percentage would be of the pane's
        scrolled height, which is the detail's own); returns it. After a resize, the first layout
        changes it and a second one follows."""
        pane = self.parent.scrollable_content_region.height if isinstance(self.parent, Widget) else 0
        if self.styles.min_height != Scalar.from_number(pane):
            self.styles.min_height = pane
        return pane


def render_vm(vm: Vm, host: Host | None, chains: Sequence[DiskChain], replicas: Sequence[ReplicaLink],
              flags: Sequence[str], fits: Sequence[tuple[str, str | None]] = ()) -> RenderableType:
    title = Text.assemble((vm.name, "bold"), "  ", vm_state(vm.state), f"  on {vm.host}")
    facts = Text(f"{vm.vcpus} vCPUs · {format_kib(vm.memory_kib)}", style="")
    if vm.max_memory_kib and vm.max_memory_kib != vm.memory_kib:
        facts.append(f" (max {format_kib(vm.max_memory_kib)})")
    if vm.memory_mode:
        facts.append(f" · numatune {vm.memory_mode}")
    if vm.hugepages:
        facts.append(" · hugepages")
    parts: list[RenderableType] = [title, facts]
    parts += [Text(f"⚠ {flag}", style="yellow") for flag in flags]  # first: a long detail scrolls
    parts.append(_placement(vm, host))
    if vm.devices:
        parts.append(Text("devices  ", style="bold") + Text(", ".join(vm.devices)))
    if vm.residency is not None:
        parts.append(_residency(vm))
    for image in vm.device_images:
        what = " ".join(p for p in (image.vendor, image.product) if p) or image.source_address
        parts.append(Text.assemble(("image    ", "bold"), f"{image.address} ", ("backed by image", "magenta"),
                                   f" of {what}", (f"  from {image.source_host} {image.source_address}", "dim")))
    for chain in chains:
        link = next((r for r in replicas if r.disk == chain.disk), None)
        layers = " → ".join(layer.path.rsplit("/", 1)[-1] for layer in chain.layers)
        line = Text.assemble((f"{chain.disk}  ", "bold"), layers, (f"  {len(chain.layers)} layers", "dim"))
        alloc = sum(layer.allocated_bytes or 0 for layer in chain.layers)
        if alloc:
            line.append(f" · {format_bytes(alloc)} allocated", style="dim")
        if link:
            style = "red" if link.rpo_violated else "green"
            lag = "?" if link.lag_s is None else duration(link.lag_s)
            line.append(f"  ⇄ {link.replica_host} lag {lag}", style=style)
        parts.append(line)
    if fits:
        parts.append(_fits_line(fits))
        parts += [Text(f"  ✗ {name}: {why}", style="dim") for name, why in fits if why is not None][:3]
    return Group(*parts)


FITS_LISTED = 8  # more hosts in the site than this: one line, led by the count


def _fits_line(fits: Sequence[tuple[str, str | None]]) -> Text:
    """Each other host of the site, ✓ or ✗. A large site's would fill the pane (50 hosts: 6 lines),
    so it is one line, cut at the pane's edge, that starts with how many fit."""
    line = Text("fits on  ", style="bold")
    if len(fits) > FITS_LISTED:
        ok = sum(1 for _, why in fits if why is None)
        line.append(f"{ok} of {len(fits)} hosts: ")
        line.no_wrap, line.overflow = True, "ellipsis"
    for name, why in fits:
        line.append(f"{name} ✓  " if why is None else f"{name} ✗  ", style="green" if why is None else "red")
    return line


def _placement(vm: Vm, host: Host | None) -> RenderableType:
    cpu_cell = {cpu.id: cell.id for cell in host.numa for cpu in cell.cpus} if host else {}
    pins = {p.vcpu: p.cpus for p in vm.pinning}
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for col in ("vNUMA", "vCPUs", "memory", "backed by cell", "pinned to CPUs (cell)"):
        table.add_column(col)
    nodes = vm.vnuma
    if not nodes:
        placed = vm.memory_by_cell()
        backing = ",".join(map(str, placed)) if placed else "?"
        table.add_row("—", f"0-{vm.vcpus - 1}" if vm.vcpus > 1 else "0", format_kib(vm.memory_kib),
                      backing, _pinned(range(vm.vcpus), pins, cpu_cell))
    for node in nodes:
        split = len(node.backing) > 1
        backing = ", ".join(
            f"{s.cell}" + (f" ({format_kib(s.memory_kib)})" if split and s.memory_kib is not None else "")
            for s in node.backing
        ) or "?"
        table.add_row(f"v{node.id}", format_cpuset(node.vcpus), format_kib(node.memory_kib), backing,
                      _pinned(node.vcpus, pins, cpu_cell))
    return table


def _pinned(vcpus: Sequence[int] | range, pins: dict[int, tuple[int, ...]], cpu_cell: dict[int, int]) -> str:
    cpus = sorted({c for v in vcpus for c in pins.get(v, ())})
    if not cpus:
        return "floating"
    cells = sorted({cpu_cell[c] for c in cpus if c in cpu_cell})
    return f"{format_cpuset(cpus)} ({','.join(map(str, cells)) or '?'})"


def _residency(vm: Vm) -> Text:
    """S3: memory residency: resident, pinned for DMA, transfers in flight, reclaims refused."""
    res = vm.residency
    assert res is not None
    line = Text("residency  ", style="bold")
    line.append(f"resident {format_kib(res.resident_kib)} · pinned {format_kib(res.pinned_kib)}")
    if res.locked:
        line.append(" (all of it: VFIO or locked memory)", style="yellow")
    else:
        line.append(f" · {res.dma_in_flight} DMA in flight")
        refused = f" · {res.refused_reclaims} reclaim{'s' if res.refused_reclaims != 1 else ''} refused"
        line.append(refused, style="red" if res.refused_reclaims else "dim")
    return line
