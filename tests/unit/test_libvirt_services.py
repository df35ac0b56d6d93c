"""S8 on libvirt without SR-IOV hardware: service metadata and VF MACs parsed, the move planned and refused."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from backends.errors import BadInput
from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.service_xml import NS, interface_xml, parse_services
from backends.libvirt.services import LibvirtServiceMove, plan_service_move
from backends.libvirt.testfleet import SERVICE, SERVICE_MAC, SRIOV_VFS, fleet_uri, write_test_fleet
from backends.models import Inventory
from backends.requests import ServiceMoveRequest

DOMAIN = f"""<domain type='kvm'><name>nas-01</name><uuid>11111111-2222-4333-a444-555555555555</uuid>
  <metadata>
    <hvc:service xmlns:hvc='{NS}' name='iscsi-a' protocol='iscsi' identifier='02:5E:10:00:00:0A'/>
    <hvc:service xmlns:hvc='{NS}' name='nfs-b' protocol='nfs' identifier='02:5e:10:00:00:0b'/>
    <other:thing xmlns:other='https://example.com/x' name='not-a-service'/>
  </metadata>
  <devices>
    <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/></interface>
    <interface type='hostdev' managed='yes'><mac address='02:5e:10:00:00:0a'/>
      <source><address type='pci' domain='0x0000' bus='0x18' slot='0x01' function='0x3'/></source>
    </interface>
  </devices>
</domain>"""


def test_metadata_names_services_and_the_interface_mac_finds_the_vf() -> None:
    a, b = parse_services(DOMAIN, "hv1")
    assert (a.name, a.vm, a.host, a.identifier, a.protocol, a.vf) == (
        "iscsi-a", "nas-01", "hv1", "02:5e:10:00:00:0a", "iscsi", "0000:18:01.3")
    assert (b.name, b.identifier, b.protocol, b.vf) == ("nfs-b", "02:5e:10:00:00:0b", "nfs", None)  # unbound


def test_without_identifier_the_first_hostdev_interface_carries_it() -> None:
    xml = DOMAIN.replace(" identifier='02:5E:10:00:00:0A'", "")
    assert parse_services(xml, "hv1")[0].identifier == "02:5e:10:00:00:0a"
    assert parse_services("<domain><name>x</name></domain>", "hv1") == ()


def test_interface_xml_sets_the_mac_on_the_vf() -> None:
    el = ET.fromstring(interface_xml("02:5e:10:00:00:0a", "0000:3b:11.2"))
    assert (el.tag, el.get("type"), el.get("managed")) == ("interface", "hostdev", "yes")
    assert el.find("mac").get("address") == "02:5e:10:00:00:0a"  # type: ignore[union-attr]
    assert el.find("source/address").attrib == {  # type: ignore[union-attr]
        "type": "pci", "domain": "0x0000", "bus": "0x3b", "slot": "0x11", "function": "0x2"}


@pytest.fixture
def two_hosts(tmp_path: Path) -> LibvirtBackend:
    """A host whose vm0000 exports a service on a VF, and an empty host whose VFs are all free."""
    source = fleet_uri(write_test_fleet(tmp_path / "a.xml", 4))
    dest = fleet_uri(write_test_fleet(tmp_path / "b.xml", 0, seed=1))
    backend = LibvirtBackend([source, dest, "test:///default"], poll_s=3600)
    yield backend  # type: ignore[misc]
    backend.close()


def test_the_backend_lists_the_service_from_domain_xml(two_hosts: LibvirtBackend) -> None:
    inv = two_hosts.snapshot()
    (svc,) = inv.services
    assert (svc.name, svc.vm, svc.identifier, svc.vf) == (SERVICE, "vm0000", SERVICE_MAC, SRIOV_VFS[0])
    assert svc.host == inv.hosts[0].name


def with_cells(backend: LibvirtBackend) -> Inventory:
    """The test driver's fleet files report no NUMA cells (see testfleet): lend the destination those
    of test:///default, so placement can be checked as on a real host."""
    inv = backend.snapshot()
    src, dest, default = inv.hosts
    inv = replace(inv, hosts=(src, replace(dest, numa=default.numa), default))
    backend._inventory = inv  # what prepare reads
    return inv


def test_a_move_is_planned_onto_a_free_vf_with_the_same_mac(two_hosts: LibvirtBackend) -> None:
    inv = with_cells(two_hosts)
    dest = inv.hosts[1].name
    plan = plan_service_move(inv, SERVICE, dest)
    assert plan.dest == dest and plan.dest_vf == min(SRIOV_VFS)  # every VF there is free: the first
    assert ET.fromstring(plan.attach_xml).find("mac").get("address") == SERVICE_MAC  # type: ignore[union-attr]
    op = two_hosts.prepare(ServiceMoveRequest(SERVICE, dest))
    assert isinstance(op, LibvirtServiceMove)
    assert {f"{inv.hosts[0].name}/{SRIOV_VFS[0]}", f"{dest}/{plan.dest_vf}", "vm0000"} <= set(op.job.targets)
    released = ET.fromstring(op.release_xml)  # what the release unplugs: the VF interface carrying the MAC
    assert released.find("mac").get("address") == SERVICE_MAC  # type: ignore[union-attr]


def test_a_destination_without_a_free_vf_is_refused(two_hosts: LibvirtBackend) -> None:
    with pytest.raises(BadInput, match="test:///default has no free SR-IOV VF to carry 02:5e:00:00:00:01"):
        two_hosts.prepare(ServiceMoveRequest(SERVICE, "test:///default"))
