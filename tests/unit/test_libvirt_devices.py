"""S1 on libvirt's in-process test driver: images written to a domain's metadata reach the inventory."""

from __future__ import annotations

import time
from collections.abc import Iterator

import libvirt
import pytest

from backends import images
from backends.errors import BadInput, NotFound
from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.devices import hostdev_at, local_config_space, read_images, write_images
from backends.models import Owner, OwnerKind, PciDevice
from backends.requests import AttachRequest, DetachRequest

A100 = PciDevice("0000:17:00.0", "gpu01", "NVIDIA Corporation", "GA100 [A100 PCIe 40GB]", "3D controller",
                 "vfio-pci", 11, Owner(OwnerKind.VM, vm="test"))


@pytest.fixture
def backend() -> Iterator[LibvirtBackend]:
    b = LibvirtBackend(["test:///default"], poll_s=3600)
    yield b
    b.close()


def test_images_in_metadata_are_read_into_the_vm(backend: LibvirtBackend) -> None:
    host = backend.host_for("test:///default")
    assert host is not None and host.connection is not None
    dom = host.connection.lookupByName("test")
    image = images.capture(A100, "0000:00:10.0", bytes(range(64)), 1700000000.0)
    write_images(dom, (image,))
    assert read_images(dom) == (image,)
    assert images.NS in dom.XMLDesc(0)
    host.forget(dom.UUIDString())
    vm = backend.refresh().vm("test")
    assert vm is not None and vm.device_images == (image,)
    # Attaching hardware the host does not have is refused before anything changes.
    with pytest.raises(NotFound, match="no PCI device"):
        backend.prepare(AttachRequest("test", "0000:17:00.0"))
    with pytest.raises(BadInput, match="does not hold"):
        backend.prepare(DetachRequest("test", "0000:17:00.0"))
    write_images(dom, ())
    assert read_images(dom) == ()
    host.forget(dom.UUIDString())
    vm = backend.refresh().vm("test")
    assert vm is not None and vm.device_images == ()


def test_metadata_events_mark_the_domain_for_a_reread(backend: LibvirtBackend) -> None:
    """The test driver emits METADATA_CHANGE: a refresh alone (no forget) sees a new image."""
    host = backend.host_for("test:///default")
    assert host is not None and host.connection is not None
    dom = host.connection.lookupByName("test")
    image = images.capture(A100, "0000:00:11.0", b"", 1.0)
    write_images(dom, (image,))
    try:
        deadline = time.monotonic() + 5
        while (vm := backend.refresh().vm("test")) is not None and vm.device_images != (image,):
            assert time.monotonic() < deadline, "the metadata change was not noticed"
            time.sleep(0.1)
    finally:
        write_images(dom, ())


def test_hostdev_keeps_the_guest_address_and_config_space_is_read_only_locally() -> None:
    xml = hostdev_at("0000:3b:00.1", "0000:00:10.0")
    assert "bus='0x3b'" in xml.replace('"', "'") and "slot='0x10'" in xml.replace('"', "'")
    assert local_config_space("qemu+ssh://root@far/system", "0000:00:00.0") is None
    local = local_config_space("qemu:///system", "0000:00:00.0")
    assert local is None or len(local) <= images.CONFIG_BYTES


def test_libvirt_error_codes_used_exist() -> None:
    assert libvirt.VIR_ERR_NO_DOMAIN_METADATA and libvirt.VIR_DOMAIN_METADATA_ELEMENT == 2
