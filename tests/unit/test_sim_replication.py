"""Replication on the simulator: initial and incremental sync, verify, resume, failover."""

from __future__ import annotations

import threading

import pytest

from backends.errors import BadInput, OperationFailed
from backends.models import LayerState, Outcome, Progress
from backends.requests import FailoverRequest, ReplicateRequest, Request
from backends.sim.backend import SimBackend
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from tests.unit.test_sim_operations import run


def sim() -> tuple[SimBackend, ManualClock]:
    clock = ManualClock()
    return SimBackend(load_fleet(demo_fleet_path()), clock), clock


def link(backend: SimBackend, vm: str):  # type: ignore[no-untyped-def]
    return next(r for r in backend.snapshot().replicas if r.vm == vm)


def test_initial_sync_ships_every_layer_and_the_replica_has_the_same_shape() -> None:
    backend, _ = sim()
    result, events = run(backend, ReplicateRequest("k8s-node-01", "dub"))
    assert result.outcome is Outcome.SUCCEEDED
    r = link(backend, "k8s-node-01")
    assert r.replica_host == "dub-hv01"  # the recovery host with most free memory
    assert [s for s in r.layer_states] == [LayerState.PRESENT] * 2
    names = [layer.path.rsplit("/", 1)[-1] for layer in r.primary.layers]
    assert [layer.path.rsplit("/", 1)[-1] for layer in r.replica.layers] == names
    shipped = sum(layer.allocated_bytes or 0 for layer in r.primary.layers)
    assert result.reason == f"{shipped} bytes shipped" and r.lag_s == 0 and not r.rpo_violated
    assert [e for e in events if isinstance(e, Progress)][-1].remaining == 0


def test_incremental_sync_ships_only_missing_layers_then_only_new_writes() -> None:
    backend, clock = sim()
    before = link(backend, "web-02")
    missing = sum(layer.allocated_bytes or 0 for layer in before.primary.layers[1:])
    result, _ = run(backend, ReplicateRequest("web-02"))
    assert result.reason == f"{missing} bytes shipped"
    clock.advance(60)
    result, _ = run(backend, ReplicateRequest("web-02"))
    shipped = int(result.reason.split()[0])
    assert 0 < shipped < 60 * 21 * 1024 * 1024  # a minute of the active layer's writes, no layers


def test_an_interrupted_sync_keeps_whole_layers_only_and_resumes() -> None:
    backend, _ = sim()
    chain = next(c for c in backend.snapshot().chains if c.vm == "ci-runner-01")
    two_layers = sum(layer.allocated_bytes or 0 for layer in chain.layers[:2])
    cancel = threading.Event()

    def inside_the_third_layer(event: object) -> None:
        if isinstance(event, Progress) and event.phase == "shipping" and event.done > two_layers:
            cancel.set()

    result = backend.prepare(ReplicateRequest("ci-runner-01", "dub-hv01")).run(inside_the_third_layer, cancel)
    assert result.outcome is Outcome.CANCELLED and "resumes" in result.reason
    partial = link(backend, "ci-runner-01")
    done = sum(1 for s in partial.layer_states if s is LayerState.PRESENT)
    assert 0 < done < 5 and len(partial.replica.layers) == done  # no half-written layer
    result, _ = run(backend, ReplicateRequest("ci-runner-01"))
    assert result.outcome is Outcome.SUCCEEDED
    resumed = int(result.reason.split()[0])
    assert resumed == sum(layer.allocated_bytes or 0 for layer in partial.primary.layers[done:])


def test_a_corrupt_replica_layer_is_an_error_not_a_warning() -> None:
    backend, _ = sim()
    backend.state.replicas[("pg-main-01", "vda")].sums[1] = "0" * 16
    with pytest.raises(OperationFailed, match="differs from the primary at layer 1"):
        run(backend, ReplicateRequest("pg-main-01"))


def test_test_failover_starts_a_copy_without_disturbing_replication() -> None:
    backend, _ = sim()
    before = link(backend, "pg-main-01")
    result, _ = run(backend, FailoverRequest("pg-main-01", test=True))
    assert result.outcome is Outcome.SUCCEEDED
    inv = backend.snapshot()
    copy = inv.vm("pg-main-01-testfo")
    assert copy and copy.host == "dub-hv01" and copy.state.value == "running"
    chain = next(c for c in inv.chains if c.vm == copy.name)
    assert chain.active.path.endswith("vda-testfo.qcow2") and len(chain.layers) == len(before.replica.layers) + 1
    assert inv.vm("pg-main-01").host == "fra-hv01"  # type: ignore[union-attr]
    assert link(backend, "pg-main-01").replica_host == "dub-hv01"
    with pytest.raises(BadInput, match="already running as pg-main-01-testfo"):
        backend.prepare(FailoverRequest("pg-main-01", test=True))


def test_planned_failover_moves_the_vm_and_reverses_replication() -> None:
    backend, _ = sim()
    result, _ = run(backend, FailoverRequest("web-01", test=False))
    assert result.outcome is Outcome.SUCCEEDED and "reverse" in result.reason
    r = link(backend, "web-01")
    assert backend.snapshot().vm("web-01").host == "dub-hv01"  # type: ignore[union-attr]
    assert (r.primary_host, r.replica_host) == ("dub-hv01", "fra-hv01")


@pytest.mark.parametrize(("request_", "message"), [
    (ReplicateRequest("web-01", "fra"), "fra is the site fra-hv01 is in"),
    (ReplicateRequest("web-01", "fra-hv02"), "fra-hv02 is at fra-hv01's own site fra"),
    (ReplicateRequest("web-01", "dub-hv02"), "web-01 already replicates to dub-hv01"),
    (ReplicateRequest("k8s-node-01"), "k8s-node-01 is not replicated yet"),
    (FailoverRequest("k8s-node-01"), "k8s-node-01 is not replicated"),
])
def test_nonsense_is_refused(request_: Request, message: str) -> None:
    backend, _ = sim()
    with pytest.raises(BadInput, match=message):
        backend.prepare(request_)
