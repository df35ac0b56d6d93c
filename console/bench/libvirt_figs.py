"""libvirt figures on the test:/// driver: inventory wall time against ``virsh list --all``, and
the real libvirt calls one refresh makes (counted by wrapping the binding's classes)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from console.bench.figures import Row, Size
from console.bench.procs import hvc, interleaved

# Accessors the client answers from the object it holds, without a round trip to the daemon.
LOCAL = frozenset({"name", "UUIDString", "UUID", "ID", "connect", "getConnect", "c_pointer"})


def fleet_xml(directory: Path, domains: int) -> Path:
    from backends.libvirt.testfleet import write_test_fleet

    return write_test_fleet(directory / f"fleet-{domains}.xml", domains)


def inventory_rows(size: Size, directory: Path) -> list[Row]:
    xml = fleet_xml(directory, size.domains)
    uri = f"test://{xml}"
    rows = []
    target = "≤ 1.5 × virsh"
    if shutil.which("virsh") is None:
        rows.append(Row(f"hvc inventory --json, test:/// {size.domains} domains", None, "s", target,
                        note="virsh not installed: skipped"))
    else:
        (hvc_s, rss), (virsh_s, _) = interleaved(
            hvc("inventory", "--json", "-c", uri), ["virsh", "-c", uri, "list", "--all"], size.repeats)
        ratio = hvc_s / virsh_s
        rows.append(Row(f"hvc inventory --json, test:/// {size.domains} domains", hvc_s, "s", target,
                        ratio <= 1.5, "virsh list --all", virsh_s, ratio))
        rows.append(Row("  its peak RSS", rss / 2**20, "MB", ""))
    return rows


def calls_rows(size: Size, directory: Path) -> list[Row]:
    small, large = size.calls_domains
    per: dict[int, tuple[Counter[str], Counter[str]]] = {}
    for n in (small, large):
        per[n] = calls_per_refresh(f"test://{fleet_xml(directory, n)}")
    remote = {n: sum(c.values()) for n, (c, _) in per.items()}
    local = {n: sum(c.values()) for n, (_, c) in per.items()}
    what = ", ".join(f"{k}×{v}" for k, v in sorted(per[large][0].items()))
    return [
        Row(f"libvirt remote calls / refresh / host, {large} domains", remote[large], "", "constant in domains",
            remote[large] == remote[small], f"{small} domains", remote[small], remote[large] / max(1, remote[small]),
            note=what),
        Row(f"  local accessors / refresh ({', '.join(sorted(per[large][1]))}, no round trip)", local[large], "",
            "", None, f"{small} domains", local[small], local[large] / max(1, local[small])),
    ]


def calls_per_refresh(uri: str) -> tuple[Counter[str], Counter[str]]:
    """(remote, local) libvirt calls of the second refresh of a LibvirtBackend on ``uri``."""
    from backends.libvirt.backend import LibvirtBackend

    backend = LibvirtBackend([uri], poll_s=3600)
    try:
        backend.refresh()  # settle anything the first load left dirty
        with counting() as calls:
            backend.refresh()
        remote = Counter({k: v for k, v in calls.items() if k.split(".")[-1] not in LOCAL})
        local = Counter({k: v for k, v in calls.items() if k.split(".")[-1] in LOCAL})
        return remote, local
    finally:
        backend.close()


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count every public method call on libvirt's connection, domain, pool, volume and node device
    classes, from any thread; a call made inside another counted call is not counted again."""
    import libvirt

    calls: Counter[str] = Counter()
    depth = threading.local()
    lock = threading.Lock()
    saved: list[tuple[type, str, Any]] = []

    def wrap(cls_name: str, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            outer = not getattr(depth, "n", 0)
            if outer:
                with lock:
                    calls[f"{cls_name}.{name}"] += 1
            depth.n = getattr(depth, "n", 0) + 1
            try:
                return method(*args, **kwargs)
            finally:
                depth.n -= 1

        return counted

    for cls in (libvirt.virConnect, libvirt.virDomain, libvirt.virStoragePool, libvirt.virStorageVol,
                libvirt.virNodeDevice):
        short = cls.__name__.removeprefix("vir")
        for name, method in list(vars(cls).items()):
            if name.startswith("_") or not callable(method):
                continue
            saved.append((cls, name, method))
            setattr(cls, name, wrap(short, name, method))
    try:
        yield calls
    finally:
        for cls, name, method in saved:
            setattr(cls, name, method)


def scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="hvc-bench-")
