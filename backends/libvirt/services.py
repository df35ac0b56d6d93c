"""S8 on libvirt: storage services read from domain XML, and moving one to another host.

A service is declared in the domain's ``<metadata>``::

    <hvc:service xmlns:hvc="https://hvconsole.dev/xmlns/service/1" name="iscsi-tier1" protocol="iscsi"
                 identifier="02:5e:10:00:00:01"/>

and its identifier is the MAC of an ``<interface type='hostdev'>`` (an SR-IOV VF: libvirt sets
the MAC on the VF through its PF before giving it to the guest). Without ``identifier`` the
first hostdev interface with a MAC carries it. The metadata travels with the domain XML on
migration, so the service's name stays with its VM.

The move: detach the VF interface (the guest acknowledges the unplug), live-migrate the VM with
``LibvirtMigrate``, attach an interface with the same MAC on a free VF of the destination. A
failure before the VM left puts the original interface back. This runs only where the
destination has a free VF in libvirt's node devices; the two-host lab has no SR-IOV, so there
prepare refuses with that reason and the move itself is untested on real hardware.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import libvirt

from backends.base import Emit, Operation, new_job
from backends.errors import BadInput, NotFound
from backends.libvirt.handoff.device_xml import find_pci
from backends.libvirt.migrate import LibvirtMigrate
from backends.libvirt.ops import libvirt_reason, open_job_connection
from backends.libvirt.service_xml import interface_xml
from backends.models import Inventory, JobEvent, JobKind, JobResult, Outcome, PhaseChanged, StorageService
from backends.requests import MigrateRequest, ServiceMoveRequest
from backends.services import resolve, service_vm

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend

UNPLUG_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ServiceMovePlan:
    service: StorageService
    dest: str
    dest_vf: str
    attach_xml: str  # the interface for the destination: same MAC, the destination's VF


def plan_service_move(inv: Inventory, service: str, to_host: str) -> ServiceMovePlan:
    """Check the move against the inventory and build the destination's interface; BadInput if it cannot."""
    svc, dest, vf = resolve(inv, service, to_host)
    return ServiceMovePlan(svc, dest.name, vf.address, interface_xml(svc.identifier, vf.address))


class LibvirtServiceMove(Operation):
    def __init__(self, backend: LibvirtBackend, request: ServiceMoveRequest) -> None:
        inv = backend.snapshot()
        self.plan = plan_service_move(inv, request.service, request.to_host)
        svc = self.plan.service
        vm = service_vm(inv, svc)
        assert vm is not None and svc.vf is not None  # resolve checked both
        src, self.dst = backend.connected(svc.host, "the source"), backend.connected(self.plan.dest)
        try:
            dom = src.connection.lookupByUUIDString(vm.uuid)
            element = find_pci(dom.XMLDesc(0), svc.vf)
        except libvirt.libvirtError as exc:
            raise NotFound(f"{vm.name} is gone from {svc.host}: {libvirt_reason(exc)}", hint="refresh") from exc
        if element is None:
            raise BadInput(f"{vm.name} has no interface on VF {svc.vf} any more", hint="refresh and try again")
        self.release_xml = ET.tostring(element, encoding="unicode")
        self.backend, self.vm, self.src_uri = backend, vm, src.uri
        super().__init__(new_job(
            JobKind.SERVICE_MOVE,
            (vm.name, svc.host, self.plan.dest, f"{svc.host}/{svc.vf}", f"{self.plan.dest}/{self.plan.dest_vf}"),
            ("release", "setup", "precopy", "switchover", "done", "bind"),
            f"move {svc.name} ({svc.identifier}) {svc.host} → {self.plan.dest}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        job, svc, plan = self.job, self.plan.service, self.plan
        started = time.time()
        flags = int(libvirt.VIR_DOMAIN_AFFECT_LIVE)

        def result(outcome: Outcome, reason: str) -> JobResult:
            return JobResult(job.id, outcome, reason, started, time.time())

        def phase(name: str, message: str) -> None:
            emit(PhaseChanged(job.id, name, message, at=time.time()))

        try:
            conn = open_job_connection(self.src_uri)
            dom = conn.lookupByUUIDString(self.vm.uuid)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"cannot reach {svc.host}: {libvirt_reason(exc)}; nothing changed")
        phase("release", f"unplugging VF {svc.vf} ({svc.identifier}) from {self.vm.name}")
        with self.backend.events(self.vm.name, ("device_removed",), (self.src_uri,)) as tap:
            try:
                dom.detachDeviceFlags(self.release_xml, flags)
            except libvirt.libvirtError as exc:
                return result(Outcome.FAILED, f"{self.vm.name} would not release VF {svc.vf}: "
                                              f"{libvirt_reason(exc)}; {svc.identifier} stays on it")
            if tap.wait_for(lambda _: True, UNPLUG_TIMEOUT_S) is None:
                return result(Outcome.FAILED, f"{self.vm.name} did not acknowledge the unplug of VF {svc.vf} "
                                              f"within {UNPLUG_TIMEOUT_S:.0f}s; the request stays pending")
        self.backend.refresh()

        def relabel(event: JobEvent) -> None:
            emit(replace(event, job_id=job.id))

        try:
            moved = LibvirtMigrate(self.backend, MigrateRequest(self.vm.name, plan.dest)).run(relabel, cancel)
        except BadInput as exc:
            moved = result(Outcome.FAILED, f"cannot migrate {self.vm.name}: {exc.message}")
        if moved.outcome is not Outcome.SUCCEEDED:
            return result(moved.outcome, f"{moved.reason}; {self._restore(dom, flags)}")
        phase("bind", f"giving VF {plan.dest_vf} on {plan.dest} to {self.vm.name} with {svc.identifier}")
        try:
            dst = open_job_connection(self.dst.uri)
            dst.lookupByUUIDString(self.vm.uuid).attachDeviceFlags(plan.attach_xml, flags)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"{self.vm.name} runs on {plan.dest} but VF {plan.dest_vf} would not "
                                          f"take {svc.identifier}: {libvirt_reason(exc)}; attach it by hand: "
                                          f"{plan.attach_xml}")
        self.backend.refresh()
        return result(Outcome.SUCCEEDED, f"{svc.name} runs on {plan.dest} with {svc.identifier} on VF "
                                         f"{plan.dest_vf}; VF {svc.vf} on {svc.host} is free")

    def _restore(self, dom: Any, flags: int) -> str:
        svc = self.plan.service
        try:
            dom.attachDeviceFlags(self.release_xml, flags)
        except libvirt.libvirtError as exc:
            return (f"{svc.identifier} could NOT be put back on VF {svc.vf} ({libvirt_reason(exc)}); "
                    f"{self.vm.name} runs on {svc.host} without it")
        self.backend.refresh()
        return f"{svc.identifier} restored on VF {svc.vf} on {svc.host}"
