"""S2 for disks on the lab: a storage volume handed from the host to a running guest and back.

A fresh 16 MiB qcow2 volume is created in the lab pool for each test and deleted after it;
temporary guests (``hvc-lab-tmp-*``) are removed, and nothing stays attached to the lab's guests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from backends.errors import BadInput, NotFound
from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.handoff.host_disk import users_of
from backends.libvirt.lab import LabStatus
from backends.models import JobEvent, Outcome, PhaseChanged
from backends.requests import HandoffRequest
from tests.lab import test_lab_operations as lab_ops
from tests.lab.test_lab_operations import (
    MOVER,
    NUMA,
    detach_file_everywhere,
    disk_by_file,
    disk_xml,
    remove_guest,
    run_op,
    temp_guest,
    wait_for,
)

POOL, VOLUME = "hvc-lab", "hvc-lab-tmp-s2.qcow2"
TO_GUEST = ["building guest stack", "host relinquished"]
backend = lab_ops.backend  # the shared fixture: a LibvirtBackend on both lab hosts
TO_HOST = ["detaching", "draining", "rebuilding host stack", "VM relinquished"]


@pytest.fixture
def volume(lab: LabStatus) -> Iterator[tuple[Any, str]]:
    """(connection to host A, path) of a new volume in the lab pool no domain uses; removed afterwards."""
    conn = libvirt.open(lab.uris[0])
    pool = conn.storagePoolLookupByName(POOL)
    with contextlib.suppress(libvirt.libvirtError):
        pool.storageVolLookupByName(VOLUME).delete(0)  # a leftover of an interrupted run
    vol = pool.createXML(f"<volume><name>{VOLUME}</name><capacity unit='MiB'>16</capacity>"
                         f"<target><format type='qcow2'/></target></volume>", 0)
    path = vol.path()
    try:
        yield conn, path
    finally:
        detach_file_everywhere(conn, path)
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)
            pool.storageVolLookupByName(VOLUME).delete(0)
        conn.close()


def test_handoff_of_a_volume_from_the_host_to_a_guest_and_back(backend: LibvirtBackend,
                                                               volume: tuple[Any, str]) -> None:
    conn, path = volume
    numa = conn.lookupByName(NUMA)
    run = run_op(backend, HandoffRequest(path, NUMA))
    assert run.result is not None and run.result.outcome is Outcome.SUCCEEDED, run.result
    assert run.phases == TO_GUEST
    assert [p.done for p in run.progress] == [1, 2] and run.progress[-1].remaining == 0
    plugged = disk_by_file(numa, path)
    assert plugged is not None, "the guest's live XML does not list the volume"
    target = plugged.find("target")
    assert target is not None and target.get("bus") == "scsi"
    dev = str(target.get("dev"))
    assert run.result.reason.endswith(f"as {dev}") and users_of(conn, path) == [NUMA]

    # VM → host with the pool made to fail at "rebuilding host stack": the disk goes back to the guest.
    op = backend.prepare(HandoffRequest(f"{NUMA}/{dev}", "host"))
    assert op.job.phases == tuple(TO_HOST)
    op.plan = dataclasses.replace(op.plan, pool="hvc-lab-no-such-pool")  # type: ignore[attr-defined]
    events: list[JobEvent] = []
    failed = op.run(events.append, threading.Event())
    assert failed.outcome is Outcome.FAILED, failed
    assert "rebuilding host stack failed" in failed.reason and f"went back to {NUMA}" in failed.reason
    assert [e.phase for e in events if isinstance(e, PhaseChanged)] == TO_HOST[:3]
    assert disk_by_file(numa, path) is not None  # nothing lost

    back = run_op(backend, HandoffRequest(f"{NUMA}/{dev}", "host"))
    assert back.result is not None and back.result.outcome is Outcome.SUCCEEDED, back.result
    assert back.phases == TO_HOST
    assert back.progress[1].detail["seen_by"] in ("event", "xml")
    assert disk_by_file(numa, path) is None and users_of(conn, path) == []
    assert path in [v.path() for v in conn.storagePoolLookupByName(POOL).listAllVolumes(0)]
    assert f"pool {POOL}" in back.result.reason


def test_handoff_whose_attach_fails_leaves_the_volume_with_the_host(lab: LabStatus, backend: LibvirtBackend,
                                                         volume: tuple[Any, str]) -> None:
    conn, path = volume
    other = conn.storagePoolLookupByName(POOL).storageVolLookupByName("hvc-lab-data3.qcow2").path()
    receiver = "hvc-lab-tmp-s2-receiver"
    try:
        temp = temp_guest(conn, receiver, persistent=True)
        wait_for(backend, lambda inv: any(v.name == receiver and v.active for v in inv.vms))
        op = backend.prepare(HandoffRequest(path, receiver))
        # After the checks, another disk takes the name the plan chose: the attach must fail.
        temp.attachDeviceFlags(disk_xml(other, "sda"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        events: list[JobEvent] = []
        result = op.run(events.append, threading.Event())
        assert result.outcome is Outcome.FAILED, result
        assert result.reason.startswith(f"building guest stack failed: {receiver} refused {path}")
        assert "stays with the host" in result.reason
        assert [e.phase for e in events if isinstance(e, PhaseChanged)] == TO_GUEST[:1]
        assert disk_by_file(temp, path) is None and users_of(conn, path) == []
    finally:
        remove_guest(conn, receiver)
        detach_file_everywhere(conn, other)


def test_handoff_pre_checks_for_a_host_volume(lab: LabStatus, backend: LibvirtBackend,
                                                     volume: tuple[Any, str]) -> None:
    conn, path = volume
    mover = conn.lookupByName(MOVER)
    stopped = "hvc-lab-tmp-s2-stopped"
    try:
        with pytest.raises(NotFound, match="no storage volume"):
            backend.prepare(HandoffRequest(path + ".missing", NUMA))
        with pytest.raises(BadInput, match="already the host's"):
            backend.prepare(HandoffRequest(path, "host"))
        temp_guest(conn, stopped, persistent=True).destroy()
        wait_for(backend, lambda inv: any(v.name == stopped and not v.active for v in inv.vms))
        with pytest.raises(BadInput, match="needs a running receiver") as not_running:
            backend.prepare(HandoffRequest(path, stopped))
        assert "\n" not in not_running.value.one_line()
        mover.attachDeviceFlags(disk_xml(path, "sdd"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        with pytest.raises(BadInput, match=f"in use by {MOVER}") as in_use:
            backend.prepare(HandoffRequest(path, NUMA))
        assert "\n" not in in_use.value.one_line()
        assert disk_by_file(conn.lookupByName(NUMA), path) is None  # nothing changed
    finally:
        detach_file_everywhere(conn, path)
        remove_guest(conn, stopped)
