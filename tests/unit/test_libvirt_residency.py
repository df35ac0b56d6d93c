"""S3 and S7 on libvirt's test driver: residency from the domain XML, balloon refusals, device-op guards."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backends.errors import BadInput, Unsupported
from backends.libvirt.backend import LibvirtBackend
from backends.models import Outcome
from backends.policy.device_op import PolicyDenied
from backends.requests import BalloonRequest, DeviceOpRequest

GIB = 1 << 20
U = "6f1c4e2a-0000-4000-8000-00000000000"
_DOMAIN = """<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='KiB'>{max}</memory><currentMemory unit='KiB'>{cur}</currentMemory>{extra}
  <vcpu>2</vcpu><os><type arch='x86_64'>hvm</type></os><devices>{devices}</devices></domain>
"""
_HOSTDEV = ("<hostdev mode='subsystem' type='pci' managed='yes'><source>"
            "<address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source></hostdev>")
_NODEDEV = """<device><name>pci_0000_{bus}_00_{fn}</name><parent>computer</parent>
  <capability type='pci'><class>{cls}</class><domain>0</domain><bus>{busd}</bus><slot>0</slot>
  <function>{fn}</function><product id='0x1234'>x</product><vendor id='0x8086'>Intel</vendor>
  <iommuGroup number='{group}'><address domain='0x0000' bus='0x{bus}' slot='0x00' function='0x{fn}'/>
  </iommuGroup></capability></device>
"""


@pytest.fixture
def backend(tmp_path: Path) -> LibvirtBackend:
    node = ["<node><cpu><mhz>2400</mhz><model>x</model><active>8</active><nodes>1</nodes><sockets>1</sockets>"
            "<cores>4</cores><threads>2</threads></cpu>",
            _DOMAIN.format(name="vfio-guest", uuid=U + "1",
                           max=8 * GIB, cur=4 * GIB, devices=_HOSTDEV,
                           extra="<memoryBacking><locked/></memoryBacking>"
                                 f"<memtune><hard_limit unit='KiB'>{9 * GIB}</hard_limit></memtune>"),
            _DOMAIN.format(name="locked-guest", uuid=U + "2",
                           max=4 * GIB, cur=4 * GIB, devices="",
                           extra="<memoryBacking><locked/></memoryBacking>"),
            _DOMAIN.format(name="plain", uuid=U + "3",
                           max=8 * GIB, cur=6 * GIB, devices="", extra=""),
            _NODEDEV.format(bus="3b", busd=59, fn=0, cls="0x020000", group=5),
            _NODEDEV.format(bus="5e", busd=94, fn=0, cls="0x010802", group=6),
            _NODEDEV.format(bus="af", busd=175, fn=0, cls="0x030000", group=7),
            _NODEDEV.format(bus="af", busd=175, fn=1, cls="0x040300", group=7),
            "</node>"]
    path = tmp_path / "node.xml"
    path.write_text("".join(node))
    b = LibvirtBackend([f"test://{path}"], poll_s=3600)
    yield b  # type: ignore[misc]
    b.close()


def test_residency_comes_from_the_domain_xml(backend: LibvirtBackend) -> None:
    inv = backend.snapshot()
    vfio, locked, plain = (inv.vm(n) for n in ("vfio-guest", "locked-guest", "plain"))
    assert vfio and vfio.devices == ("0000:3b:00.0",) and vfio.residency
    assert (vfio.residency.pinned_kib, vfio.residency.locked) == (4 * GIB, True)
    assert locked and locked.residency and locked.residency.pinned_kib == 4 * GIB and locked.residency.locked
    assert plain and plain.residency and (plain.residency.pinned_kib, plain.residency.locked) == (0, False)


def test_ballooning_a_guest_with_hostdevs_below_its_locked_memory_is_refused(backend: LibvirtBackend) -> None:
    before = backend.refresh()
    with pytest.raises(BadInput) as caught:
        backend.prepare(BalloonRequest("vfio-guest", 2 * GIB))
    assert "direct-assigned PCI device" in str(caught.value) and "4.0G is pinned" in str(caught.value)
    with pytest.raises(BadInput, match="locked"):
        backend.prepare(BalloonRequest("locked-guest", 3 * GIB))
    after = backend.refresh()
    assert after.vm("vfio-guest") == before.vm("vfio-guest") and after.vm("locked-guest") == before.vm("locked-guest")


def test_ballooning_a_guest_without_hostdevs_changes_its_memory_through_the_driver(backend: LibvirtBackend) -> None:
    op = backend.prepare(BalloonRequest("plain", 3 * GIB))
    result = op.run(lambda _e: None, threading.Event())
    # Each test:///file connection has its own copy of the node, so the job's own connection
    # reads back what the driver now holds.
    assert result.outcome is Outcome.SUCCEEDED and "the guest has 3.0G now" in result.reason
    grow = backend.prepare(BalloonRequest("vfio-guest", 6 * GIB))  # growing a pinned guest is allowed
    assert "grow vfio-guest" in grow.job.description


def test_device_operations_are_guarded_honestly(backend: LibvirtBackend) -> None:
    with pytest.raises(PolicyDenied, match="rom-write denied"):
        backend.prepare(DeviceOpRequest("0000:5e:00.0", "rom-write"))
    with pytest.raises(Unsupported, match="no API for power-state"):
        backend.prepare(DeviceOpRequest("0000:5e:00.0", "power-state"))
    with pytest.raises(BadInput, match="assigned to vfio-guest"):
        backend.prepare(DeviceOpRequest("0000:3b:00.0", "flr"))
    with pytest.raises(BadInput, match=r"would also reset 0000:af:00\.1"):
        backend.prepare(DeviceOpRequest("0000:af:00.0", "bus-reset"))
    op = backend.prepare(DeviceOpRequest("0000:5e:00.0", "bus-reset"))  # alone on its bus: translated to flr
    assert op.job.phases == ("flr",) and "translated to flr" in op.job.description
    result = op.run(lambda _e: None, threading.Event())
    assert result.outcome is Outcome.FAILED and "not supported" in result.reason  # the test driver has no reset
