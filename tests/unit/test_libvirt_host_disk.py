"""S2 for disks, the checks made before anything changes, against libvirt's test:///default driver.

(The test driver cannot hot-plug, so the stages themselves run in tests/lab/test_lab_s2_disk.py.)
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from backends.errors import BadInput, NotFound
from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.handoff.host_disk import disk_with_source, guest_disk_xml, users_of
from backends.requests import HandoffRequest

VOL = ("<volume><name>data.qcow2</name><capacity unit='MiB'>16</capacity>"
       "<target><format type='qcow2'/></target></volume>")


@pytest.fixture
def setup() -> Iterator[tuple[LibvirtBackend, Any, str]]:
    backend = LibvirtBackend(["test:///default"], poll_s=3600)
    conn = backend.connected(backend.snapshot().hosts[0].name).connection
    vol = conn.storagePoolLookupByName("default-pool").createXML(VOL, 0)
    try:
        yield backend, conn, vol.path()
    finally:  # test:///default is shared by every connection of this process
        vol.delete(0)
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName("holder").undefine()
        backend.close()


def test_a_guest_without_a_scsi_or_usb_bus_is_refused(setup: tuple[LibvirtBackend, Any, str]) -> None:
    backend, _conn, path = setup
    with pytest.raises(BadInput, match="neither a SCSI nor a USB controller") as caught:
        backend.prepare(HandoffRequest(path, "test"))
    assert "\n" not in caught.value.one_line()


def test_missing_volume_receiver_and_direction_are_refused(setup: tuple[LibvirtBackend, Any, str]) -> None:
    backend, _conn, path = setup
    with pytest.raises(NotFound, match=r"no storage volume /default-pool/nope\.qcow2"):
        backend.prepare(HandoffRequest("/default-pool/nope.qcow2", "test"))
    with pytest.raises(NotFound, match="no VM called 'ghost'"):
        backend.prepare(HandoffRequest(path, "ghost"))
    with pytest.raises(BadInput, match="already the host's"):
        backend.prepare(HandoffRequest(path, "host"))


def test_a_volume_in_a_stopped_guests_definition_is_in_use(setup: tuple[LibvirtBackend, Any, str]) -> None:
    backend, conn, path = setup
    conn.defineXML(f"<domain type='test'><name>holder</name><memory>65536</memory><os><type>hvm</type></os>"
                   f"<devices><disk type='file' device='disk'><source file='{path}'/>"
                   f"<target dev='sda' bus='scsi'/></disk></devices></domain>")
    assert users_of(conn, path) == ["holder"]
    with pytest.raises(BadInput, match="in use by holder"):
        backend.prepare(HandoffRequest(path, "test"))


class FakeVol:
    def __init__(self, block: bool = False) -> None:
        self.block = block

    def XMLDesc(self, _flags: int) -> str:
        return "<volume><target><format type='raw'/></target></volume>"

    def info(self) -> list[int]:
        return [libvirt.VIR_STORAGE_VOL_BLOCK if self.block else libvirt.VIR_STORAGE_VOL_FILE, 0, 0]


def test_the_guest_disk_takes_scsi_else_usb_and_a_free_name() -> None:
    scsi = ("<domain><devices><controller type='scsi'/><controller type='usb'/>"
            "<disk><source file='/x'/><target dev='sda' bus='scsi'/></disk></devices></domain>")
    disk = ET.fromstring(guest_disk_xml(FakeVol(), "/p/v.img", (scsi,)))
    assert (disk.get("type"), disk.find("source").get("file")) == ("file", "/p/v.img")  # type: ignore[union-attr]
    assert disk.find("target").attrib == {"dev": "sdb", "bus": "scsi"}  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    usb = "<domain><devices><controller type='usb'/></devices></domain>"
    disk = ET.fromstring(guest_disk_xml(FakeVol(block=True), "/dev/sdz", (usb,)))
    assert disk.get("type") == "block" and disk.find("source").get("dev") == "/dev/sdz"  # type: ignore[union-attr]
    assert disk.find("target").attrib == {"dev": "sda", "bus": "usb"}  # type: ignore[union-attr]
    assert disk_with_source(scsi, "/x") is not None and disk_with_source(scsi, "/y") is None
