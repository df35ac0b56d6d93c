"""The S7/S3 verbs as a user runs them: exit codes, one-line refusals, the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.test_cli import run


def test_device_op_balloon_and_policy_from_the_command_line(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    ok = run("device-op", "0000:17:00.0", "bus-reset", "--host", "fra-gpu01", "--demo", "--speed", "0", env=env)
    assert ok.returncode == 0 and "translated to flr" in ok.stdout
    denied = run("device-op", "0000:17:00.0", "rom-write", "--host", "fra-gpu01", "--demo", env=env)
    assert denied.returncode == 2 and denied.stderr.count("\n") == 1 and "rom-write denied" in denied.stderr
    refused = run("balloon", "erp-db-01", "--memory", "100G", "--demo", env=env)
    assert refused.returncode == 2 and "all its memory is pinned" in refused.stderr
    assert run("balloon", "web-01", "--memory", "lots", "--demo", env=env).returncode == 2
    shrunk = run("balloon", "web-01", "--memory", "12G", "--demo", "--speed", "0", "--json", env=env)
    assert shrunk.returncode == 0 and json.loads(shrunk.stdout.splitlines()[-1])["outcome"] == "succeeded"
    table = run("device-policy", "0000:18:00.0", "--host", "fra-hv02", "--demo", "--json", env=env)
    doc = json.loads(table.stdout)
    assert doc["policy"] == "network" and {d["verdict"] for d in doc["decisions"]} == {"deny"}  # a PF
    entries = [json.loads(line) for line in run("audit", "--json", env=env).stdout.splitlines()]
    assert [(e["kind"], e["outcome"]) for e in entries] == [
        ("device-op", "succeeded"), ("device-op", "refused"), ("balloon", "refused"), ("balloon", "succeeded")]


def test_a_bad_user_policy_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "gpu.toml").write_text('name = "gpu"\n[ops.flr]\nscope = "everywhere"\n')
    config = tmp_path / "config.toml"
    config.write_text(f'policy_dir = "{tmp_path / "p"}"\n')
    result = run("device-policy", "0000:17:00.0", "--host", "fra-gpu01", "--demo",
                 env={"HVC_CONFIG": str(config), "XDG_STATE_HOME": str(tmp_path)})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "gpu.toml" in result.stderr and "scope must be 'local' or 'system'" in result.stderr
