"""`hvc replication status` names a lost host (one line, password redacted) and exits 1,
as `hvc inventory` does; through the faulty-libvirt proxy, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from console.cli import cli
from tests.faults.faulty import Faults

SECRET = "hunter2-s3cret"
DOWN = f"qemu+tcp://admin:{SECRET}@10.0.0.9/system"  # the proxy refuses it: its daemon is down


@pytest.mark.parametrize("command", [["replication", "status"], ["replication", "status", "--json"],
                                     ["inventory", "--json"]])
def test_a_lost_host_is_named_on_one_line_and_the_command_exits_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faults: Faults, command: list[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("HVC_CONFIG", str(tmp_path / "none.toml"))
    faults.drop(DOWN)
    result = CliRunner().invoke(cli, [*command, "-c", "test:///default", "-c", DOWN])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    shown = DOWN.replace(SECRET, "***")
    assert result.stderr.splitlines() == [f"hvc: host {shown} is lost: "
                                          f"Cannot recv data: Connection reset by peer (host {shown} is down)"]
    assert SECRET not in result.stdout + result.stderr
    if command[-1] == "--json":
        json.loads(result.stdout)  # still one document on stdout
    assert faults.raised[f"{DOWN} open"] >= 1
