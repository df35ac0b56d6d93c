"""Operation verbs on the command line: NDJSON, plain lines, exit codes, confirmation."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_cli import run


def test_migrate_streams_ndjson_ending_with_the_result() -> None:
    result = run("migrate", "web-01", "--to", "fra-hv02", "--json", "--speed", "1000")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "started" and events[0]["job"]["kind"] == "migrate"
    assert events[-1]["event"] == "result" and events[-1]["outcome"] == "succeeded"
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(e["done"] >= 0 and e["remaining"] >= 0 for e in progress)
    assert {e["phase"] for e in events if e["event"] == "phase"} == {"precopy", "switchover"}


def test_plain_lines_without_a_terminal() -> None:
    result = run("rebalance", "analytics-01", "--vnode", "0", "--to-cell", "0", "--speed", "1000")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("rebalance-1 started: move vNUMA cell 0 of analytics-01 to cell 0")
    assert any("moving:" in line and "% ·" in line for line in lines)
    assert lines[-1].startswith("rebalance-1 succeeded in ")


def test_an_operation_that_fails_exits_1_with_the_reason() -> None:
    result = run("migrate", "pg-main-01", "--to", "dub-hv01", "--bandwidth", "256", "--speed", "10000")
    assert result.returncode == 1
    assert "failed" in result.stdout.splitlines()[-1] and "--auto-converge" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize(("args", "message"), [
    (("migrate", "web-01", "--to", "fra-hv01"), "web-01 is already on fra-hv01"),
    (("rebalance", "web-01", "--vnode", "0"), "give exactly one of --to-cell CELL or --memory SIZE"),
    (("rebalance", "web-01", "--vnode", "0", "--memory", "lots"), "size 'lots' is not a size"),
    (("shutdown", "web-01"), "Shutdown web-01: needs confirmation; pass --yes when there is no terminal"),
    (("start", "web-01"), "cannot start web-01: it is running"),
    (("migrate", "web-01", "--to", "fra-hv02", "--read-only"), "refusing to migrate: the connection is read-only"),
])
def test_refusals_exit_2_with_one_line_and_change_nothing(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1 and result.stdout == ""


def test_destructive_actions_go_ahead_with_yes() -> None:
    result = run("force-off", "web-01", "--yes", "--speed", "1000")
    assert result.returncode == 0 and "succeeded" in result.stdout


def test_replication_verbs() -> None:
    status = run("replication", "status", "--json")
    assert status.returncode == 1  # web-02 is behind its RPO: scripts can alert on it
    doc = json.loads(status.stdout)
    assert {r["vm"] for r in doc["replicas"] if r["rpo_violated"]} == {"web-02"}
    sync = run("replicate", "web-02", "--speed", "1000")
    assert sync.returncode == 0 and sync.stdout.splitlines()[-1].endswith("bytes shipped")
    test = run("failover", "pg-main-01", "--speed", "1000")
    assert test.returncode == 0 and "replication continues untouched" in test.stdout
    planned = run("failover", "pg-main-01", "--planned")
    assert planned.returncode == 2 and "needs confirmation" in planned.stderr
