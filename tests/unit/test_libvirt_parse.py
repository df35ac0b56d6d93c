"""XML → model parsing for the libvirt backend, on embedded samples and libvirt's test driver."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from backends.analysis import claims
from backends.libvirt.parse import (
    parse_capabilities,
    parse_domain,
    parse_nodedev,
    resolve_owners,
)
from backends.libvirt.testfleet import GPU, SRIOV_PF, SRIOV_VFS, fleet_uri, write_test_fleet
from backends.models import CellShare, DiskLayer, HugePages, OwnerKind, VcpuPin, VmState
from backends.units import parse_cpuset

QEMU_CAPS = """<capabilities>
  <host>
    <uuid>4c4c4544-0047-3010-8052-b4c04f4e4d32</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>Cascadelake-Server-noTSX</model>
      <vendor>Intel</vendor>
      <microcode version='83898371'/>
      <signature family='6' model='85' stepping='7'/>
      <topology sockets='1' dies='1' cores='4' threads='2'/>
      <feature name='ss'/>
      <pages unit='KiB' size='4'/>
      <pages unit='KiB' size='2048'/>
      <pages unit='KiB' size='1048576'/>
    </cpu>
    <iommu support='yes'/>
    <topology>
      <cells num='2'>
        <cell id='0'>
          <memory unit='KiB'>65448732</memory>
          <pages unit='KiB' size='4'>15313799</pages>
          <pages unit='KiB' size='2048'>1024</pages>
          <pages unit='KiB' size='1048576'>4</pages>
          <distances>
            <sibling id='0' value='10'/>
            <sibling id='1' value='21'/>
          </distances>
          <cpus num='8'>
            <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0,8'/>
            <cpu id='1' socket_id='0' die_id='0' core_id='1' siblings='1,9'/>
            <cpu id='2' socket_id='0' die_id='0' core_id='2' siblings='2,10'/>
            <cpu id='3' socket_id='0' die_id='0' core_id='3' siblings='3,11'/>
            <cpu id='8' socket_id='0' die_id='0' core_id='0' siblings='0,8'/>
            <cpu id='9' socket_id='0' die_id='0' core_id='1' siblings='1,9'/>
            <cpu id='10' socket_id='0' die_id='0' core_id='2' siblings='2,10'/>
            <cpu id='11' socket_id='0' die_id='0' core_id='3' siblings='3,11'/>
          </cpus>
        </cell>
        <cell id='1'>
          <memory unit='KiB'>66002548</memory>
          <pages unit='KiB' size='4'>15452733</pages>
          <pages unit='KiB' size='2048'>512</pages>
          <pages unit='KiB' size='1048576'>0</pages>
          <distances>
            <sibling id='0' value='21'/>
            <sibling id='1' value='10'/>
          </distances>
          <cpus num='8'>
            <cpu id='4' socket_id='1' die_id='0' core_id='0' siblings='4-5'/>
            <cpu id='5' socket_id='1' die_id='0' core_id='0' siblings='4-5'/>
            <cpu id='6' socket_id='1' die_id='0' core_id='1' siblings='6-7'/>
            <cpu id='7' socket_id='1' die_id='0' core_id='1' siblings='6-7'/>
            <cpu id='12' socket_id='1' die_id='0' core_id='2' siblings='12-13'/>
            <cpu id='13' socket_id='1' die_id='0' core_id='2' siblings='12-13'/>
            <cpu id='14' socket_id='1' die_id='0' core_id='3' siblings='14-15'/>
            <cpu id='15' socket_id='1' die_id='0' core_id='3' siblings='14-15'/>
          </cpus>
        </cell>
      </cells>
    </topology>
    <cache>
      <bank id='0' level='3' type='both' size='22' unit='MiB' cpus='0-3,8-11'/>
    </cache>
    <secmodel><model>none</model><doi>0</doi></secmodel>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'><wordsize>64</wordsize><emulator>/usr/bin/qemu-system-x86_64</emulator>
      <domain type='kvm'/></arch>
  </guest>
</capabilities>"""

DOMAIN = """<domain type='kvm' id='7'>
  <name>db01</name>
  <uuid>0b3c1d6e-9a52-4c7e-8f0e-2f6a43a1c001</uuid>
  <memory unit='GiB'>8</memory>
  <currentMemory unit='MiB'>6144</currentMemory>
  <vcpu placement='static' cpuset='12-15' current='6'>8</vcpu>
  <cputune>
    <vcpupin vcpu='0' cpuset='0-3,^2'/>
    <vcpupin vcpu='1' cpuset='8'/>
  </cputune>
  <numatune>
    <memory mode='strict' nodeset='0-1'/>
    <memnode cellid='0' mode='strict' nodeset='0'/>
    <memnode cellid='1' mode='interleave' nodeset='0-1,3'/>
  </numatune>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='host-passthrough'>
    <topology sockets='1' dies='1' cores='4' threads='2'/>
    <numa>
      <cell id='0' cpus='0-3' memory='4' unit='GiB'/>
      <cell id='1' cpus='4-5' memory='2097152' unit='KiB'/>
      <cell id='2' cpus='6-7' memory='2048' unit='MiB'/>
    </numa>
  </cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/db01-top.qcow2' index='3'/>
      <backingStore type='file' index='2'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/db01-snap.qcow2'/>
        <backingStore type='block' index='1'>
          <format type='raw'/>
          <source dev='/dev/vg0/golden'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='rbd-pool/db01-data'><host name='ceph1' port='6789'/></source>
      <target dev='sdb' bus='scsi'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sdc' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>
    <interface type='hostdev' managed='yes'>
      <source><address type='pci' domain='0x0000' bus='0x3B' slot='0x10' function='0x2'/></source>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <driver name='vfio'/>
      <source><address domain='0x0000' bus='0xAF' slot='0x00' function='0x0'/></source>
      <alias name='hostdev0'/>
    </hostdev>
    <hostdev mode='subsystem' type='usb' managed='yes'>
      <source><vendor id='0x0781'/><product id='0x5567'/></source>
    </hostdev>
  </devices>
</domain>"""

PF = """<device>
  <name>pci_0000_3b_00_0</name>
  <path>/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0</path>
  <parent>pci_0000_3a_00_0</parent>
  <driver><name>ixgbe</name></driver>
  <capability type='pci'>
    <class>0x020000</class>
    <domain>0</domain><bus>59</bus><slot>0</slot><function>0</function>
    <product id='0x10fb'>82599ES 10-Gigabit SFI/SFP+ Network Connection</product>
    <vendor id='0x8086'>Intel Corporation</vendor>
    <capability type='virt_functions' maxCount='63'>
      <address domain='0x0000' bus='0x3b' slot='0x10' function='0x0'/>
      <address domain='0x0000' bus='0x3b' slot='0x10' function='0x2'/>
    </capability>
    <iommuGroup number='40'><address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>
    </iommuGroup>
    <numa node='0'/>
  </capability>
</device>"""

VF = """<device>
  <name>pci_0000_3b_10_2</name>
  <parent>pci_0000_3a_00_0</parent>
  <driver><name>vfio-pci</name></driver>
  <capability type='pci'>
    <class>0x020000</class>
    <domain>0</domain><bus>59</bus><slot>16</slot><function>2</function>
    <product id='0x10ed'/>
    <vendor id='0x8086'>Intel Corporation</vendor>
    <capability type='phys_function'>
      <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>
    </capability>
    <iommuGroup number='91'><address domain='0x0000' bus='0x3b' slot='0x10' function='0x2'/>
    </iommuGroup>
  </capability>
</device>"""


def test_cpuset_syntax() -> None:
    lenient = functools.partial(parse_cpuset, strict=False)
    assert lenient("0-3,^2,8") == (0, 1, 3, 8)
    assert lenient("0,4") == (0, 4)
    assert lenient("0-1") == (0, 1)
    assert lenient(" 6 , 2-3 ") == (2, 3, 6)
    assert lenient("") == ()
    assert lenient("x-y,5,3-1") == (5,)


def test_capabilities_of_the_default_test_driver() -> None:
    conn = libvirt.open("test:///default")
    try:
        topo = parse_capabilities(conn.getCapabilities())
    finally:
        conn.close()
    assert [c.id for c in topo.cells] == [0, 1]
    assert [len(c.cpus) for c in topo.cells] == [8, 8]
    assert topo.cells[1].cpu_ids == tuple(range(8, 16))
    assert {cpu.socket for cpu in topo.cells[1].cpus} == {1}
    assert topo.cells[0].cpus[3].core == 3
    assert topo.threads == 16
    assert topo.memory_kib == 2097152 + 4194304
    assert all(c.free_kib is None for c in topo.cells)
    # The test driver lists no distances; when absent they stay unknown.
    assert topo.cells[0].distances == ()
    assert topo.cells[0].distance_to(1) is None
    # Cell 1's base pages are 8 KiB in the test driver; 2 MiB and 1 GiB are its huge pages.
    assert [h.size_kib for h in topo.cells[1].hugepages] == [2048, 1048576]


def test_capabilities_of_a_two_socket_qemu_host() -> None:
    topo = parse_capabilities(QEMU_CAPS)
    assert topo.cpu_model == "Cascadelake-Server-noTSX"
    assert topo.threads == 16
    assert topo.memory_kib == 65448732 + 66002548
    c0, c1 = topo.cells
    assert c0.cpu_ids == (0, 1, 2, 3, 8, 9, 10, 11)
    assert c0.cpus[4].id == 8 and c0.cpus[4].core == 0 and c0.cpus[4].siblings == (0, 8)
    assert c1.cpus[0].socket == 1 and c1.cpus[0].siblings == (4, 5)
    assert c0.hugepages == (HugePages(2048, 1024), HugePages(1048576, 4))
    assert c1.hugepages == (HugePages(2048, 512), HugePages(1048576, 0))
    assert c0.distances == ((0, 10), (1, 21))
    assert c1.distance_to(0) == 21 and c1.distance_to(1) == 10


def test_capabilities_without_cells_use_the_cpu_topology() -> None:
    topo = parse_capabilities(
        "<capabilities><host><cpu><model>EPYC</model>"
        "<topology sockets='2' dies='1' cores='8' threads='2'/></cpu></host></capabilities>"
    )
    assert (topo.cells, topo.threads, topo.memory_kib) == ((), 32, None)


def test_domain_sizing_numa_and_pinning() -> None:
    facts = parse_domain(DOMAIN, "hv1")
    vm = facts.vm
    assert (vm.name, vm.host, vm.uuid) == ("db01", "hv1", "0b3c1d6e-9a52-4c7e-8f0e-2f6a43a1c001")
    assert vm.state is VmState.UNKNOWN
    assert vm.vcpus == 6
    assert vm.memory_kib == 6 * 1024 * 1024
    assert vm.max_memory_kib == 8 * 1024 * 1024
    assert vm.memory_nodeset == (0, 1)
    c0, c1, c2 = vm.vnuma
    assert (c0.vcpus, c0.memory_kib) == ((0, 1, 2, 3), 4194304)
    assert c0.backing == (CellShare(0, 4194304),)  # one backing cell: it holds all the memory
    # A multi-cell nodeset is one share per physical cell, amounts unknown.
    assert c1.backing == (CellShare(0), CellShare(1), CellShare(3))
    assert c1.backing_cells == (0, 1, 3) and c1.memory_kib == 2097152
    # No memnode: libvirt places the cell by <numatune><memory nodeset>.
    assert c2.backing_cells == (0, 1) and c2.memory_kib == 2097152
    assert vm.pinning == (
        VcpuPin(0, (0, 1, 3)),
        VcpuPin(1, (8,)),
        *(VcpuPin(v, (12, 13, 14, 15)) for v in range(2, 6)),
    )


def test_domain_devices_disks_and_chains() -> None:
    facts = parse_domain(DOMAIN, "hv1")
    assert facts.vm.devices == ("0000:3b:10.2", "0000:af:00.0")
    assert facts.vm.disks == ("vda", "sdb")
    vda, sdb = facts.chains
    assert (vda.vm, vda.host, vda.disk) == ("db01", "hv1", "vda")
    assert vda.layers == (
        DiskLayer("/dev/vg0/golden", "raw"),
        DiskLayer("/var/lib/libvirt/images/db01-snap.qcow2", "qcow2"),
        DiskLayer("/var/lib/libvirt/images/db01-top.qcow2", "qcow2"),
    )
    assert vda.base.path == "/dev/vg0/golden"
    assert vda.active.path.endswith("db01-top.qcow2")
    assert sdb.layers == (DiskLayer("rbd:rbd-pool/db01-data", "raw"),)


def test_minimal_domain_has_empty_facts() -> None:
    facts = parse_domain("<domain type='test'><name>bare</name></domain>", "h")
    vm = facts.vm
    assert (vm.name, vm.uuid, vm.vcpus, vm.memory_kib) == ("bare", "", 0, 0)
    assert vm.max_memory_kib is None
    assert (vm.vnuma, vm.pinning, vm.memory_nodeset, vm.devices, vm.disks) == ((),) * 5
    assert facts.chains == ()


def test_nodedev_physical_function() -> None:
    dev = parse_nodedev(PF, "hv1")
    assert dev is not None
    assert (dev.address, dev.host, dev.name) == ("0000:3b:00.0", "hv1", "pci_0000_3b_00_0")
    assert dev.vendor == "Intel Corporation"
    assert dev.product == "82599ES 10-Gigabit SFI/SFP+ Network Connection"
    assert (dev.device_class, dev.driver, dev.iommu_group) == ("0x020000", "ixgbe", 40)
    assert dev.vfs == ("0000:3b:10.0", "0000:3b:10.2")
    assert not dev.is_vf
    assert dev.owner.kind is OwnerKind.HOST and str(dev.owner) == "host:ixgbe"


def test_nodedev_virtual_function() -> None:
    dev = parse_nodedev(VF, "hv1")
    assert dev is not None
    assert dev.address == "0000:3b:10.2"
    assert dev.is_vf and dev.physfn == "0000:3b:00.0"
    assert dev.product == "0x10ed"  # no name known: the id stands in
    assert dev.iommu_group == 91 and dev.vfs == ()
    assert dev.owner.kind is OwnerKind.VFIO and dev.owner.driver == "vfio-pci"
    unbound = parse_nodedev(VF.replace("<driver><name>vfio-pci</name></driver>", ""), "hv1")
    assert unbound is not None and unbound.driver is None
    assert unbound.owner.kind is OwnerKind.UNBOUND


def test_non_pci_nodedev_is_none() -> None:
    usb = (
        "<device><name>usb_1_1</name><capability type='usb_device'><bus>1</bus>"
        "<device>2</device><product id='0x5567'/><vendor id='0x0781'/></capability></device>"
    )
    assert parse_nodedev(usb, "hv1") is None
    assert parse_nodedev("<device><name>computer</name></device>", "hv1") is None


def test_resolve_owners_and_double_claims() -> None:
    pf, vf = parse_nodedev(PF, "hv1"), parse_nodedev(VF, "hv1")
    assert pf is not None and vf is not None
    other_host_vf = replace(vf, host="hv2")
    db01 = parse_domain(DOMAIN, "hv1").vm  # lists 0000:3b:10.2 and 0000:af:00.0 (absent)
    db02 = replace(db01, name="db02", uuid="u2")
    devices = (pf, vf, other_host_vf)
    assert claims(devices, [db01, db02]) == {("hv1", "0000:3b:10.2"): ["db01", "db02"]}
    owned = resolve_owners(devices, [db01, db02])
    assert owned[0] == pf  # nobody lists the PF
    assert owned[1].owner.kind is OwnerKind.VM and owned[1].owner.vm == "db01"
    assert owned[1].owner.driver == "vfio-pci" and str(owned[1].owner) == "vm:db01"
    assert owned[2].owner.kind is OwnerKind.VFIO  # same address, other host
    # A running guest holds the device even when a shut-off one is listed first.
    off = replace(db01, state=VmState.SHUTOFF)
    on = replace(db02, state=VmState.RUNNING)
    assert resolve_owners(devices, [off, on])[1].owner.vm == "db02"


@pytest.mark.parametrize("func", [parse_capabilities, lambda x: parse_domain(x, "h"), lambda x: parse_nodedev(x, "h")])
def test_malformed_xml_raises_value_error(func: object) -> None:
    assert callable(func)
    with pytest.raises(ValueError, match="malformed"):
        func("<domain><name>x</name>")
    with pytest.raises(ValueError, match="expected"):
        func("<network><name>x</name></network>")


def test_fleet_file_is_deterministic(tmp_path: Path) -> None:
    a = write_test_fleet(tmp_path / "a.xml", 20, seed=3).read_bytes()
    b = write_test_fleet(tmp_path / "b.xml", 20, seed=3).read_bytes()
    c = write_test_fleet(tmp_path / "c.xml", 20, seed=4).read_bytes()
    assert a == b and a != c


def test_generated_fleet_through_libvirt(tmp_path: Path) -> None:
    path = write_test_fleet(tmp_path / "fleet.xml", 60, seed=1)
    conn = libvirt.open(fleet_uri(path))
    try:
        doms = sorted(conn.listAllDomains(), key=lambda d: d.name())
        states = {d.name(): d.state()[0] for d in doms}
        facts = [parse_domain(d.XMLDesc(0), "fleet") for d in doms]
        devices = [parse_nodedev(d.XMLDesc(0), "fleet") for d in conn.listAllDevices(0)]
        caps = parse_capabilities(conn.getCapabilities())
        info = conn.getInfo()
        pool = conn.storagePoolLookupByName("images")
        volumes = {v.path(): v.XMLDesc(0) for v in pool.listAllVolumes()}
    finally:
        conn.close()
    assert len(doms) == 60
    assert {libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_SHUTOFF} <= set(states.values())
    assert states["vm0004"] == libvirt.VIR_DOMAIN_RUNNING
    assert states["vm0007"] == libvirt.VIR_DOMAIN_SHUTOFF
    # Custom node files give no NUMA cells in capabilities; getInfo has the <cpu> facts.
    assert caps.cells == () and caps.memory_kib is None
    assert info[2] == 64 and info[4] == 2
    vms = [f.vm for f in facts]
    assert all(len(vm.vnuma) in (0, 2, 3, 4) for vm in vms)
    numa_vms = [vm for vm in vms if vm.vnuma]
    assert len(numa_vms) == 20
    assert all(sum(c.memory_kib for c in vm.vnuma) == vm.memory_kib for vm in numa_vms)
    assert all(c.backing for vm in numa_vms for c in vm.vnuma)
    assert sum(1 for vm in vms if vm.pinning) == 15
    chains = [c for f in facts for c in f.chains]
    assert {len(c.layers) for c in chains} == {1, 2, 3}
    for chain in chains:
        assert chain.active.path.startswith(f"/var/lib/libvirt/images/{chain.vm}-{chain.disk}")
        for below, above in zip(chain.layers, chain.layers[1:], strict=False):
            assert below.path in volumes[above.path]  # the pool volume names the same backing
    pci = [d for d in devices if d is not None]
    assert len(pci) == len(devices) - 1 == 11  # "computer" is not PCI
    by_address = {d.address: d for d in pci}
    assert by_address[SRIOV_PF].vfs == SRIOV_VFS
    assert all(by_address[vf].physfn == SRIOV_PF for vf in SRIOV_VFS)
    assert len({by_address[vf].iommu_group for vf in SRIOV_VFS}) == len(SRIOV_VFS)
    # The test driver drops <driver> from node devices, so all read back as unbound.
    assert all(d.driver is None and d.owner.kind is OwnerKind.UNBOUND for d in pci)
    vms = [replace(vm, state=_STATE[states[vm.name]]) for vm in vms]
    owned = {d.address: d.owner for d in resolve_owners(pci, vms[::-1])}
    assert owned[SRIOV_VFS[0]].vm == "vm0000"
    assert owned[SRIOV_VFS[-1]].kind is OwnerKind.UNBOUND
    assert claims(pci, vms)[("fleet", GPU)] == ["vm0004", "vm0007"]
    assert owned[GPU].vm == "vm0004"


_STATE = {
    libvirt.VIR_DOMAIN_RUNNING: VmState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: VmState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: VmState.SHUTOFF,
}
