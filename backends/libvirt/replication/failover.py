"""Test failover: a throwaway guest on the recovery host, booted from overlays on the replica chains."""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import libvirt

from backends.base import Emit, Operation, find_vm, new_job
from backends.errors import BadInput
from backends.libvirt.ops import libvirt_reason, open_job_connection
from backends.libvirt.replication.locate import replica_of
from backends.libvirt.replication.planned import LibvirtPlannedFailover
from backends.libvirt.replication.volumes import delete, vol_facts
from backends.models import JobKind, JobResult, Outcome, PhaseChanged
from backends.requests import FailoverRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend


def trial_name(vm: str) -> str:
    """The name of ``vm``'s test-failover guest."""
    return f"{vm}-testfo"


def trial_overlay_name(vm: str, disk: str) -> str:
    """The volume name of the throwaway overlay of ``vm``'s ``disk`` in a test failover."""
    return f"{trial_name(vm)}.{disk}.qcow2"


class LibvirtFailover(Operation):
    """Test failover: a transient ``<vm>-testfo`` on the recovery host, on throwaway qcow2
    overlays over the replica chains, sized and typed from the primary's definition saved in
    the record at the last sync (so the primary may be down); replication is untouched. It has
    no network interface
    (so it cannot clash with the primary), the disks and a pty serial console only. Forcing it
    off ends the test; its overlays stay until the next test failover replaces them.

    ``FailoverRequest(test=False)`` is a planned failover: the job of
    ``backends.libvirt.replication.planned`` runs in its place."""

    def __init__(self, backend: LibvirtBackend, request: FailoverRequest) -> None:
        self.planned: LibvirtPlannedFailover | None = None
        if not request.test:
            self.planned = LibvirtPlannedFailover(backend, request)
            super().__init__(self.planned.job)
            return
        inv = backend.snapshot()
        vm = find_vm(inv, request.vm)
        link = replica_of(backend, inv, vm)
        tops = {disk: layers[-1].volume for disk, layers in link.record.disks.items() if layers}
        if not tops:
            raise BadInput(f"no layer of {vm.name} has reached {link.host} yet", hint="sync it first")
        dst = backend.connected(link.host, "the recovery host")
        name = trial_name(vm.name)
        with contextlib.suppress(libvirt.libvirtError):
            dst.connection.lookupByName(name)
            raise BadInput(f"a test failover of {vm.name} is already running as {name} on {link.host}",
                           hint=f"force off {name} first")
        # The definition as of the last sync travels in the record: the primary may be down.
        self.primary_xml = link.record.domain_xml
        if not self.primary_xml:
            src = backend.connected(vm.host, "the primary")
            try:
                self.primary_xml = src.connection.lookupByUUIDString(vm.uuid).XMLDesc(
                    libvirt.VIR_DOMAIN_XML_INACTIVE)
            except libvirt.libvirtError as exc:
                raise BadInput(f"cannot read {vm.name}'s definition on {vm.host}: {libvirt_reason(exc)}") from exc
        self.backend, self.vm, self.link, self.tops, self.name = backend, vm, link, tops, name
        self.dst_uri = dst.uri
        super().__init__(new_job(JobKind.FAILOVER, (vm.name, name), ("starting",),
                                 f"test failover of {vm.name} to {link.host}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        """Create the overlays in the replica pool and start the transient guest on them."""
        if self.planned is not None:
            return self.planned.run(emit, cancel)
        started = time.time()
        job = self.job

        def result(outcome: Outcome, reason: str) -> JobResult:
            return JobResult(job.id, outcome, reason, started, time.time())

        emit(PhaseChanged(job.id, "starting", f"starting {self.name} on {self.link.host} from a throwaway "
                          "overlay on the replica chain", at=started))
        try:
            conn = open_job_connection(self.dst_uri)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"cannot reach {self.link.host}: {libvirt_reason(exc)}")
        made: list[str] = []
        try:
            pool = conn.storagePoolLookupByName(self.link.pool)
            pool.refresh(0)
            overlays: dict[str, str] = {}
            for disk, top in self.tops.items():
                base = pool.storageVolLookupByName(top)
                facts = vol_facts(base)
                name = trial_overlay_name(self.vm.name, disk)
                delete(pool, name)  # left by an earlier test failover
                xml = (f"<volume><name>{escape(name)}</name>"
                       f"<capacity unit='bytes'>{facts.capacity}</capacity>"
                       f"<target><format type='qcow2'/></target>"
                       f"<backingStore><path>{escape(facts.path)}</path>"
                       f"<format type='{escape(facts.format or 'qcow2')}'/></backingStore></volume>")
                overlays[disk] = pool.createXML(xml, 0).path()
                made.append(name)
            conn.createXML(trial_domain_xml(self.primary_xml, self.name, overlays), 0)
        except libvirt.libvirtError as exc:
            for name in made:
                delete(pool, name)
            return result(Outcome.FAILED, f"{libvirt_reason(exc)}; replication is untouched")
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self.backend.refresh(replicas=True)
        return result(Outcome.SUCCEEDED, f"{self.name} runs on {self.link.host} from a throwaway overlay; "
                                         "replication continues untouched")


def trial_domain_xml(primary_xml: str, name: str, overlays: dict[str, str]) -> str:
    """A minimal transient domain from the primary's definition: type, memory, vCPUs, <os> and
    <features>; the given disks (same targets and buses) on their overlays; a pty serial."""
    root = ET.fromstring(primary_xml)
    dom = ET.Element("domain", type=root.get("type", "kvm"))
    ET.SubElement(dom, "name").text = name
    for tag in ("memory", "currentMemory", "vcpu"):
        el = root.find(tag)
        if el is not None:
            copy = ET.SubElement(dom, tag, {k: v for k, v in el.attrib.items() if k in ("unit", "current")})
            copy.text = el.text
    os_el = root.find("os")
    if os_el is not None:
        for nvram in os_el.findall("nvram"):
            os_el.remove(nvram)  # the primary's UEFI variables are its own
        dom.append(os_el)
    features = root.find("features")
    if features is not None:
        dom.append(features)
    devices = ET.SubElement(dom, "devices")
    buses = set()
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if dev not in overlays or target is None:
            continue
        bus = target.get("bus", "virtio")
        buses.add(bus)
        el = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(el, "driver", name="qemu", type="qcow2")
        ET.SubElement(el, "source", file=overlays[dev])
        ET.SubElement(el, "target", dev=dev, bus=bus)
    if "scsi" in buses:
        for ctl in root.findall("devices/controller[@type='scsi']"):
            devices.append(ET.Element("controller", {k: v for k, v in ctl.attrib.items() if k != "address"}))
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")
