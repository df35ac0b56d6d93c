"""This machine as psutil sees it, beside what libvirt reports for the same host."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from backends.models import Host, LocalStats
from backends.units import format_kib
from widgets.text import meter


class HostCard(Static):
    DEFAULT_CSS = """
    HostCard { height: auto; border: round $secondary; padding: 0 1; border-title-color: $secondary; }
    """

    def show(self, stats: LocalStats, host: Host) -> None:
        self.border_title = f"this machine · {stats.hostname} (psutil)"
        used = stats.memory_kib - stats.available_kib
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for col in ("", "CPU", "memory (kernel)", "free (libvirt)"):
            table.add_column(col)
        table.add_row("total", f"{stats.cpu_percent:5.1f}% of {stats.cpus}",
                      meter(used, stats.memory_kib) + Text(f" {format_kib(used)}/{format_kib(stats.memory_kib)}"),
                      format_kib(host.free_kib))
        libvirt_free = {c.id: c.free_kib for c in host.numa}
        for node in stats.nodes:
            node_used = None if node.memory_kib is None or node.free_kib is None else node.memory_kib - node.free_kib
            cpu = "?" if node.cpu_percent is None else f"{node.cpu_percent:5.1f}% of {len(node.cpus)}"
            table.add_row(f"node {node.id}", cpu,
                          meter(node_used, node.memory_kib or 0)
                          + Text(f" {format_kib(node_used)}/{format_kib(node.memory_kib)}"),
                          format_kib(libvirt_free.get(node.id)))
        self.update(table)
