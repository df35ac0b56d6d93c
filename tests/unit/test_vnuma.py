"""S6: vNUMA sizing from the topology of every host a VM may use."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from backends.errors import BadInput
from backends.libvirt.parse import parse_domain
from backends.sim.backend import SimBackend
from backends.sim.fleet import demo_fleet_path, load_fleet
from backends.vnuma import candidate_hosts, fits_on, plan_vnuma
from tests.unit.test_cli import run

GIB = 1 << 20


def inv():  # type: ignore[no-untyped-def]
    return SimBackend(load_fleet(demo_fleet_path())).snapshot()


def test_the_smallest_cell_among_the_hosts_decides() -> None:
    hosts = candidate_hosts(inv(), site="fra")
    plan = plan_vnuma(hosts, 24, 160 * GIB)  # fra-hv03's cells: 16 CPUs, 128G
    assert [len(n.vcpus) for n in plan.nodes] == [12, 12]
    assert [n.memory_kib for n in plan.nodes] == [80 * GIB, 80 * GIB]
    assert "fra-hv03" in plan.limit
    only_big = candidate_hosts(inv(), hosts=["fra-hv01", "fra-gpu01"])
    assert len(plan_vnuma(only_big, 24, 160 * GIB).nodes) == 1  # fits one 32-CPU, 256G cell


def test_the_xml_round_trips_through_the_domain_parser() -> None:
    plan = plan_vnuma(candidate_hosts(inv(), site="dub"), 12, 96 * GIB)  # dub-hv02 cells: 8 CPUs, 64G
    assert len(plan.nodes) == 2
    xml = f"<domain><name>x</name><memory unit='KiB'>{96 * GIB}</memory>{plan.libvirt_xml()}</domain>"
    ET.fromstring(xml)
    vm = parse_domain(xml, "h").vm
    assert [c.vcpus for c in vm.vnuma] == [tuple(range(6)), tuple(range(6, 12))]
    assert [c.backing_cells for c in vm.vnuma] == [(0,), (1,)]
    assert sum(c.memory_kib for c in vm.vnuma) == 96 * GIB


@pytest.mark.parametrize(("vcpus", "memory", "message"), [
    (64, 600 * GIB, "need 5 vNUMA nodes of at most 16 CPUs and 128G, but fra-hv01 has only 2 cells"),
    (1, 200 * GIB, "needs 2 vNUMA nodes but there are only 1 vCPUs"),
])
def test_what_cannot_fit_is_refused_with_the_reason(vcpus: int, memory: int, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        plan_vnuma(candidate_hosts(inv(), site="fra"), vcpus, memory)


def test_host_choice_errors() -> None:
    with pytest.raises(BadInput, match="no host called 'mars'"):
        candidate_hosts(inv(), hosts=["mars"])
    with pytest.raises(BadInput, match="no site called 'nyc'"):
        candidate_hosts(inv(), site="nyc")


def test_fits_on_names_hosts_and_reasons() -> None:
    data = inv()
    vm = data.vm("erp-db-01")
    assert vm is not None
    fits = dict(fits_on(data, vm, candidate_hosts(data, site="fra")))
    assert "fra-hv04" not in fits  # its own host
    assert fits["fra-gpu01"] is None
    assert fits["fra-hv03"] is not None and "no NUMA cell with 96.0G free" in fits["fra-hv03"]


def test_the_command() -> None:
    result = run("plan-vnuma", "--vcpus", "24", "--memory", "160G", "--site", "fra", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["nodes"]) == 2 and "<numatune>" in doc["xml"]
    refused = run("plan-vnuma", "--vcpus", "64", "--memory", "600G")
    assert refused.returncode == 2 and "fra-hv01 has only 2 cells" in refused.stderr
