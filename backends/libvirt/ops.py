"""Operations on real hosts through libvirt; each runs in the caller's worker thread."""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import libvirt

from backends.base import Emit, Operation, find_vm, new_job
from backends.lifecycle import check
from backends.models import JobKind, JobResult, Outcome, PciDevice, PhaseChanged
from backends.requests import LifecycleAction, LifecycleRequest
from backends.uri import redact

if TYPE_CHECKING:
    from backends.libvirt.backend import LibvirtBackend

def libvirt_reason(exc: libvirt.libvirtError) -> str:
    """libvirt's own message for an error, without credentials from URIs."""
    return redact(str(exc.get_error_message() or exc))


def open_job_connection(uri: str) -> Any:
    """A connection of the job's own: the backend's may be closed (host lost) at any moment,
    and a closed virConnect used from another thread crashes the process. Keepalive makes
    a call to a host that dies mid-job fail within ~20 s instead of hanging."""
    conn = libvirt.open(uri)
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(5, 3)
    return conn

@contextlib.contextmanager
def job_connection(uri: str) -> Iterator[Any]:
    """``open_job_connection`` for a ``with`` block, closed at its end whatever happened."""
    conn = open_job_connection(uri)
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def nodedev_name(device: PciDevice) -> str:
    """libvirt's node-device name of a PCI device (pci_0000_3b_00_0)."""
    return device.name or "pci_" + device.address.replace(":", "_").replace(".", "_")


def bound_driver(nodedev: Any) -> str | None:
    """The host driver a node device is bound to now; None when unbound or unreadable."""
    try:
        name = ET.fromstring(nodedev.XMLDesc(0)).findtext("driver/name")
    except libvirt.libvirtError:
        return None
    return name.strip() if name else None


SETTLE_TIMEOUT_S = 120.0  # a guest OS gets this long to honour a shutdown
_CALL = {
    LifecycleAction.START: "create",
    LifecycleAction.SHUTDOWN: "shutdown",
    LifecycleAction.REBOOT: "reboot",
    LifecycleAction.FORCE_OFF: "destroy",
    LifecycleAction.PAUSE: "suspend",
    LifecycleAction.RESUME: "resume",
}


class LibvirtLifecycle(Operation):
    def __init__(self, backend: LibvirtBackend, request: LifecycleRequest) -> None:
        vm = find_vm(backend.snapshot(), request.vm, request.host)
        check(vm, request.action)
        self.uri = backend.connected(vm.host).uri
        self.vm, self.action, self.backend = vm, request.action, backend
        super().__init__(new_job(JobKind.LIFECYCLE, (vm.name,), (request.action.value,),
                                 f"{request.action.value} {vm.name} on {vm.host}"))

    def run(self, emit: Emit, cancel: threading.Event) -> JobResult:
        started = time.time()
        job = self.job

        def result(outcome: Outcome, reason: str = "") -> JobResult:
            return JobResult(job.id, outcome, reason, started, time.time())

        emit(PhaseChanged(job.id, self.action.value, job.description, at=started))
        conn = None
        try:
            conn = open_job_connection(self.uri)
            dom = conn.lookupByUUIDString(self.vm.uuid)
            getattr(dom, _CALL[self.action])()
            if self.action is LifecycleAction.SHUTDOWN and not self._shut_off(dom, cancel):
                return result(Outcome.FAILED, f"{self.vm.name} did not shut down within "
                              f"{SETTLE_TIMEOUT_S:.0f}s (its OS may ignore ACPI); use force-off")
        except libvirt.libvirtError as exc:
            return result(Outcome.FAILED, libvirt_reason(exc))
        finally:
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
        self.backend.refresh()
        return result(Outcome.SUCCEEDED)

    def _shut_off(self, dom: Any, cancel: threading.Event) -> bool:
        """Wait for the guest OS to honour the shutdown request."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline and not cancel.is_set():
            if dom.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF:
                return True
            cancel.wait(0.5)
        return False
