"""Real libvirt: inventory, events, lost hosts and read-only access on the two-host lab."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import libvirt
import pytest

from backends.libvirt import host as libvirt_host
from backends.libvirt.ahead import AHEAD_MIN
from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.lab import LabStatus, lab_up, stop_host_b
from backends.models import HostState, Inventory, VmState


@pytest.fixture
def backend(lab: LabStatus) -> Iterator[LibvirtBackend]:
    # Polling every hour: anything that shows up during a test arrived by an event.
    b = LibvirtBackend(lab.uris, poll_s=3600)
    yield b
    b.close()


def wait_for(backend: LibvirtBackend, predicate: Callable[[Inventory], bool], timeout: float = 15.0) -> Inventory:
    """Wait, without asking for a refresh, until the backend's snapshot satisfies ``predicate``."""
    changed = threading.Event()
    stop = backend.watch(lambda _c: changed.set())
    try:
        deadline = time.monotonic() + timeout
        while not predicate(backend.snapshot()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen within {timeout}s: {backend.snapshot()}")
            changed.wait(0.2)
            changed.clear()
        return backend.snapshot()
    finally:
        stop()


def test_inventory_json_lists_both_lab_hosts(lab: LabStatus) -> None:
    args = [a for uri in lab.uris for a in ("-c", uri)]
    result = subprocess.run([sys.executable, "-m", "console", "inventory", "--json", *args],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "HVC_CONFIG": "/none"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    hosts = {h["uri"]: h for h in doc["hosts"]}
    assert set(hosts) == set(lab.uris)
    assert len({h["name"] for h in doc["hosts"]}) == 2  # same hostname: named apart by URI
    for host in hosts.values():
        assert host["state"] == "connected"
        assert host["numa"] and all(c["cpus"] and c["memory_kib"] > 0 and c["free_kib"] for c in host["numa"])
        assert any(d["host"] == host["name"] for d in doc["devices"]), "no PCI devices on " + host["name"]
    vms = {v["name"]: v for v in doc["vms"]}
    numa = vms["hvc-lab-numa"]
    assert numa["state"] == "running" and numa["vcpus"] == 2
    assert [len(c["vcpus"]) for c in numa["vnuma"]] == [1, 1]
    assert all(c["memory_kib"] == 65536 and c["backing"][0]["cell"] == 0 for c in numa["vnuma"])
    assert numa["pinning"] and numa["memory_nodeset"] == [0]
    chain = next(c for c in doc["chains"] if c["vm"] == "hvc-lab-numa")
    names = [layer["path"].rsplit("/", 1)[-1] for layer in chain["layers"]]
    assert names == ["hvc-lab-numa-base.qcow2", "hvc-lab-numa-mid.qcow2", "hvc-lab-numa-top.qcow2"]
    assert all(layer["format"] == "qcow2" and layer["allocated_bytes"] for layer in chain["layers"])
    pool = next(p for p in doc["pools"] if p["name"] == "hvc-lab" and p["host"] == vms["hvc-lab-numa"]["host"])
    volumes = {v["name"]: v for v in pool["volumes"]}
    assert volumes["hvc-lab-numa-top.qcow2"]["backing"].endswith("hvc-lab-numa-mid.qcow2")
    assert volumes["hvc-lab-numa-mid.qcow2"]["backing"].endswith("hvc-lab-numa-base.qcow2")
    assert volumes["hvc-lab-numa-base.qcow2"]["backing"] is None
    b_name = next(h["name"] for h in doc["hosts"] if h["uri"] == lab.uris[1])
    assert vms["hvc-lab-b1"]["host"] == b_name and vms["hvc-lab-b1"]["state"] == "running"


def test_events_bring_lifecycle_and_device_changes(lab: LabStatus, backend: LibvirtBackend) -> None:
    conn_a, conn_b = libvirt.open(lab.uris[0]), libvirt.open(lab.uris[1])  # another client, like virsh
    idle = conn_a.lookupByName("hvc-lab-idle")
    b1 = conn_b.lookupByName("hvc-lab-b1")
    volume = conn_b.storagePoolLookupByName("hvc-lab").storageVolLookupByName("hvc-lab-data4.qcow2").path()
    disk = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>"
            f"<source file='{volume}'/><target dev='sdz' bus='scsi'/></disk>")
    try:
        idle.create()
        wait_for(backend, lambda inv: _state(inv, "hvc-lab-idle") is VmState.RUNNING)
        idle.destroy()
        wait_for(backend, lambda inv: _state(inv, "hvc-lab-idle") is VmState.SHUTOFF)
        b1.attachDeviceFlags(disk, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        wait_for(backend, lambda inv: "sdz" in _vm(inv, "hvc-lab-b1").disks)
        b1.detachDeviceFlags(disk, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        wait_for(backend, lambda inv: "sdz" not in _vm(inv, "hvc-lab-b1").disks)
    finally:
        if idle.isActive():
            idle.destroy()
        conn_a.close()
        conn_b.close()


def test_a_stopped_daemon_shows_the_host_lost_then_it_comes_back(lab: LabStatus, backend: LibvirtBackend) -> None:
    names = {h.uri: h.name for h in backend.snapshot().hosts}
    b_name, a_name = names[lab.uris[1]], names[lab.uris[0]]
    try:
        stop_host_b()
        inv = wait_for(backend, lambda inv: _host(inv, b_name).state is HostState.LOST, timeout=30)
        assert _host(inv, b_name).error
        assert _vm(inv, "hvc-lab-b1").state is VmState.UNKNOWN  # last known, not invented
        assert _host(backend.refresh(), a_name).state is HostState.CONNECTED  # A keeps refreshing
    finally:
        lab_up()
    inv = wait_for(backend, lambda inv: _host(inv, b_name).state is HostState.CONNECTED, timeout=45)
    assert _vm(backend.refresh(), "hvc-lab-b1").state is VmState.RUNNING


def test_read_only_connections_read_everything_and_change_nothing(lab: LabStatus) -> None:
    backend = LibvirtBackend(lab.uris, read_only=True, poll_s=3600)
    try:
        inv = backend.snapshot()
        assert all(h.state is HostState.CONNECTED for h in inv.hosts)
        assert _state(inv, "hvc-lab-numa") is VmState.RUNNING
        dom = backend.hosts[0].connection.lookupByName("hvc-lab-numa")
        with pytest.raises(libvirt.libvirtError, match=r"read only|read-only"):
            dom.suspend()
        assert dom.isActive() and dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        backend.close()


def _host(inv: Inventory, name: str):  # type: ignore[no-untyped-def]
    host = inv.host(name)
    assert host is not None, name
    return host


def _vm(inv: Inventory, name: str):  # type: ignore[no-untyped-def]
    vm = inv.vm(name)
    assert vm is not None, name
    return vm


def _state(inv: Inventory, name: str) -> VmState | None:
    vm = inv.vm(name)
    return vm.state if vm else None


# A guest that is only defined (never started): no QEMU process, just a domain for the daemon to list.
_DEFINED = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>{mib}</memory>
<vcpu>{vcpus}</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"""


def test_a_first_load_of_many_domains_fetches_their_xml_ahead_from_a_real_daemon(
        lab: LabStatus, monkeypatch: pytest.MonkeyPatch) -> None:
    """More domains than ``ahead.AHEAD_MIN``: their XML comes from several threads over one
    connection to host B's libvirtd, and every domain is read with its own facts."""
    uri = lab.uris[1]
    names = [f"hvc-lab-ahead-{i:02}" for i in range(40)]  # a fixed number: never as many as a constant says
    assert len(names) > AHEAD_MIN, "the test must define more domains than ahead.AHEAD_MIN"
    readers: set[str] = set()
    fetch = libvirt_host._domain_xml
    monkeypatch.setattr(libvirt_host, "_domain_xml",
                        lambda dom: readers.add(threading.current_thread().name) or fetch(dom))
    conn = libvirt.open(uri)
    try:
        for i, name in enumerate(names):
            conn.defineXML(_DEFINED.format(name=name, mib=64 + i, vcpus=1 + i % 4))
        backend = LibvirtBackend([uri], poll_s=3600)
        try:
            vms = {vm.name: vm for vm in backend.snapshot().vms}
        finally:
            backend.close()
        for i, name in enumerate(names):
            assert (vms[name].state, vms[name].vcpus, vms[name].memory_kib) == (VmState.SHUTOFF, 1 + i % 4,
                                                                                 (64 + i) * 1024)
        assert readers and all(r.startswith("libvirt-ahead") for r in readers)
    finally:
        for name in names:
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).undefine()
        conn.close()
