"""S8 storage services on the simulator: fleet declarations, the move that keeps the identifier, refusals."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from backends.errors import BadInput, FleetFileError, NotFound, ReadOnly
from backends.models import JobResult, Outcome, OwnerKind, PhaseChanged
from backends.requests import ServiceMoveRequest
from backends.services import destinations, free_vfs, mac_problem
from backends.sim import service_move
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet, parse_fleet
from backends.sim.migrate import SimMigrate
from backends.sim.scale import generate_fleet

SMALL = """
[[sites]]
name = "p"
[[hosts]]
name = "h1"
site = "p"
cells = [{ cpus = 8, memory = "64G" }]
[[hosts]]
name = "tiny"
site = "p"
cells = [{ cpus = 8, memory = "12G" }]
[[vms]]
name = "svc"
host = "h1"
vcpus = 2
memory = "16G"
[[vms]]
name = "plain"
host = "h1"
vcpus = 2
memory = "2G"
[[devices]]
host = "h1"
address = "0000:18:00.0"
vendor = "Intel"
product = "E810"
class = "Ethernet controller"
driver = "ice"
iommu_group = 20
vfs = 2
vf_owners = { "1" = "svc" }
[[devices]]
host = "tiny"
address = "0000:18:00.0"
vendor = "Intel"
product = "E810"
class = "Ethernet controller"
driver = "ice"
iommu_group = 20
vfs = 2
"""
SERVICE = '\n[[services]]\nname = "s1"\nvm = "svc"\nidentifier = "02:00:00:00:00:01"\n'


def sim() -> SimBackend:
    return SimBackend(load_fleet(demo_fleet_path()), ManualClock())


def run(backend: SimBackend, request: ServiceMoveRequest,
        cancel_after: int | None = None) -> tuple[JobResult, list[object]]:
    events: list[object] = []
    cancel = threading.Event()

    def emit(event: object) -> None:
        events.append(event)
        if cancel_after is not None and len(events) >= cancel_after:
            cancel.set()

    return backend.prepare(request).run(emit, cancel), events


# --- fleet file ------------------------------------------------------------------------


def test_fleet_services_bind_their_identifier_to_the_vms_vf() -> None:
    spec = parse_fleet(SMALL + SERVICE)
    backend = SimBackend(spec, ManualClock())
    (svc,) = backend.snapshot().services
    assert (svc.name, svc.vm, svc.host, svc.identifier, svc.protocol) == ("s1", "svc", "h1", "02:00:00:00:00:01",
                                                                          "iscsi")
    assert svc.vf == "0000:18:01.1"  # VF index 1 of the PF, the one vf_owners gave the VM
    assert backend.snapshot().vm("svc").devices == ("0000:18:01.1",)  # type: ignore[union-attr]


@pytest.mark.parametrize(("extra", "message"), [
    ('\n[[services]]\nname = "s1"\nvm = "ghost"\nidentifier = "02:00:00:00:00:01"\n',
     "services[0] 's1': vm 'ghost' is not one of the [[vms]]"),
    ('\n[[services]]\nname = "s1"\nvm = "plain"\nidentifier = "02:00:00:00:00:01"\n',
     "services[0] 's1': vm 'plain' owns no SR-IOV VF"),
    ('\n[[services]]\nname = "s1"\nvm = "svc"\nidentifier = "02:00:00:00:01"\n',
     "services[0] 's1': identifier '02:00:00:00:01' is not a MAC address"),
    ('\n[[services]]\nname = "s1"\nvm = "svc"\nidentifier = "00:1b:21:00:00:01"\n',
     "is not locally administered"),
    ('\n[[services]]\nname = "s1"\nvm = "svc"\nidentifier = "03:00:00:00:00:01"\n', "is a multicast MAC"),
    (SERVICE.replace('"\n', '"\nprotocol = "ftp"\n', 1), "protocol 'ftp' must be one of"),
    (SERVICE + SERVICE.replace('"s1"', '"s2"'), "services[1] 's2': identifier 02:00:00:00:00:01 is already 's1'"),
    (SERVICE + SERVICE, "services[1] 's1': service 's1' is defined twice"),
    (SERVICE.replace("identifier", "mac"), "unknown key 'mac'"),
])
def test_fleet_service_mistakes_are_one_line(extra: str, message: str) -> None:
    with pytest.raises(FleetFileError) as err:
        parse_fleet(SMALL + extra, "f.toml")
    assert message in err.value.one_line()
    assert "\n" not in err.value.one_line()


def test_mac_rules() -> None:
    assert mac_problem("02:5E:10:00:00:01") == ""  # case does not matter
    assert mac_problem("0a:00:00:00:00:01") == ""
    assert "not a MAC" in mac_problem("02-00-00-00-00-01")


def test_demo_and_scale_fleets_have_services() -> None:
    inv = sim().snapshot()
    assert {s.name for s in inv.services} == {"iscsi-tier1", "nvme-pool-a"}
    for s in inv.services:
        vf = next(d for d in inv.devices_on(s.host) if d.address == s.vf)
        assert vf.is_vf and vf.owner.vm == s.vm
    scaled = SimBackend(generate_fleet(20, 40), ManualClock()).snapshot()
    assert scaled.services
    assert len({s.identifier for s in scaled.services}) == len(scaled.services)
    assert all(s.vf in scaled.vm(s.vm).devices for s in scaled.services)  # type: ignore[union-attr]


# --- the move --------------------------------------------------------------------------


def test_move_keeps_the_identifier_releases_the_old_vf_and_binds_a_new_one() -> None:
    backend = sim()
    before = backend.snapshot()
    svc = next(s for s in before.services if s.name == "iscsi-tier1")
    free_before = {d.address for d in free_vfs(before, "dub-hv01")}
    dub_free_kib = before.host("dub-hv01").free_kib  # type: ignore[union-attr]
    result, events = run(backend, ServiceMoveRequest("iscsi-tier1", "dub-hv01"))
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    after = backend.snapshot()
    moved = next(s for s in after.services if s.name == "iscsi-tier1")
    assert moved.identifier == svc.identifier == "02:5e:10:00:00:01"
    assert moved.host == "dub-hv01" and moved.vf in free_before
    new_vf = next(d for d in after.devices_on("dub-hv01") if d.address == moved.vf)
    assert new_vf.owner.kind is OwnerKind.VM and new_vf.owner.vm == "storage-svc-01"
    old_vf = next(d for d in after.devices_on("fra-hv02") if d.address == svc.vf)
    assert old_vf.owner.kind is OwnerKind.HOST and old_vf.driver == "mlx5_core"
    assert old_vf in free_vfs(after, "fra-hv02")
    vm = after.vm("storage-svc-01")
    assert vm is not None and vm.host == "dub-hv01" and vm.devices == (moved.vf,)
    assert after.host("dub-hv01").free_kib == dub_free_kib - vm.memory_kib  # type: ignore[union-attr]
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases.index("release") < phases.index("precopy") < phases.index("switchover") < phases.index("bind")
    assert {getattr(e, "job_id", None) for e in events} == {result.job_id}


def test_a_second_move_takes_it_back_with_the_same_identifier() -> None:
    backend = sim()
    run(backend, ServiceMoveRequest("nvme-pool-a", "fra-hv02"))
    result, _ = run(backend, ServiceMoveRequest("02:5e:10:00:00:02", "fra-hv01"))  # by identifier too
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    svc = next(s for s in backend.snapshot().services if s.name == "nvme-pool-a")
    assert (svc.host, svc.identifier) == ("fra-hv01", "02:5e:10:00:00:02")


def test_job_targets_cover_the_vm_both_hosts_and_both_vfs() -> None:
    op = sim().prepare(ServiceMoveRequest("iscsi-tier1", "dub-hv01"))
    assert {"storage-svc-01", "fra-hv02", "dub-hv01", "fra-hv02/0000:18:01.3",
            "dub-hv01/0000:18:01.0"} <= set(op.job.targets)


@pytest.mark.parametrize(("service", "to", "error", "message"), [
    ("iscsi-tier1", "fra-hv03", BadInput, "fra-hv03 has no free SR-IOV VF"),
    ("iscsi-tier1", "fra-hv02", BadInput, "already runs on fra-hv02"),
    ("nope", "dub-hv01", NotFound, "no storage service called 'nope'"),
    ("iscsi-tier1", "mars", BadInput, "no host called 'mars'"),
])
def test_refusals_change_nothing(service: str, to: str, error: type[Exception], message: str) -> None:
    backend = sim()
    before = backend.snapshot()
    with pytest.raises(error) as err:
        backend.prepare(ServiceMoveRequest(service, to))
    assert message in str(err.value)
    assert backend.snapshot() == before


def test_refused_when_the_destination_lacks_memory() -> None:
    backend = SimBackend(parse_fleet(SMALL + SERVICE), ManualClock())
    with pytest.raises(BadInput, match=r"tiny has no NUMA cell with 16\.0G free"):
        backend.prepare(ServiceMoveRequest("s1", "tiny"))
    inv = backend.snapshot()
    assert [(h.name, vf, "no NUMA cell" in why) for h, vf, why in destinations(inv, inv.services[0])] == [
        ("tiny", None, True)]


def test_read_only_refuses() -> None:
    backend = SimBackend(load_fleet(demo_fleet_path()), ManualClock(), read_only=True)
    with pytest.raises(ReadOnly):
        backend.prepare(ServiceMoveRequest("iscsi-tier1", "dub-hv01"))


class _FailingMigrate(SimMigrate):
    def _precopy(self, emit, cancel):  # type: ignore[no-untyped-def]
        super()._precopy(emit, cancel)
        return (Outcome.FAILED, "injected: the migration network dropped")


def test_failure_while_moving_restores_the_identifier_on_the_source_vf(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = sim()
    before = backend.snapshot()
    monkeypatch.setattr(service_move, "SimMigrate", _FailingMigrate)
    result, events = run(backend, ServiceMoveRequest("iscsi-tier1", "dub-hv01"))
    assert result.outcome is Outcome.FAILED
    assert "injected" in result.reason and "restored on VF 0000:18:01.3 on fra-hv02" in result.reason
    assert any(isinstance(e, PhaseChanged) and e.phase == "precopy" for e in events)
    after = backend.snapshot()
    assert after.services == before.services
    vm_before, vm_after = before.vm("storage-svc-01"), after.vm("storage-svc-01")
    assert vm_before is not None and vm_after is not None
    assert vm_after == vm_before
    assert after.devices == before.devices
    assert after.host("dub-hv01") == before.host("dub-hv01")


def test_cancel_while_moving_restores_too() -> None:
    backend = sim()
    before = backend.snapshot()
    # Past the release drain, into pre-copy.
    _, all_events = run(sim(), ServiceMoveRequest("iscsi-tier1", "dub-hv01"))
    first_precopy = next(i for i, e in enumerate(all_events) if getattr(e, "phase", "") == "precopy")
    result, _ = run(backend, ServiceMoveRequest("iscsi-tier1", "dub-hv01"), cancel_after=first_precopy + 2)
    assert result.outcome is Outcome.CANCELLED
    assert "restored on VF" in result.reason
    after = backend.snapshot()
    assert after.services == before.services and after.devices == before.devices


def test_cancel_while_releasing_leaves_the_vf_with_the_vm() -> None:
    backend = sim()
    before = backend.snapshot()
    result, _ = run(backend, ServiceMoveRequest("iscsi-tier1", "dub-hv01"), cancel_after=3)
    assert result.outcome is Outcome.CANCELLED
    assert "stays on VF 0000:18:01.3" in result.reason
    assert backend.snapshot().services == before.services
    assert backend.snapshot().devices == before.devices


def test_alerts_name_duplicate_and_unbound_identifiers() -> None:
    from backends.analysis import Severity, alerts

    inv = sim().snapshot()
    assert not [a for a in alerts(inv) if a.kind == "service"]
    a, b = inv.services
    bad = replace(inv, services=(a, replace(b, identifier=a.identifier, vf=None)))
    found = [(x.severity, x.message) for x in alerts(bad) if x.kind == "service"]
    assert (Severity.ERROR, f"nvme-pool-a and iscsi-tier1 both claim {a.identifier}") in found
    assert (Severity.WARNING, f"nvme-pool-a: {a.identifier} is on no VF (moving, or its interface is gone)") in found
