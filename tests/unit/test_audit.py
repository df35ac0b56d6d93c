"""The audit trail: every operation, run or refused, from the CLI and the console."""

from __future__ import annotations

import json
from pathlib import Path

from console import audit
from tests.console.conftest import demo_app
from tests.unit.test_cli import run


def test_cli_operations_and_refusals_are_recorded(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    assert run("migrate", "web-01", "--to", "fra-hv02", "--speed", "0", env=env).returncode == 0
    assert run("migrate", "web-01", "--to", "fra-hv01", env=env).returncode == 2
    assert run("shutdown", "web-01", env=env).returncode == 2  # no --yes without a terminal
    shown = run("audit", "--json", env=env)
    entries = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [e["outcome"] for e in entries] == ["succeeded", "refused", "refused"]
    first = entries[0]
    assert first["kind"] == "migrate" and first["what"] == "migrate web-01 fra-hv01 → fra-hv02"
    assert {"web-01", "fra-hv01", "fra-hv02"} <= set(first["targets"]) and first["user"] and first["from"]
    assert "already on fra-hv01" in entries[1]["reason"] and "needs confirmation" in entries[2]["reason"]
    table = run("audit", env=env)
    assert table.returncode == 0 and "migrate web-01" in table.stdout


async def test_console_operations_are_recorded() -> None:
    app = demo_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "slash", *"cache-01", "enter", "S")
        (record,) = app.jobs.all()
        assert record.done.wait(10)
        await pilot.press("S")  # starting it again is refused
    entries = audit.read()
    assert [(e["kind"], e["outcome"]) for e in entries] == [("lifecycle", "succeeded"), ("lifecycle", "refused")]


def test_a_torn_last_line_is_skipped() -> None:
    audit.record_refusal("migrate", "x", "because", "sim")
    with open(audit.audit_path(), "a") as f:
        f.write('{"at": 1, "outcome": "succ')
    assert [e["outcome"] for e in audit.read()] == ["refused"]
