"""S3 on libvirt: what a domain's XML and bulk stats say about its memory residency.

A guest with a PCI ``<hostdev>`` has all its memory pinned: VFIO maps (and so pins) every
guest page for the device's DMA, and QEMU inhibits the balloon's page discards while a VFIO
device is attached. ``<memoryBacking><locked/>`` pins it all too (mlock). Resident memory is
the QEMU process's RSS from the bulk stats (``balloon.rss``), when the driver reports it;
nothing here makes a per-domain call.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from backends.models import Residency, VmState
from backends.xmlpath import find

ACTIVE = frozenset({VmState.RUNNING, VmState.PAUSED, VmState.MIGRATING})  # as ``Vm.active``: memory resident


def domain_residency(root: ET.Element, devices: tuple[str, ...], memory_kib: int) -> Residency:
    """Pinned and locked memory from the domain XML; resident is filled in from stats later."""
    locked = find(root, "memoryBacking", "locked") is not None
    pinned = memory_kib if devices or locked else 0
    return Residency(resident_kib=None, pinned_kib=pinned, locked=locked or bool(devices))


def with_stats(residency: Residency | None, state: VmState, memory_kib: int, rss_kib: int | None) -> Residency | None:
    """A domain's residency for its state, current memory and the RSS the bulk stats gave (if any)."""
    if residency is None or state not in ACTIVE:
        return None
    pinned = memory_kib if residency.locked else 0
    return replace(residency, resident_kib=int(rss_kib) if rss_kib else None, pinned_kib=pinned)
