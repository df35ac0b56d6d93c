"""S1 on the simulator: detach into a backing image, migrate with it, attach matching hardware to restore."""

from __future__ import annotations

import pytest

from backends import images
from backends.errors import BadInput, NotFound, ReadOnly
from backends.models import Outcome, OwnerKind, PhaseChanged, Progress
from backends.requests import AttachRequest, DetachRequest, MigrateRequest
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from tests.unit.test_sim_operations import run, sim

GPU = "0000:17:00.0"  # an A100 of ml-train-01 on fra-gpu01
SPARE_GPU = "0000:e3:00.0"  # a free A100 (vfio) on the same host


def test_detach_leaves_an_image_that_answers_like_the_device() -> None:
    backend = sim()
    before = backend.snapshot().vm("ml-train-01")
    assert before and GPU in before.devices
    result, events = run(backend, DetachRequest("ml-train-01", GPU))
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert [e.phase for e in events if isinstance(e, PhaseChanged)] == ["capturing", "detaching", "releasing"]
    captured = [e for e in events if isinstance(e, Progress) and e.phase == "capturing"]
    assert captured[-1].done == images.CONFIG_BYTES and captured[-1].remaining == 0
    inv = backend.snapshot()
    vm = inv.vm("ml-train-01")
    assert vm and GPU not in vm.devices
    (image,) = vm.device_images
    assert (image.source_host, image.source_address, image.product) == ("fra-gpu01", GPU, "GA100 [A100 PCIe 40GB]")
    assert image.address == "0000:00:10.0"  # the guest address the device had (its first device)
    device = next(d for d in inv.devices_on("fra-gpu01") if d.address == GPU)
    assert device.owner.kind is OwnerKind.VFIO  # free, on vfio-pci
    registers = images.synthetic_registers(device)
    assert images.read(image, 0, 4) == int.from_bytes(registers[:4], "little")  # the captured ID registers
    assert images.read(image, 0x1000, 4) == 0xFFFFFFFF  # inside the MMIO window, past the registers
    assert images.read(image, image.mmio_bytes, 4) is None


def test_the_image_travels_with_a_migration_and_matching_hardware_restores_it() -> None:
    backend = sim()
    before = backend.snapshot().vm("ml-train-01")
    assert before and GPU in before.devices
    assert run(backend, DetachRequest("ml-train-01", GPU))[0].outcome is Outcome.SUCCEEDED
    moved, _ = run(backend, MigrateRequest("ml-train-01", "fra-hv01"))
    assert moved.outcome is Outcome.SUCCEEDED, moved.reason
    vm = backend.snapshot().vm("ml-train-01")
    # The detached GPU's image, and one for each device the migration left behind on fra-gpu01.
    assert vm and vm.host == "fra-hv01" and vm.devices == ()
    assert sorted(i.source_address for i in vm.device_images) == sorted(before.devices)
    assert {i.source_host for i in vm.device_images} == {"fra-gpu01"}
    # fra-hv01 has no A100: its NVMe does not match the image, and the refusal says why.
    with pytest.raises(BadInput, match="vendor differs") as refused:
        backend.prepare(AttachRequest("ml-train-01", "0000:3b:00.0"))
    assert "A100" in refused.value.message
    back, _ = run(backend, MigrateRequest("ml-train-01", "fra-gpu01"))
    assert back.outcome is Outcome.SUCCEEDED, back.reason
    result, events = run(backend, AttachRequest("ml-train-01", SPARE_GPU))
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert [e.phase for e in events if isinstance(e, PhaseChanged)] == ["binding", "attaching", "restoring"]
    inv = backend.snapshot()
    vm = inv.vm("ml-train-01")
    # The spare restores one image; the two devices still on fra-gpu01's host stack keep theirs.
    assert vm and SPARE_GPU in vm.devices and len(vm.device_images) == 2
    spare = next(d for d in inv.devices_on("fra-gpu01") if d.address == SPARE_GPU)
    assert spare.owner.kind is OwnerKind.VM and spare.owner.vm == "ml-train-01"


def test_attach_refusals_change_nothing() -> None:
    backend = sim()
    with pytest.raises(BadInput, match="no device images"):
        backend.prepare(AttachRequest("ml-train-01", SPARE_GPU))
    run(backend, DetachRequest("ml-train-01", GPU))
    with pytest.raises(BadInput, match="belongs to ml-train-02"):
        backend.prepare(AttachRequest("ml-train-01", "0000:ca:00.0"))
    with pytest.raises(NotFound):
        backend.prepare(AttachRequest("ml-train-01", "0000:99:00.0"))
    with pytest.raises(BadInput, match="not ml-train-02's"):
        backend.prepare(DetachRequest("ml-train-02", SPARE_GPU))
    vm = backend.snapshot().vm("ml-train-01")
    assert vm and len(vm.device_images) == 1


def test_cancelled_detach_changes_nothing() -> None:
    backend = sim()
    result, _ = run(backend, DetachRequest("ml-train-01", GPU), cancel_after=2)
    assert result.outcome is Outcome.CANCELLED and "nothing changed" in result.reason
    vm = backend.snapshot().vm("ml-train-01")
    assert vm and GPU in vm.devices and vm.device_images == ()


def test_read_only_refuses_detach_and_attach() -> None:
    backend = SimBackend(load_fleet(demo_fleet_path()), ManualClock(), read_only=True)
    for request in (DetachRequest("ml-train-01", GPU), AttachRequest("ml-train-01", SPARE_GPU)):
        with pytest.raises(ReadOnly):
            backend.prepare(request)
