"""The simulator's chains are made when first needed, and a snapshot keeps the chains it was taken with."""

from __future__ import annotations

from backends.models import DiskChain, DiskLayer, Outcome
from backends.requests import MigrateRequest
from backends.sim.backend import SimBackend
from backends.sim.chains import Chains
from backends.sim.clock import ManualClock
from backends.sim.fleet import demo_fleet_path, load_fleet
from tests.unit.test_sim_operations import run


def _chain(vm: str, host: str) -> DiskChain:
    return DiskChain(vm, host, "vda", (DiskLayer(f"/i/{vm}.qcow2", "qcow2", 1, 1),))


def test_a_chain_is_made_on_its_first_lookup_only() -> None:
    made: list[str] = []

    def make(vm: str) -> DiskChain:
        made.append(vm)
        return _chain(vm, "h1")

    chains = Chains({("a", "vda"): (make, ("a",)), ("b", "vda"): (make, ("b",))})
    assert made == [] and list(chains) == [("a", "vda"), ("b", "vda")]
    assert chains[("b", "vda")].vm == "b" and chains[("b", "vda")].vm == "b"
    assert made == ["b"]
    assert [c.vm for c in chains.all()] == ["a", "b"] and made == ["b", "a"]


def test_a_sequence_handed_out_before_a_change_shows_the_chains_before_it() -> None:
    chains = Chains({("a", "vda"): (_chain, ("a", "h1")), ("b", "vda"): (_chain, ("b", "h1"))})
    before = chains.shown()
    assert chains.shown() is before  # the same object while nothing changes
    chains[("a", "vda")] = _chain("a", "h2")  # before was never read
    after = chains.shown()
    assert after is not before
    assert [c.host for c in before] == ["h1", "h1"]
    assert [c.host for c in after] == ["h2", "h1"]
    del chains[("b", "vda")]
    assert len(after) == 2 and len(chains.shown()) == 1


def test_a_snapshot_taken_before_a_migration_keeps_its_chains() -> None:
    backend = SimBackend(load_fleet(demo_fleet_path()), ManualClock())
    before = backend.snapshot()
    result, _ = run(backend, MigrateRequest("pg-main-01", "dub-hv01"))
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    old = [c.host for c in before.chains if c.vm == "pg-main-01"]
    new = [c.host for c in backend.snapshot().chains if c.vm == "pg-main-01"]
    assert old and set(old) == {"fra-hv01"} and set(new) == {"dub-hv01"}
