"""S1, the pure part: device backing images — capture, read, match, and their XML form.

When a direct-assigned device is removed from a VM, its register state is captured into a
``DeviceImage`` that answers the guest's reads as the hardware did. The image belongs to the
VM and travels with it; on libvirt it lives in the domain's ``<metadata>`` under ``NS``, so a
migration carries it in the domain XML. Attaching hardware that *matches* the image (same
vendor and product, and class when both say) restores the device and retires the image.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from backends.base import find_device, find_vm
from backends.errors import BadInput
from backends.models import DeviceImage, Inventory, OwnerKind, PciDevice, Vm
from backends.requests import AttachRequest
from backends.xmlpath import find

NS = "https://hvconsole.dev/xmlns/images/1"
PREFIX = "hvc"  # the namespace prefix libvirt writes for NS
CONFIG_BYTES = 256  # the conventional PCI configuration space
_BIG_MMIO = 16 * 1024 * 1024  # GPUs and accelerators: a large BAR the image stands in for
_SMALL_MMIO = 16 * 1024


def capture(device: PciDevice, guest_address: str, registers: bytes, captured_at: float,
            mmio_bytes: int | None = None) -> DeviceImage:
    """The image of ``device`` as its guest saw it at ``guest_address``, from its register bytes."""
    return DeviceImage(
        address=guest_address, vendor=device.vendor, product=device.product, device_class=device.device_class,
        source_host=device.host, source_address=device.address, captured_at=captured_at,
        registers=registers.hex(), mmio_bytes=default_mmio(device) if mmio_bytes is None else mmio_bytes,
    )


def default_mmio(device: PciDevice) -> int:
    """The size of the MMIO window an image of ``device`` answers for (a large BAR for GPUs)."""
    kind = (device.device_class or "").lower()
    big = any(word in kind for word in ("3d", "vga", "display", "0x03", "processing accelerator"))
    return _BIG_MMIO if big else _SMALL_MMIO


def synthetic_registers(device: PciDevice) -> bytes:
    """A simulated device's configuration space: deterministic bytes, IDs first like real hardware."""
    seed = f"{device.host}:{device.address}:{device.vendor}:{device.product}".encode()
    body = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(CONFIG_BYTES // 32))
    ids = _id16(device.vendor) + _id16(device.product)
    return ids + body[len(ids):CONFIG_BYTES]


def _id16(text: str | None) -> bytes:
    """A 16-bit id, little-endian: the number when ``text`` is one (0x10de), else a stable hash."""
    try:
        value = int(text or "", 16)
    except ValueError:
        value = int.from_bytes(hashlib.sha256((text or "").encode()).digest()[:2], "little")
    return (value & 0xFFFF).to_bytes(2, "little")


def read(image: DeviceImage, offset: int, size: int = 4) -> int | None:
    """What a guest read of ``size`` bytes at ``offset`` returns, little-endian as PCI does.

    Inside the captured registers: the captured bytes. Elsewhere in the MMIO window: all ones,
    as absent hardware answers. Outside the window: None (the read is not the image's).
    """
    data = bytes.fromhex(image.registers)
    if offset < 0 or size <= 0:
        return None
    if offset + size <= len(data):
        return int.from_bytes(data[offset:offset + size], "little")
    if offset + size <= max(image.mmio_bytes, len(data)):
        return (1 << (8 * size)) - 1
    return None


def mismatch(image: DeviceImage, device: PciDevice) -> str | None:
    """Why ``device`` cannot restore ``image`` (None: it matches: same vendor, product, class)."""
    for what, want, have in (("vendor", image.vendor, device.vendor), ("product", image.product, device.product)):
        if want and _norm(want) != _norm(have):
            return f"{device.address} is {describe(device)}, the image is of {describe_image(image)} ({what} differs)"
    if image.device_class and device.device_class and _norm(image.device_class) != _norm(device.device_class):
        return f"{device.address} is a {device.device_class}, the image is of a {image.device_class}"
    return None


def matching_image(vm: Vm, device: PciDevice) -> DeviceImage | None:
    """The first of ``vm``'s images that ``device`` can restore."""
    return next((i for i in vm.device_images if mismatch(i, device) is None), None)


def attach_problem(vm: Vm, device: PciDevice) -> tuple[DeviceImage | None, str | None]:
    """The image ``device`` would restore on ``vm``, or why attaching it cannot restore one."""
    if not vm.device_images:
        return None, f"{vm.name} has no device images to restore"
    if device.owner.kind is OwnerKind.VM:
        return None, f"{device.address} belongs to {device.owner.vm}; hand it to the host first"
    image = matching_image(vm, device)
    if image is None:
        return None, "; ".join(filter(None, (mismatch(i, device) for i in vm.device_images)))
    return image, None


def describe(device: PciDevice) -> str:
    return " ".join(p for p in (device.vendor, device.product) if p) or device.address


def describe_image(image: DeviceImage) -> str:
    return " ".join(p for p in (image.vendor, image.product) if p) or image.source_address


def _norm(text: str | None) -> str:
    return (text or "").strip().lower()


# --- XML: the form kept in a libvirt domain's <metadata> ---------------------------------

_FIELDS = (("address", "address"), ("vendor", "vendor"), ("product", "product"), ("class", "device_class"),
           ("source-host", "source_host"), ("source-address", "source_address"))


def to_xml(images: Iterable[DeviceImage]) -> str:
    """``<images>`` with one ``<image>`` each, without a namespace: libvirt's ``setMetadata`` adds it."""
    root = ET.Element("images")
    for image in images:
        el = ET.SubElement(root, "image")
        for attr, name in _FIELDS:
            value = getattr(image, name)
            if value is not None:
                el.set(attr, str(value))
        el.set("captured-at", f"{image.captured_at:.3f}")
        el.set("mmio-bytes", str(image.mmio_bytes))
        el.text = image.registers
    return ET.tostring(root, encoding="unicode")


def from_element(root: ET.Element) -> tuple[DeviceImage, ...]:
    """Images from an ``<images>`` element, namespaced (as in a domain XML) or not."""
    out = []
    for el in root:
        if _local(el.tag) != "image":
            continue
        values = {name: el.get(attr) for attr, name in _FIELDS}
        try:
            captured = float(el.get("captured-at") or 0)
            mmio = int(el.get("mmio-bytes") or 0)
            registers = "".join((el.text or "").split())
            bytes.fromhex(registers)
        except ValueError as exc:
            raise ValueError(f"malformed device image {values.get('address')!r}: {exc}") from exc
        if not values["address"] or not values["source_host"] or not values["source_address"]:
            raise ValueError("a device image needs address, source-host and source-address")
        out.append(DeviceImage(
            address=values["address"], vendor=values["vendor"], product=values["product"],
            device_class=values["device_class"], source_host=values["source_host"],
            source_address=values["source_address"], captured_at=captured, registers=registers, mmio_bytes=mmio,
        ))
    return tuple(out)


def from_xml(text: str) -> tuple[DeviceImage, ...]:
    """Images from an ``<images>`` document (what libvirt's ``metadata()`` returns)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"malformed device images XML: {exc}") from exc
    if _local(root.tag) != "images":
        raise ValueError(f"expected <images>, got <{_local(root.tag)}>")
    return from_element(root)


def from_domain(root: ET.Element) -> tuple[DeviceImage, ...]:
    """The images a parsed ``<domain>`` carries in its metadata; malformed ones are skipped."""
    el = find(root, "metadata", f"{{{NS}}}images")
    if el is None:
        return ()
    try:
        return from_element(el)
    except ValueError:
        return ()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def check_attach(inv: Inventory, request: AttachRequest) -> tuple[Vm, PciDevice, DeviceImage]:
    """The running VM, the free matching hardware and the image it restores; BadInput says why not."""
    vm = find_vm(inv, request.vm, request.host)
    if not vm.active:
        raise BadInput(f"{vm.name} is {vm.state.value}; attaching restores a running guest's device",
                       hint=f"start {vm.name} first")
    device = find_device(inv, request.device, vm.host)
    image, why = attach_problem(vm, device)
    if image is None:
        raise BadInput(f"cannot attach {device.address} to {vm.name}: {why}",
                       hint=f"pick hardware on {vm.host} that matches the image (`hvc images`)")
    return vm, device, image
