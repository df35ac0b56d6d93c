"""S1 and S2 on the real two-host lab, as far as hardware without an IOMMU lets them go.

S1: the lab cannot assign a PCI device, so nothing can be *detached* into an image here. What
the lab can show is the rest, for real: an image written into a running guest's metadata by
hvc travels with a live migration A → B, the backend reads it back on B as the VM's
``device_images``, and attaching hardware on B that does not match it is refused with why.

S2: a host → VM handoff of one of the machine's PCI devices runs real libvirt calls and fails
at its first stage (``building vfio stack``: this machine has no IOMMU); the device must be left
with the host exactly as it was and the guest must hold no hostdev.
"""

from __future__ import annotations

import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from backends import images
from backends.errors import BadInput
from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.devices import read_images, write_images
from backends.libvirt.lab import LabStatus
from backends.models import Inventory, Outcome, Owner, OwnerKind, PciDevice, PhaseChanged
from backends.requests import AttachRequest, HandoffRequest, MigrateRequest
from tests.lab.test_lab_operations import MOVER, bring_mover_home, names, run_op, running_on

A100 = PciDevice("0000:17:00.0", "gpu01", "NVIDIA Corporation", "GA100 [A100 PCIe 40GB]", "3D controller",
                 "vfio-pci", 11, Owner(OwnerKind.VM, vm=MOVER))
BRIDGE = "0000:00:00.0"  # the host bridge: no driver, nothing depends on binding it


@pytest.fixture
def backend(lab: LabStatus) -> Iterator[LibvirtBackend]:
    b = LibvirtBackend(lab.uris, poll_s=3600)
    yield b
    b.close()


def _clear_images(uri: str) -> None:
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName(MOVER)
        if read_images(dom):
            write_images(dom, ())
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


def test_an_image_in_the_metadata_travels_with_a_live_migration(lab: LabStatus, backend: LibvirtBackend) -> None:
    a_uri, b_uri = lab.uris
    a, b = names(backend, lab)
    bring_mover_home(lab)
    image = images.capture(replace(A100, host=a), "0000:00:10.0", bytes(range(64)), 1700000000.0)
    try:
        conn = libvirt.open(a_uri)
        try:
            write_images(conn.lookupByName(MOVER), (image,))
        finally:
            conn.close()
        host_a = backend.host_for(a_uri)
        assert host_a is not None
        host_a.forget(next(v.uuid for v in backend.snapshot().vms if v.name == MOVER and v.host == a))
        assert _images_on(_refreshed_until(backend, lambda i: _images_on(i, a) == (image,)), a) == (image,)

        run = run_op(backend, MigrateRequest(MOVER, b))
        assert run.result is not None and run.result.outcome is Outcome.SUCCEEDED, run.result
        assert running_on(b_uri, MOVER)
        inv = _refreshed_until(backend, lambda i: _images_on(i, b) == (image,))
        assert _images_on(inv, b) == (image,)  # read back from host B's domain XML by the backend
        conn = libvirt.open(b_uri)
        try:
            assert read_images(conn.lookupByName(MOVER)) == (image,)  # and B's libvirt holds it
        finally:
            conn.close()

        # B has no A100: attaching one of B's real devices is refused, saying why; nothing changes.
        device = next(d for d in inv.devices_on(b) if d.owner.kind is not OwnerKind.VM)
        with pytest.raises(BadInput, match="differs") as refused:
            backend.prepare(AttachRequest(MOVER, device.address, host=b))
        print(f"\nattach on {b} refused: {refused.value.one_line()}")
        assert "A100" in refused.value.message
    finally:
        _clear_images(b_uri)
        _clear_images(a_uri)
        bring_mover_home(lab)
        _clear_images(a_uri)


def _refreshed_until(backend: LibvirtBackend, predicate: Callable[[Inventory], bool],
                     timeout: float = 20.0) -> Inventory:
    deadline = time.monotonic() + timeout
    while not predicate(inv := backend.refresh()):
        assert time.monotonic() < deadline, f"not seen within {timeout}s"
        time.sleep(0.2)
    return inv


def _images_on(inv: Inventory, host: str) -> tuple[images.DeviceImage, ...]:
    vm = next((v for v in inv.vms if v.name == MOVER and v.host == host and v.active), None)
    return vm.device_images if vm else ()


def test_s2_host_to_vm_without_an_iommu_fails_building_the_vfio_stack_and_leaves_the_host_as_it_was(
        lab: LabStatus, backend: LibvirtBackend) -> None:
    groups = Path("/sys/kernel/iommu_groups")
    if (groups.is_dir() and any(groups.iterdir())) or os.path.exists("/dev/vfio/vfio"):
        pytest.skip("this machine has an IOMMU: the test will not rebind a real device here")
    a_uri, _ = lab.uris
    a, _ = names(backend, lab)
    bring_mover_home(lab)
    inv = backend.snapshot()
    bridge = next((d for d in inv.devices_on(a) if d.address == BRIDGE), None)
    if bridge is None or bridge.driver is not None:
        pytest.skip(f"{BRIDGE} is not a driverless host bridge here")
    # The planner refuses a device in no IOMMU group before calling libvirt; report one so the
    # job reaches libvirt and the real nodeDeviceDetachFlags answers instead.
    grouped = replace(inv, devices=tuple(replace(d, iommu_group=0) if d is bridge else d for d in inv.devices))
    real_snapshot = backend.snapshot
    backend.snapshot = lambda: grouped  # type: ignore[method-assign]
    try:
        op = backend.prepare(HandoffRequest(BRIDGE, MOVER, host=a))
    finally:
        backend.snapshot = real_snapshot  # type: ignore[method-assign]
    assert op.job.phases == ("building vfio stack", "attaching to VM", "host relinquished")
    events: list[object] = []
    result = op.run(events.append, threading.Event())
    print(f"\nS2 on real libvirt: {result.reason}")
    assert result.outcome is Outcome.FAILED
    assert result.reason.startswith("building vfio stack failed: binding 0000:00:00.0 to vfio-pci:")
    assert [e.phase for e in events if isinstance(e, PhaseChanged)] == ["building vfio stack"]
    conn = libvirt.open(a_uri)
    try:
        node = ET.fromstring(conn.nodeDeviceLookupByName("pci_0000_00_00_0").XMLDesc(0))
        assert node.find("driver/name") is None  # still as the host had it
        live = ET.fromstring(conn.lookupByName(MOVER).XMLDesc(0))
        assert live.findall("devices/hostdev") == []
    finally:
        conn.close()
