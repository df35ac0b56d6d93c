"""Inventory → plain JSON-ready data, for `--json` output and scripts."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from backends.models import Host, Inventory


def inventory_to_dict(inv: Inventory, capabilities: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        "taken_at": inv.taken_at,
        "capabilities": sorted(capabilities),
        "sites": [asdict(s) for s in inv.sites],
        "hosts": [host_to_dict(h) for h in inv.hosts],
        "vms": [asdict(v) for v in inv.vms],
        "devices": [asdict(d) for d in inv.devices],
        "chains": [asdict(c) for c in inv.chains],
        "replicas": replicas_to_list(inv),
        "pools": [asdict(p) for p in inv.pools],
        "services": services_to_list(inv),
    }


def services_to_list(inv: Inventory) -> list[dict[str, Any]]:
    """S8: each storage service with where it runs; ``vf`` is null while it is unbound (moving)."""
    return [asdict(s) for s in inv.services]


def replicas_to_list(inv: Inventory) -> list[dict[str, Any]]:
    return [{**asdict(r), "rpo_violated": r.rpo_violated} for r in inv.replicas]


def host_to_dict(h: Host) -> dict[str, Any]:
    out = asdict(h)
    out["free_kib"] = h.free_kib
    out["numa"] = [
        {
            "id": c.id,
            "cpus": list(c.cpu_ids),
            "memory_kib": c.memory_kib,
            "free_kib": c.free_kib,
            "hugepages": [asdict(p) for p in c.hugepages],
            "distances": {str(cell): d for cell, d in c.distances},
            "cpu_topology": [asdict(cpu) for cpu in c.cpus],
        }
        for c in h.numa
    ]
    return out
