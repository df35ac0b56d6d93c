"""S8 on the command line: the services list, service-move's NDJSON, exit codes and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_cli import run


def test_services_list_json_and_table() -> None:
    result = run("services", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    by_name = {s["name"]: s for s in doc["services"]}
    assert by_name["iscsi-tier1"] == {"name": "iscsi-tier1", "vm": "storage-svc-01", "host": "fra-hv02",
                                      "identifier": "02:5e:10:00:00:01", "vf": "0000:18:01.3", "protocol": "iscsi"}
    table = run("services")
    assert table.returncode == 0
    row = next(line for line in table.stdout.splitlines() if "nvme-pool-a" in line)
    assert all(word in row for word in ("02:5e:10:00:00:02", "nvme-tcp", "storage-svc-02", "fra-hv01",
                                        "0000:18:01.7"))


def test_inventory_includes_services() -> None:
    doc = json.loads(run("inventory", "--json").stdout)
    assert {s["identifier"] for s in doc["services"]} == {"02:5e:10:00:00:01", "02:5e:10:00:00:02"}
    assert "Storage services" in run("inventory").stdout


def test_service_move_streams_ndjson_and_keeps_the_identifier() -> None:
    result = run("service-move", "iscsi-tier1", "--to", "dub-hv01", "--yes", "--json", "--speed", "0")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "started" and events[0]["job"]["kind"] == "service-move"
    assert "dub-hv01/0000:18:01.0" in events[0]["job"]["targets"]
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert phases[0] == "release" and phases[-1] == "bind" and "precopy" in phases
    assert events[-1]["event"] == "result" and events[-1]["outcome"] == "succeeded"
    assert "with 02:5e:10:00:00:01 on VF 0000:18:01.0" in events[-1]["reason"]


@pytest.mark.parametrize(("args", "message"), [
    (("service-move", "iscsi-tier1", "--to", "dub-hv01"),
     "Move iscsi-tier1 to dub-hv01 (its initiators pause at switchover): needs confirmation; pass --yes"),
    (("service-move", "iscsi-tier1", "--to", "dub-hv02", "--yes"), "dub-hv02 has no free SR-IOV VF"),
    (("service-move", "nope", "--to", "dub-hv01", "--yes"), "no storage service called 'nope'"),
    (("service-move", "iscsi-tier1", "--to", "dub-hv01", "--yes", "--read-only"),
     "refusing to service-move: the connection is read-only"),
])
def test_service_move_refusals_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1 and result.stdout == ""


def test_a_bad_service_in_a_fleet_file_is_one_line(tmp_path: Path) -> None:
    from backends.sim.fleet import demo_fleet_path

    fleet = tmp_path / "f.toml"
    fleet.write_text(demo_fleet_path().read_text() + '\n[[services]]\nname = "x"\nvm = "web-01"\n'
                     'identifier = "02:00:00:00:00:09"\n')
    result = run("services", "--fleet", str(fleet))
    assert result.returncode == 2
    assert "services[2] 'x': vm 'web-01' owns no SR-IOV VF" in result.stderr and result.stderr.count("\n") == 1
