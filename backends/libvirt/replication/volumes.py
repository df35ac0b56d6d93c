"""Storage volumes and pools as replication sees them: a volume's facts, a disk's volume chain,
and creating, finding and deleting volumes in a pool."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from backends.errors import BadInput


@dataclass(frozen=True, slots=True)
class VolFacts:
    """What a volume's XML says about it: where it is, its format, sizes and mtime."""

    name: str
    path: str
    format: str | None
    capacity: int
    allocation: int
    physical: int
    mtime: str


def vol_facts(vol: Any) -> VolFacts:
    """Read a volume's facts from its XML description."""
    root = ET.fromstring(vol.XMLDesc(0))

    def size(tag: str) -> int:
        el = root.find(tag)
        return int(el.text or 0) if el is not None and el.text else 0

    fmt = root.find("target/format")
    return VolFacts(
        name=root.findtext("name") or vol.name(), path=root.findtext("target/path") or vol.path(),
        format=fmt.get("type") if fmt is not None else None, capacity=size("capacity"),
        allocation=size("allocation"), physical=size("physical") or size("allocation"),
        mtime=root.findtext("target/timestamps/mtime") or "",
    )


def volume_chain(conn: Any, top: str, what: str, host: str) -> list[tuple[Any, VolFacts]]:
    """A disk's layers, base first, found by following each volume's ``<backingStore>``: a
    shut-off domain's XML names only its top image."""
    out: list[tuple[Any, VolFacts]] = []
    path: str | None = top
    while path:
        if len(out) > 255 or any(f.path == path for _, f in out):
            raise BadInput(f"the backing chain of {what} loops or is longer than 256 layers")
        try:
            vol = conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            raise BadInput(f"{path} ({what}) is not in a storage pool on {host}",
                           hint="replication moves layers through libvirt storage pools: "
                                "define a directory pool over its directory") from exc
        out.append((vol, vol_facts(vol)))
        path = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")
    return out[::-1]


def pool_type(pool: Any) -> str:
    """The pool's type (``dir``, ``fs``, ``logical``…)."""
    return ET.fromstring(pool.XMLDesc(0)).get("type", "")


def pool_path(pool: Any) -> str:
    """The pool's target directory, "" when it has none."""
    return ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""


def new_volume(pool: Any, name: str) -> Any:
    """An empty file volume; the upload fills it and libvirt probes its format afterwards."""
    xml = (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>0</capacity>"
           f"<target><format type='raw'/></target></volume>")
    return pool.createXML(xml, 0)


def lookup(pool: Any, name: str) -> Any | None:
    """The volume called ``name`` in ``pool``, or None."""
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def delete(pool: Any, name: str) -> None:
    """Delete the volume called ``name`` from ``pool`` if it is there."""
    vol = lookup(pool, name)
    if vol is not None:
        with contextlib.suppress(libvirt.libvirtError):
            vol.delete(0)
