"""Alerts and flags: what the views and the command line call out."""

from __future__ import annotations

from dataclasses import replace

from backends.analysis import Severity, alerts, cell_use, claims, device_flags, overcommitted_cells, vm_flags
from backends.models import HostState, Inventory, Owner, OwnerKind, VmState
from backends.sim.backend import SimBackend
from backends.sim.fleet import demo_fleet_path, load_fleet

GIB = 1 << 20


def demo() -> Inventory:
    return SimBackend(load_fleet(demo_fleet_path())).snapshot()


def test_the_demo_datacenter_raises_exactly_its_known_problems() -> None:
    found = {(a.kind, a.subject) for a in alerts(demo())}
    assert found == {
        ("cell-overcommitted", "cell 1"),
        ("dma-overcommit", "erp-db-01"),
        ("rpo", "web-02"),
        ("placement", "pg-replica-01"),
        ("placement", "analytics-01"),
        ("device", "0000:ca:00.0"),
        ("device", "0000:ca:00.1"),
    }
    severities = [a.severity for a in alerts(demo())]
    assert severities == sorted(severities, key=lambda s: s is not Severity.ERROR)


def test_cell_use_and_overcommit() -> None:
    inv = demo()
    host = inv.host("fra-hv04")
    assert host is not None
    use = cell_use(host, inv.vms)
    assert use == {0: 96 * GIB, 1: (64 + 48 + 24) * GIB}  # dev-01 is shut off
    assert overcommitted_cells(host, inv.vms) == {1: 8 * GIB}


def test_unknown_placement_makes_cell_use_unknown() -> None:
    inv = demo()
    host = inv.host("fra-hv01")
    vm = inv.vm("web-01")
    assert host and vm
    unknown = replace(vm, memory_nodeset=())
    assert set(cell_use(host, [unknown]).values()) == {None}


def test_vm_flags_split_and_remote() -> None:
    inv = demo()
    assert vm_flags(inv.vm("pg-replica-01"), inv.host("fra-hv02")) == [  # type: ignore[arg-type]
        "vNUMA cell 1 split across cells 0,1"]
    assert vm_flags(inv.vm("analytics-01"), inv.host("fra-hv02")) == [  # type: ignore[arg-type]
        "memory on cell 1 is remote from its vCPUs on cell 0"]
    assert vm_flags(inv.vm("pg-main-01"), inv.host("fra-hv01")) == []  # type: ignore[arg-type]


def test_double_claims_and_lost_hosts() -> None:
    inv = demo()
    gpu = next(d for d in inv.devices if d.address == "0000:17:00.0")
    thief = replace(inv.vm("ml-infer-01"), devices=(gpu.address,))  # type: ignore[type-var]
    vms = tuple(thief if v.name == thief.name else v for v in inv.vms)
    hosts = tuple(replace(h, state=HostState.LOST, error="gone") if h.name == "dub-hv02" else h for h in inv.hosts)
    inv2 = replace(inv, vms=vms, hosts=hosts)
    assert claims(inv2.devices, inv2.vms)[("fra-gpu01", gpu.address)] == ["ml-train-01", "ml-infer-01"]
    assert device_flags(inv2)[("fra-gpu01", gpu.address)] == "claimed by ml-train-01 and ml-infer-01"
    kinds = {(a.kind, a.severity) for a in alerts(inv2)}
    assert ("host-lost", Severity.ERROR) in kinds and ("device", Severity.ERROR) in kinds


def test_a_vfio_device_next_to_a_host_device_is_not_a_split() -> None:
    inv = demo()
    devices = tuple(
        replace(d, owner=Owner(OwnerKind.VFIO, driver="vfio-pci")) if d.address == "0000:ca:00.0" else d
        for d in inv.devices
    )
    vms = tuple(replace(v, devices=()) if v.name == "ml-train-02" else v for v in inv.vms)
    assert not any("split" in t for t in device_flags(replace(inv, devices=devices, vms=vms)).values())
    assert all(v.state is not VmState.UNKNOWN for v in vms)
