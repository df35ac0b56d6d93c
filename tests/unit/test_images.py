"""S1's pure part: images round-trip through their metadata XML, answer reads, and match hardware."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from backends import images
from backends.models import Owner, OwnerKind, PciDevice, Vm, VmState

A100 = PciDevice("0000:17:00.0", "gpu01", "NVIDIA Corporation", "GA100 [A100 PCIe 40GB]", "3D controller",
                 "vfio-pci", 11, Owner(OwnerKind.VM, vm="ml"))


def test_capture_round_trips_through_metadata_xml() -> None:
    registers = bytes(range(256))
    image = images.capture(A100, "0000:00:10.0", registers, 1700000000.25)
    assert image.mmio_bytes == 16 * 1024 * 1024  # a 3D controller: large BAR
    text = images.to_xml([image, image])
    assert ET.fromstring(text).tag == "images"  # no namespace: libvirt's setMetadata adds it
    assert images.from_xml(text) == (image, image)
    # As it sits in a domain XML, namespaced by libvirt:
    domain = (f"<domain><name>x</name><metadata><hvc:images xmlns:hvc='{images.NS}'>"
              + text.removeprefix("<images>").removesuffix("</images>").replace("<image ", "<hvc:image ")
              .replace("</image>", "</hvc:image>") + "</hvc:images></metadata></domain>")
    assert images.from_domain(ET.fromstring(domain)) == (image, image)
    assert images.from_domain(ET.fromstring("<domain><metadata/></domain>")) == ()


def test_reads_answer_from_the_captured_registers() -> None:
    image = images.capture(A100, "0000:00:10.0", bytes.fromhex("de10b520") + bytes(252), 0.0, mmio_bytes=4096)
    assert images.read(image, 0, 2) == 0x10DE and images.read(image, 2, 2) == 0x20B5
    assert images.read(image, 512, 4) == 0xFFFFFFFF and images.read(image, 4096, 1) is None


def test_matching_needs_vendor_product_and_class() -> None:
    image = images.capture(A100, "0000:00:10.0", b"", 0.0)
    same = PciDevice("0000:e3:00.0", "other", "nvidia corporation", "GA100 [A100 PCIe 40GB]", "3D controller",
                     "nvidia", 5, Owner(OwnerKind.HOST, driver="nvidia"))
    assert images.mismatch(image, same) is None
    a10 = PciDevice("0000:ca:00.0", "other", "NVIDIA Corporation", "GA102GL [A10]", "3D controller", None, 6,
                    Owner(OwnerKind.UNBOUND))
    assert "product differs" in (images.mismatch(image, a10) or "")
    vm = Vm("ml", "u", "other", VmState.RUNNING, 1, 1, device_images=(image,))
    assert images.matching_image(vm, same) is image and images.matching_image(vm, a10) is None


def test_malformed_images_are_refused() -> None:
    with pytest.raises(ValueError, match="needs address"):
        images.from_xml("<images><image address='x'/></images>")
    with pytest.raises(ValueError, match="malformed"):
        images.from_xml("<images><image address='x' source-host='h' source-address='a'>zz</image></images>")
