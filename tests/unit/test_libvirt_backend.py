"""The libvirt backend against libvirt's in-process test driver (no daemon needed)."""

from __future__ import annotations

import threading
from pathlib import Path

import libvirt
import pytest

from backends.errors import BadInput
from backends.libvirt.backend import LibvirtBackend
from backends.libvirt.testfleet import fleet_uri, write_test_fleet
from backends.models import HostState, OwnerKind, VmState


@pytest.fixture
def default() -> LibvirtBackend:
    backend = LibvirtBackend(["test:///default"], poll_s=3600)
    yield backend  # type: ignore[misc]
    backend.close()


def test_default_test_host_inventory(default: LibvirtBackend) -> None:
    inv = default.snapshot()
    (host,) = inv.hosts
    assert host.state is HostState.CONNECTED and host.uri == "test:///default"
    assert [len(c.cpus) for c in host.numa] == [8, 8]
    assert all(c.free_kib is not None and 0 < c.free_kib <= c.memory_kib for c in host.numa)
    (vm,) = inv.vms
    assert vm.name == "test" and vm.state is VmState.RUNNING and vm.host == host.name
    assert inv.chains and inv.chains[0].vm == "test"


def test_events_mark_a_domain_dirty_and_refresh_rereads_only_it(default: LibvirtBackend) -> None:
    host = default.hosts[0]
    changed = threading.Event()
    default.watch(lambda change: changed.set())
    xml_reads = host.calls["XMLDesc"]
    default.refresh()
    assert host.calls["XMLDesc"] == xml_reads  # nothing changed: nothing re-read
    host.connection.lookupByName("test").suspend()
    assert changed.wait(10), "no change was announced after a lifecycle event"
    inv = default.refresh()
    assert inv.vms[0].state is VmState.PAUSED
    assert host.calls["XMLDesc"] == xml_reads + 1


def test_replica_status_is_read_when_due_when_asked_and_not_when_refused(
        default: LibvirtBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replica status costs pool listings and record downloads on every host: a refresh reads
    it when due (the first one is), or when asked; ``replicas=False`` (an operation that cannot
    have changed any, e.g. migrating a guest with no replica) leaves it for later."""
    from backends.libvirt.replication import status

    reads: list[int] = []
    monkeypatch.setattr(status, "replica_links", lambda backend, inv: reads.append(1) or ())
    default.refresh(replicas=False)
    assert reads == []
    default.refresh()  # the first refresh finds it due
    default.refresh()  # not due again for REPLICAS_EVERY_S
    assert len(reads) == 1
    default.refresh(replicas=True)
    assert len(reads) == 2


def test_generated_fleet_parses_every_domain_and_device(tmp_path: Path) -> None:
    path = write_test_fleet(tmp_path / "fleet.xml", 120, seed=5)
    backend = LibvirtBackend([fleet_uri(path)], poll_s=3600)
    try:
        inv = backend.snapshot()
        assert len(inv.vms) == 120
        assert any(len(vm.vnuma) >= 2 for vm in inv.vms)
        assert any(len(c.layers) >= 2 for c in inv.chains)
        assert any(d.vfs for d in inv.devices) and any(d.physfn for d in inv.devices)
        owned = [d for d in inv.devices if d.owner.kind is OwnerKind.VM]
        for device in owned:
            owner = inv.vm(device.owner.vm or "")
            assert owner is not None and device.address in owner.devices
    finally:
        backend.close()


@pytest.mark.parametrize("domains", [20, 300])
def test_calls_per_refresh_do_not_grow_with_the_number_of_domains(tmp_path: Path, domains: int) -> None:
    path = write_test_fleet(tmp_path / "fleet.xml", domains)
    backend = LibvirtBackend([fleet_uri(path)], poll_s=3600)
    try:
        before = backend.libvirt_calls()
        backend.refresh()
        backend.refresh()
        per_refresh = (backend.libvirt_calls() - before).total() / 2
        assert per_refresh <= 2, dict(backend.libvirt_calls() - before)
    finally:
        backend.close()


def test_hosts_with_the_same_hostname_are_named_by_uri(tmp_path: Path) -> None:
    uri = fleet_uri(write_test_fleet(tmp_path / "fleet.xml", 3))
    backend = LibvirtBackend(["test:///default", uri], poll_s=3600)
    try:
        names = [h.name for h in backend.snapshot().hosts]
        assert names == ["test:///default", uri]
        assert {vm.host for vm in backend.snapshot().vms} == set(names)
        assert backend.host_for(uri) is backend.hosts[1]
    finally:
        backend.close()


def test_an_unreachable_host_is_lost_and_does_not_stop_the_others() -> None:
    dead = "qemu+unix:///system?socket=/nonexistent/hvc-test.sock"
    backend = LibvirtBackend(["test:///default", dead], poll_s=3600)
    try:
        alive, lost = backend.snapshot().hosts
        assert alive.state is HostState.CONNECTED
        assert lost.state is HostState.LOST and "/nonexistent/hvc-test.sock" in (lost.error or "")
        assert len(backend.refresh().vms) == 1
    finally:
        backend.close()


def test_read_only_connections_refuse_changes() -> None:
    backend = LibvirtBackend(["test:///default"], read_only=True, poll_s=3600)
    try:
        assert backend.snapshot().vms[0].name == "test"
        with pytest.raises(libvirt.libvirtError, match=r"read only|read-only"):
            backend.hosts[0].connection.lookupByName("test").suspend()
    finally:
        backend.close()


@pytest.mark.parametrize(("uris", "message"), [
    (["foo"], "'foo' is not a libvirt URI"),
    (["qemu:system"], "is not a libvirt URI"),
    (["test:///default", "test:///default"], "is given twice"),
])
def test_bad_uris_are_refused_before_connecting(uris: list[str], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        LibvirtBackend(uris)


def test_passwords_in_uris_are_never_shown() -> None:
    backend = LibvirtBackend(["qemu+tcp://admin:s3cret@127.0.0.1:1/system"], poll_s=3600,
                             first_load_timeout_s=10)
    try:
        text = repr(backend.snapshot())
        assert "s3cret" not in text and "admin:***@127.0.0.1" in text
    finally:
        backend.close()


def test_storage_pools_list_volumes_with_their_backing_chains(tmp_path: Path) -> None:
    backend = LibvirtBackend([fleet_uri(write_test_fleet(tmp_path / "fleet.xml", 30))], poll_s=3600)
    try:
        inv = backend.snapshot()
        (pool,) = inv.pools
        assert pool.name == "images" and pool.kind == "dir" and pool.host == inv.hosts[0].name
        by_path = {v.path: v for v in pool.volumes}
        overlays = [v for v in pool.volumes if v.backing]
        assert overlays and all(v.backing in by_path for v in overlays)  # every backing is a volume of the pool
        sized = [layer for c in inv.chains for layer in c.layers if layer.path in by_path]
        assert sized and all(layer.allocated_bytes == by_path[layer.path].allocated_bytes for layer in sized)
    finally:
        backend.close()


def test_a_chain_cut_short_by_inactive_xml_is_completed_from_pool_volumes() -> None:
    from backends.libvirt.host import HostConnection
    from backends.models import DiskChain, DiskLayer, StoragePool, Volume

    host = HostConnection("test:///default", read_only=True, on_change=lambda _h: None)
    host._pools = (StoragePool("p", "h", "dir", "/p", None, None, (
        Volume("base", "/p/base", "qcow2", 10, 5, None),
        Volume("mid", "/p/mid", "qcow2", 10, 2, "/p/base"),
        Volume("top", "/p/top", "qcow2", 10, 1, "/p/mid"),
    )),)
    only_top = DiskChain("vm", "h", "sda", (DiskLayer("/p/top", "qcow2"),))
    chain = host._sized(only_top)
    assert [layer.path for layer in chain.layers] == ["/p/base", "/p/mid", "/p/top"]
    assert [layer.allocated_bytes for layer in chain.layers] == [5, 2, 1]
    loop = (StoragePool("p", "h", "dir", "/p", None, None, (Volume("a", "/p/a", "qcow2", 1, 1, "/p/a"),)),)
    host._pools = loop  # a volume naming itself as backing must not hang the refresh
    assert len(host._sized(DiskChain("vm", "h", "sda", (DiskLayer("/p/a", "qcow2"),))).layers) == 1
