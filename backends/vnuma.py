"""S6: choose a VM's virtual NUMA layout from the physical topology of the hosts it may use.

Each vNUMA node must fit inside one physical cell, in CPUs and in memory, on every host the
VM may run on or migrate to, so the smallest cell among those hosts decides the node size.
The node count is the smallest that satisfies it; vCPUs and memory are spread evenly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from backends.errors import BadInput
from backends.models import Host, HostState, Inventory, Vm
from backends.placement import plan_move
from backends.units import format_cpuset, format_kib

GIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class VNode:
    vcpus: tuple[int, ...]
    memory_kib: int


@dataclass(frozen=True, slots=True)
class VNumaPlan:
    nodes: tuple[VNode, ...]
    hosts: tuple[str, ...]
    cell_cpus: int  # the smallest cell's CPUs among those hosts
    cell_kib: int  # and its memory
    limit: str  # which host and cell decided, in words

    def libvirt_xml(self) -> str:
        """The domain XML fragments: guest cells, and strict placement of node i on cell i."""
        cells = "\n".join(
            f"    <cell id='{i}' cpus='{format_cpuset(n.vcpus)}' memory='{n.memory_kib}' unit='KiB'/>"
            for i, n in enumerate(self.nodes)
        )
        memnodes = "\n".join(f"  <memnode cellid='{i}' mode='strict' nodeset='{i}'/>" for i in range(len(self.nodes)))
        nodeset = f"0-{len(self.nodes) - 1}" if len(self.nodes) > 1 else "0"
        return (f"<vcpu placement='static'>{sum(len(n.vcpus) for n in self.nodes)}</vcpu>\n"
                f"<cpu>\n  <numa>\n{cells}\n  </numa>\n</cpu>\n"
                f"<numatune>\n  <memory mode='strict' nodeset='{nodeset}'/>\n{memnodes}\n</numatune>")


def candidate_hosts(inv: Inventory, hosts: Sequence[str] = (), site: str | None = None) -> list[Host]:
    """The hosts a VM may run on: those named, or a site's, or every connected host."""
    if hosts and site:
        raise BadInput("give --hosts or --site, not both")
    if hosts:
        by_name = {h.name: h for h in inv.hosts}
        missing = [h for h in hosts if h not in by_name]
        if missing:
            raise BadInput(f"no host called {missing[0]!r}", hint="see `hvc inventory` for host names")
        chosen = [by_name[h] for h in hosts]
    elif site:
        chosen = [h for h in inv.hosts if h.site == site]
        if not chosen:
            raise BadInput(f"no site called {site!r} (or it has no hosts)",
                           hint=f"sites: {', '.join(s.name for s in inv.sites)}")
    else:
        chosen = list(inv.hosts)
    usable = [h for h in chosen if h.state is HostState.CONNECTED and h.numa]
    if not usable:
        raise BadInput("none of those hosts reports its NUMA topology", hint="connect to hosts that do")
    return usable


def plan_vnuma(hosts: Sequence[Host], vcpus: int, memory_kib: int) -> VNumaPlan:
    """The fewest vNUMA nodes, each inside the smallest cell of every host; BadInput if none fits."""
    if vcpus <= 0 or memory_kib <= 0:
        raise BadInput("vCPUs and memory must be positive")
    cpu_host, cpu_cell = min(((h, c) for h in hosts for c in h.numa), key=lambda hc: len(hc[1].cpus))
    mem_host, mem_cell = min(((h, c) for h in hosts for c in h.numa), key=lambda hc: hc[1].memory_kib)
    cell_cpus, cell_kib = len(cpu_cell.cpus), mem_cell.memory_kib
    count = max(math.ceil(vcpus / cell_cpus), math.ceil(memory_kib / cell_kib))
    fewest_cells = min(hosts, key=lambda h: len(h.numa))
    if count > len(fewest_cells.numa):
        raise BadInput(
            f"{vcpus} vCPUs and {format_kib(memory_kib)} need {count} vNUMA nodes of at most {cell_cpus} CPUs and "
            f"{format_kib(cell_kib)}, but {fewest_cells.name} has only {len(fewest_cells.numa)} cells",
            hint="use fewer vCPUs or less memory, or leave that host out with --hosts",
        )
    if vcpus < count:
        raise BadInput(f"{format_kib(memory_kib)} needs {count} vNUMA nodes but there are only {vcpus} vCPUs",
                       hint=f"give at least {count} vCPUs")
    nodes = []
    first_vcpu = 0
    for i in range(count):
        n_cpus = vcpus // count + (1 if i < vcpus % count else 0)
        kib = memory_kib // count + (memory_kib % count if i == 0 else 0)
        nodes.append(VNode(tuple(range(first_vcpu, first_vcpu + n_cpus)), kib))
        first_vcpu += n_cpus
    limit = (f"smallest cell: {cell_cpus} CPUs on {cpu_host.name} cell {cpu_cell.id}, "
             f"{format_kib(cell_kib)} on {mem_host.name} cell {mem_cell.id}")
    return VNumaPlan(tuple(nodes), tuple(h.name for h in hosts), cell_cpus, cell_kib, limit)


def fits_on(inv: Inventory, vm: Vm, hosts: Sequence[Host]) -> list[tuple[str, str | None]]:
    """For each host: None if ``vm`` (as laid out now) could move there now, else why not."""
    out: list[tuple[str, str | None]] = []
    for host in hosts:
        if host.name == vm.host:
            continue
        try:
            plan_move(inv, vm, host)
            out.append((host.name, None))
        except BadInput as exc:
            out.append((host.name, exc.message))
    return out
