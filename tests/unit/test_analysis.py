"""Alerts and flags: what the views and the command line call out."""

from __future__ import annotations

from dataclasses import replace

from backends.analysis import (
    Severity,
    alerts,
    cell_use,
    claims,
    device_flags,
    host_flags,
    overcommitted_cells,
    vm_flags,
)
from backends.models import HostState, Inventory, Owner, OwnerKind, VcpuPin, Vm, VmState
from backends.sim.backend import SimBackend
from backends.sim.fleet import demo_fleet_path, load_fleet

GIB = 1 << 20
E, W = Severity.ERROR, Severity.WARNING


def pinned(*cpus: int) -> tuple[VcpuPin, ...]:
    return tuple(VcpuPin(i, (c,)) for i, c in enumerate(cpus))


def demo() -> Inventory:
    return SimBackend(load_fleet(demo_fleet_path())).snapshot()


def test_the_demo_datacenter_raises_exactly_its_known_problems() -> None:
    found = alerts(demo())
    assert [(a.severity, a.kind, a.subject, a.message) for a in found] == [
        (E, "cell-overcommitted", "cell 1", "fra-hv04 cell 1 is overcommitted by 8.0G: VMs hold 136G of 128G"),
        (E, "dma-overcommit", "erp-db-01", "erp-db-01 has direct-assigned devices but its memory is overcommitted"),
        (E, "rpo", "web-02", "web-02/vda replica lag 940s exceeds its RPO of 300s"),
        (W, "vnuma-split", "pg-replica-01",
         "pg-replica-01: vNUMA cell v1 split across cells 0,1 (24.0G on 0 + 24.0G on 1)"),
        (W, "remote-memory", "analytics-01",
         "analytics-01: memory remote from vCPUs — 64.0G on cell 1, vCPUs on cell 0"),
        (W, "device", "0000:ca:00.0", "0000:ca:00.0 on fra-gpu01: IOMMU group 80 split: host, ml-train-02"),
        (W, "device", "0000:ca:00.1", "0000:ca:00.1 on fra-gpu01: IOMMU group 80 split: host, ml-train-02"),
    ]
    assert found[0].host == "fra-hv04" and found[0].vms == ("erp-db-01", "erp-app-01", "erp-app-02")
    assert found[3].vms == ("pg-replica-01",) and found[2].vms == ("web-02",)


def test_alerts_carry_the_host_flags_of_each_connected_host_word_for_word() -> None:
    inv = demo()
    from_hosts = [a for h in inv.hosts for a in host_flags(h, inv.vms)]
    assert from_hosts and set(from_hosts) <= set(alerts(inv))
    assert [a.kind for a in host_flags(inv.host("fra-hv04"), inv.vms)] == ["cell-overcommitted"]  # type: ignore[arg-type]


def test_cell_use_and_overcommit() -> None:
    inv = demo()
    host = inv.host("fra-hv04")
    assert host is not None
    use = cell_use(host, inv.vms)
    assert use == {0: 96 * GIB, 1: (64 + 48 + 24) * GIB}  # dev-01 is shut off
    assert overcommitted_cells(host, inv.vms) == {1: 8 * GIB}


def test_unknown_placement_counts_on_no_cell() -> None:
    inv = demo()
    host = inv.host("fra-hv01")
    vm = inv.vm("web-01")
    assert host and vm
    unknown = replace(vm, memory_nodeset=())
    assert cell_use(host, [unknown]) == {0: 0, 1: 0}
    assert host_flags(host, [unknown]) == ()


def test_known_memory_over_a_cell_is_overcommitted_even_with_unknown_placement_beside_it() -> None:
    inv = demo()
    host = inv.host("fra-hv04")
    assert host is not None
    mystery = Vm("mystery", "uuid-mystery", "fra-hv04", VmState.RUNNING, 4, 32 * GIB)  # no placement at all
    assert mystery.memory_by_cell() is None
    flags = host_flags(host, [*inv.vms, mystery])
    assert [(a.kind, a.subject, a.message) for a in flags] == [
        ("cell-overcommitted", "cell 1", "fra-hv04 cell 1 is overcommitted by at least 8.0G: VMs hold 136G of 128G, "
                                         "not counting 1 VM of unknown placement"),
    ]
    assert "mystery" not in flags[0].vms
    assert overcommitted_cells(host, [*inv.vms, mystery]) == {1: 8 * GIB}
    shrunk = [replace(v, memory_nodeset=()) if v.name == "erp-app-02" else v for v in inv.vms]  # 112G known on 1
    assert host_flags(host, shrunk) == ()  # below the cell's size: nothing can be said for sure


def test_cpus_pinned_by_two_vms_are_overcommitted() -> None:
    inv = demo()
    host = inv.host("fra-hv01")
    assert host is not None
    pins = {"web-01": (40, 42), "k8s-node-01": (40, 41, 42, 43), "nfv-fw-01": (8, 43), "cache-01": (40,)}
    vms = [replace(v, pinning=pinned(*pins[v.name])) if v.name in pins else v for v in inv.vms]
    flags = host_flags(host, vms)
    assert [(a.severity, a.kind, a.subject, a.message, a.vms) for a in flags] == [
        (E, "cpu-overcommitted", "CPUs 40,42",
         "fra-hv01 CPUs 40,42 are overcommitted: pinned by k8s-node-01 and web-01", ("k8s-node-01", "web-01")),
        (E, "cpu-overcommitted", "CPU 43",
         "fra-hv01 CPU 43 is overcommitted: pinned by k8s-node-01 and nfv-fw-01", ("k8s-node-01", "nfv-fw-01")),
    ]  # cache-01 is shut off, so its pin on 40 takes nothing
    assert set(flags) <= set(alerts(replace(inv, vms=tuple(vms))))
    web01 = next(v for v in vms if v.name == "web-01")
    assert vm_flags(web01, host, vms) == [flags[0].message]
    assert vm_flags(web01, host) == []  # alone it shares nothing


def test_cpus_and_cells_the_host_does_not_report_are_flagged() -> None:
    inv = demo()
    host = inv.host("fra-hv01")
    vm = inv.vm("web-01")
    assert host and vm
    stray = replace(vm, pinning=pinned(99))
    assert [(a.kind, a.message) for a in host_flags(host, [stray])] == [
        ("unreported-topology", "web-01: uses CPU 99, which the host does not report")]
    both = replace(vm, pinning=pinned(1, 98, 99), memory_nodeset=(7,))
    assert vm_flags(both, host) == ["web-01: uses CPUs 98-99 and cell 7, which the host does not report"]
    assert vm_flags(both, None) == []  # without the host's topology nothing can be said


def test_vm_flags_word_problems_as_the_alerts_do() -> None:
    inv = demo()
    messages = {a.subject: a.message for a in alerts(inv)}
    assert vm_flags(inv.vm("pg-replica-01"), inv.host("fra-hv02")) == [  # type: ignore[arg-type]
        "pg-replica-01: vNUMA cell v1 split across cells 0,1 (24.0G on 0 + 24.0G on 1)"]
    assert vm_flags(inv.vm("analytics-01"), inv.host("fra-hv02")) == [  # type: ignore[arg-type]
        messages["analytics-01"]]
    assert vm_flags(inv.vm("pg-main-01"), inv.host("fra-hv01")) == []  # type: ignore[arg-type]
    erp = inv.vm("erp-db-01")
    assert erp is not None
    assert vm_flags(erp, inv.host("fra-hv04"), inv.vms) == [messages["cell 1"]]
    replica, hv02 = inv.vm("pg-replica-01"), inv.host("fra-hv02")
    assert replica and hv02
    off = replace(replica, state=VmState.SHUTOFF)
    assert vm_flags(off, hv02) == [messages["pg-replica-01"]]  # still worth fixing before it starts
    assert host_flags(hv02, [off]) == ()  # but it holds nothing on the host


def test_double_claims_and_lost_hosts() -> None:
    inv = demo()
    gpu = next(d for d in inv.devices if d.address == "0000:17:00.0")
    infer = inv.vm("ml-infer-01")
    assert infer is not None
    thief = replace(infer, devices=(gpu.address,))
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
