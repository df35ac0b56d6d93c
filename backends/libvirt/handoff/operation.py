"""The handoff job: detach the device, wait for it to drain, rebind a PCI device, attach it.

On failure the device goes back to its owner (or to the host's driver); see the package docstring.
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import libvirt

from backends.base import Emit, Operation, new_job
from backends.libvirt.handoff.device_xml import find_disk, find_pci, target_of
from backends.libvirt.handoff.host_disk import disk_with_source, is_host_volume_id, plan_host_volume, users_of
from backends.libvirt.handoff.plan import Plan, plan_disk, plan_pci
from backends.libvirt.ops import bound_driver, libvirt_reason, nodedev_name, open_job_connection
from backends.models import JobKind, JobResult, Outcome, PhaseChanged
from backends.progress import Meter
from backends.requests import HandoffRequest

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend

DRAIN_TIMEOUT_S = 30.0
XML_POLL_S = 1.0  # fallback check of the live XML while waiting for DEVICE_REMOVED
VFIO = "vfio-pci"
# S2: the new driver stack is built first, then the old one must be seen to have let go.
S2_TO_VM = ("building vfio stack", "attaching to VM", "host relinquished")
S2_TO_HOST = ("rebuilding host stack", "VM relinquished")  # after detaching, draining (PCI and disks)
S2_DISK_TO_VM = ("building guest stack", "host relinquished")  # a host volume plugged into a guest's bus


class LibvirtHandoff(Operation):
    """Hand a disk or PCI device from a running guest (or the host) to another running guest (or the host)."""

    def __init__(self, backend: LibvirtBackend, request: HandoffRequest) -> None:
        inv = backend.snapshot()
        self.backend = backend
        if is_host_volume_id(request.device):
            self.plan, host = plan_host_volume(backend, inv, request)
        elif "/" in request.device:
            self.plan, host = plan_disk(backend, inv, request)
        else:
            self.plan, host = plan_pci(backend, inv, request)
        self.host_name = host
        owner = self.plan.owner.name if self.plan.owner else "the host"
        receiver = self.plan.receiver.name if self.plan.receiver else "the host"
        targets = tuple(n for n in (request.device, self.plan.owner and self.plan.owner.name,
                                    self.plan.receiver and self.plan.receiver.name) if n)
        phases: tuple[str, ...] = ("detaching", "draining") if self.plan.owner else ()
        if self.plan.pci is not None and self.plan.owner is None:
            phases += S2_TO_VM
        elif self.plan.pci is not None:
            phases += ("binding", "attaching") if self.plan.receiver else S2_TO_HOST
        elif self.plan.owner is None:
            phases += S2_DISK_TO_VM
        else:
            phases += ("attaching",) if self.plan.receiver else S2_TO_HOST
        super().__init__(new_job(JobKind.HANDOFF, targets, phases,
                                 f"hand {self.plan.label} from {owner} to {receiver} on {host}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        """Run the plan on a connection of the job's own; the inventory is refreshed at the end."""
        job = self.job
        started = time.time()
        steps = len(job.phases)
        meter = Meter(job.id, "steps", time.time)
        done = 0

        def result(outcome: Outcome, reason: str = "") -> JobResult:
            self.backend.refresh()
            return JobResult(job.id, outcome, reason, started, time.time())

        def step(phase: str, message: str) -> None:
            emit(PhaseChanged(job.id, phase, message, at=time.time()))

        def advance(phase: str, **detail: float | int | str) -> None:
            nonlocal done
            done += 1
            emit(meter.sample(phase, done, steps - done, detail=detail))

        if cancel.is_set():
            return result(Outcome.CANCELLED, "cancelled before anything changed")
        host = self.backend.host_for(self.host_name)
        if host is None:
            return result(Outcome.FAILED, f"{self.host_name} is gone from the inventory; nothing changed")
        try:
            conn = open_job_connection(host.uri)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"cannot reach {self.host_name}: {libvirt_reason(exc)}; nothing changed")
        try:
            return self._run(conn, host.uri, cancel, result, step, advance)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def _run(self, conn: Any, uri: str, cancel: threading.Event, result: Callable[..., JobResult],
             step: Callable[[str, str], None], advance: Callable[..., None]) -> JobResult:
        plan = self.plan
        try:
            owner_dom = conn.lookupByUUIDString(plan.owner.uuid) if plan.owner else None
            receiver_dom = conn.lookupByUUIDString(plan.receiver.uuid) if plan.receiver else None
            nodedev = conn.nodeDeviceLookupByName(nodedev_name(plan.pci)) if plan.pci else None
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"{libvirt_reason(exc)}; nothing changed")
        owner_name = plan.owner.name if plan.owner else "the host"

        # detaching + draining
        if plan.owner is not None and owner_dom is not None:
            assert plan.device_xml is not None
            with self.backend.events(plan.owner.name, ("device_removed",), (uri,)) as tap:
                step("detaching", f"asking {owner_name} to release {plan.label}")
                t0 = time.monotonic()
                try:
                    owner_dom.detachDeviceFlags(plan.device_xml, plan.detach_flags)
                except libvirt.libvirtError as exc:
                    return result(Outcome.FAILED, f"{owner_name} would not release {plan.label}: "
                                                  f"{libvirt_reason(exc)}; it stays with {owner_name}")
                advance("detaching")
                step("draining", f"waiting for {owner_name} to let go of {plan.alias or plan.label} "
                                 f"(up to {DRAIN_TIMEOUT_S:.0f}s)")
                how = self._drained(tap, owner_dom, plan)
                waited = time.monotonic() - t0
            if how is None:
                return result(Outcome.FAILED, f"{owner_name} did not release {plan.label} within "
                                              f"{DRAIN_TIMEOUT_S:.0f}s (a PCI unplug needs the guest OS to "
                                              f"acknowledge it); it stays attached to {owner_name} with the "
                                              f"unplug request pending")
            advance("draining", released_after_ms=round(waited * 1000), seen_by=how)
        if cancel.is_set() and plan.owner is None:
            return result(Outcome.CANCELLED, "cancelled before anything changed")
        if cancel.is_set():
            back = self._give_back(conn, owner_dom, nodedev)
            return result(Outcome.CANCELLED, f"cancelled after {owner_name} released it; {back}")
        if plan.pci is None and plan.receiver is None:
            return self._disk_to_host(conn, owner_dom, owner_name, result, step, advance)
        if plan.pci is None and plan.owner is None:
            return self._disk_from_host(conn, receiver_dom, result, step, advance)

        # binding / releasing (PCI only)
        if plan.pci is not None and nodedev is not None:
            if plan.receiver is None:
                return self._to_host(owner_dom, nodedev, owner_name, result, step, advance)
            from_host = plan.owner is None
            binding = S2_TO_VM[0] if from_host else "binding"
            step(binding, f"binding {plan.pci.address} to {VFIO} for {plan.receiver.name}"
                          + (f" (the host's {plan.pci_driver} unbinds)" if from_host and plan.pci_driver else ""))
            if bound_driver(nodedev) != VFIO:
                try:
                    nodedev.detachFlags("vfio", 0)
                except libvirt.libvirtError as exc:
                    back = self._give_back(conn, owner_dom, nodedev)
                    return result(Outcome.FAILED, f"{binding} failed: binding {plan.pci.address} to {VFIO}: "
                                                  f"{libvirt_reason(exc)}; {back}")
            advance(binding, driver=VFIO)

        # attaching
        assert plan.receiver is not None and receiver_dom is not None and plan.attach_xml is not None
        attaching = S2_TO_VM[1] if plan.pci is not None and plan.owner is None else "attaching"
        step(attaching, f"giving {plan.label} to {plan.receiver.name}")
        try:
            receiver_dom.attachDeviceFlags(plan.attach_xml, plan.attach_flags)
        except libvirt.libvirtError as exc:
            why = libvirt_reason(exc)
            back = self._give_back(conn, owner_dom, nodedev)
            return result(Outcome.FAILED, f"{attaching} failed: {plan.receiver.name} refused {plan.label}: {why}; "
                                          f"{back}")
        advance(attaching)
        if plan.pci is not None and plan.owner is None and nodedev is not None:
            step(S2_TO_VM[2], f"checking the host's driver no longer holds {plan.pci.address}")
            driver = bound_driver(nodedev)
            if driver != VFIO:
                with contextlib.suppress(libvirt.libvirtError):
                    receiver_dom.detachDeviceFlags(plan.attach_xml, plan.attach_flags)
                back = self._give_back(conn, None, nodedev)
                return result(Outcome.FAILED, f"{S2_TO_VM[2]} failed: {plan.pci.address} is bound to "
                                              f"{driver or 'no driver'}, not {VFIO}; taken off "
                                              f"{plan.receiver.name}; {back}")
            advance(S2_TO_VM[2], driver=driver)
        where = ""
        if plan.pci is None:
            target = ET.fromstring(plan.attach_xml).find("target")
            where = f" as {target.get('dev')}" if target is not None else ""
        return result(Outcome.SUCCEEDED, f"{plan.receiver.name} has {plan.label}{where}")

    def _to_host(self, owner_dom: Any, nodedev: Any, owner_name: str, result: Callable[..., JobResult],
                 step: Callable[[str, str], None], advance: Callable[..., None]) -> JobResult:
        """S2, VM → host: rebuild the host's driver stack, then check the VM has let go of the device."""
        plan = self.plan
        assert plan.pci is not None
        rebuild, relinquished = S2_TO_HOST
        step(rebuild, f"returning {plan.pci.address} to the host's driver")
        driver = bound_driver(nodedev)
        if driver in (VFIO, None):
            try:
                nodedev.reAttach()
            except libvirt.libvirtError as exc:
                return result(Outcome.FAILED, f"{rebuild} failed: the host's driver did not take {plan.pci.address} "
                                              f"back: {libvirt_reason(exc)}; it is detached from {owner_name} "
                                              f"and left with {driver or 'no driver'}")
        driver = bound_driver(nodedev)
        advance(rebuild, driver=driver or "none")
        step(relinquished, f"checking {owner_name} no longer lists {plan.pci.address}")
        if owner_dom is not None and self._still_there(owner_dom, plan):
            return result(Outcome.FAILED, f"{relinquished} failed: {owner_name} still lists {plan.pci.address}; "
                                          f"the host's driver is {driver or 'none'}")
        advance(relinquished)
        return result(Outcome.SUCCEEDED, f"{plan.pci.address} is with the host's driver ({driver or 'none'})")

    def _disk_from_host(self, conn: Any, receiver_dom: Any, result: Callable[..., JobResult],
                        step: Callable[[str, str], None], advance: Callable[..., None]) -> JobResult:
        """S2, host → VM for a volume: plug it into the guest's bus, then check only the guest holds it."""
        plan = self.plan
        assert plan.receiver is not None and plan.attach_xml is not None and plan.volume_path is not None
        build, relinquished = S2_DISK_TO_VM
        path, name = plan.volume_path, plan.receiver.name
        target = ET.fromstring(plan.attach_xml).find("target")
        dev, bus = (target.get("dev"), target.get("bus")) if target is not None else (None, None)
        step(build, f"plugging {path} into {name}'s {bus} bus as {dev}")
        try:
            receiver_dom.attachDeviceFlags(plan.attach_xml, plan.attach_flags)
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, f"{build} failed: {name} refused {path}: {libvirt_reason(exc)}; "
                                          f"it stays with the host (pool {plan.pool}), nothing was added to {name}")
        advance(build, target=dev or "", bus=bus or "")
        step(relinquished, f"checking {name} holds {path} and no other domain uses it")
        try:
            held = disk_with_source(receiver_dom.XMLDesc(0), path)
            others = [u for u in users_of(conn, path) if u != name]
        except libvirt.libvirtError as exc:
            held, others = None, [f"(unreadable: {libvirt_reason(exc)})"]
        if held is None or others:
            why = f"{name}'s live XML does not list it" if held is None else f"{', '.join(others)} use it too"
            undo = "nothing was added to " + name
            if held is not None:
                try:
                    receiver_dom.detachDeviceFlags(ET.tostring(held, encoding="unicode"), plan.attach_flags)
                    undo = f"unplugged from {name} again"
                except libvirt.libvirtError as exc:
                    undo = f"unplugging it from {name} failed too: {libvirt_reason(exc)}; {name} still has it"
            return result(Outcome.FAILED, f"{relinquished} failed: {why}; {undo}")
        advance(relinquished)
        return result(Outcome.SUCCEEDED, f"{name} has {plan.label} as {dev}")

    def _disk_to_host(self, conn: Any, owner_dom: Any, owner_name: str, result: Callable[..., JobResult],
                      step: Callable[[str, str], None], advance: Callable[..., None]) -> JobResult:
        """S2, VM → host for a disk: the host's pool shows the volume again, then the VM is seen to let go."""
        plan = self.plan
        assert plan.volume_path is not None and plan.pool is not None
        rebuild, relinquished = S2_TO_HOST
        path = plan.volume_path
        step(rebuild, f"refreshing pool {plan.pool} so the host holds {path} again")
        try:
            conn.storagePoolLookupByName(plan.pool).refresh(0)
            in_pool = conn.storageVolLookupByPath(path).storagePoolLookupByVolume().name()
        except libvirt.libvirtError as exc:
            back = self._give_back(conn, owner_dom, None)
            return result(Outcome.FAILED, f"{rebuild} failed: pool {plan.pool} does not show {path}: "
                                          f"{libvirt_reason(exc)}; {back}")
        advance(rebuild, pool=in_pool)
        step(relinquished, f"checking {owner_name} no longer lists {path}")
        try:
            still = owner_dom is not None and disk_with_source(owner_dom.XMLDesc(0), path) is not None
        except libvirt.libvirtError:
            still = False  # the owner is gone, and the disk with it
        if still:
            return result(Outcome.FAILED, f"{relinquished} failed: {owner_name} still lists {path}; "
                                          f"it stays with {owner_name}")
        advance(relinquished)
        return result(Outcome.SUCCEEDED, f"{path} is with the host (pool {in_pool})")

    def _drained(self, tap: Any, owner_dom: Any, plan: Plan) -> str | None:
        """How the release was seen ("event" or "xml"), or None after ``DRAIN_TIMEOUT_S``."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            event = tap.get(min(XML_POLL_S, left))
            if event is not None and event.args and (plan.alias is None or event.args[0] == plan.alias):
                return "event"
            if not self._still_there(owner_dom, plan):
                return "xml"
        return None

    def _still_there(self, owner_dom: Any, plan: Plan) -> bool:
        """Does the owner's live XML still list the device?"""
        try:
            live = owner_dom.XMLDesc(0)
        except libvirt.libvirtError:
            return False  # the owner is gone, and the device with it
        if plan.pci is not None:
            return find_pci(live, plan.pci.address) is not None
        assert plan.device_xml is not None
        return find_disk(live, target_of(ET.fromstring(plan.device_xml)) or "") is not None

    def _give_back(self, conn: Any, owner_dom: Any, nodedev: Any) -> str:
        """Undo the detach: the device returns to its owner (or the host); says what happened."""
        plan = self.plan
        if plan.owner is not None and owner_dom is not None and plan.restore_xml is not None:
            try:
                owner_dom.attachDeviceFlags(plan.restore_xml, plan.detach_flags)
                return f"{plan.label} went back to {plan.owner.name}"
            except libvirt.libvirtError as exc:
                return (f"giving it back to {plan.owner.name} failed too: {libvirt_reason(exc)}; it is attached "
                        f"to neither VM (its XML: {plan.restore_xml})")
        if plan.pci is not None and nodedev is not None and plan.pci_driver not in (VFIO, None):
            try:
                if bound_driver(nodedev) == VFIO:
                    nodedev.reAttach()
                return f"{plan.pci.address} is back with the host's driver ({bound_driver(nodedev)})"
            except libvirt.libvirtError as exc:
                return f"returning it to the host's driver failed too: {libvirt_reason(exc)}; it stays on {VFIO}"
        return "nothing else changed"



