"""The machine hvc runs on, read with psutil and sysfs, to compare with what libvirt says."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import psutil

from backends.models import Host, LocalNode, LocalStats
from backends.units import parse_cpuset

_NODES = Path("/sys/devices/system/node")
_LOCAL_URI = re.compile(r"^(qemu|test)(\+unix)?:///")


def is_local(host: Host) -> bool:
    """True when ``host`` is this machine: a local URI, or the same hostname."""
    return bool(_LOCAL_URI.match(host.uri)) or (host.hostname is not None and host.hostname == socket.gethostname())


def local_stats() -> LocalStats:
    """A fresh reading; CPU figures are averages since the previous call (non-blocking)."""
    per_cpu = psutil.cpu_percent(percpu=True)
    memory = psutil.virtual_memory()
    return LocalStats(
        hostname=socket.gethostname(),
        cpu_percent=sum(per_cpu) / len(per_cpu) if per_cpu else 0.0,
        cpus=len(per_cpu),
        memory_kib=memory.total // 1024,
        available_kib=memory.available // 1024,
        nodes=tuple(_nodes(per_cpu)),
    )


def _nodes(per_cpu: list[float]) -> list[LocalNode]:
    out = []
    for path in sorted(_NODES.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        try:
            cpus = parse_cpuset((path / "cpulist").read_text().strip(), strict=False)
            meminfo = (path / "meminfo").read_text()
        except OSError:
            continue
        total = _meminfo(meminfo, "MemTotal")
        free = _meminfo(meminfo, "MemFree")
        busy = [per_cpu[c] for c in cpus if c < len(per_cpu)]
        out.append(LocalNode(int(path.name[4:]), cpus, total, free, sum(busy) / len(busy) if busy else None))
    return out


def _meminfo(text: str, key: str) -> int | None:
    match = re.search(rf"{key}:\s+(\d+) kB", text)
    return int(match.group(1)) if match else None
