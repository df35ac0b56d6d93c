"""Credentials in URIs or the config never reach the screen, the log, the audit log, --json
output or screenshots; an internal error on the command line is one line and exit 1, with
the traceback only in the log; the config's read_only default works."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

import console.cli
from console import audit
from console.cli import main
from console.log import log_path, state_dir
from tests.faults.figures import Figures
from tests.unit.test_cli import run

SECRET = "s3cretPW"
URI = f"qemu+tcp://admin:{SECRET}@127.0.0.1:1/system"  # nothing listens there: the host is lost at once


def everything_written(state: Path, *texts: str) -> str:
    """Every output given plus every file hvc wrote into its state directory."""
    files = [p.read_text(errors="replace") for p in state.rglob("*") if p.is_file()]
    return "\n".join([*texts, *files])


def test_a_password_in_a_uri_is_never_shown_logged_or_audited(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    outputs = []
    for args in (("inventory", "--json", "-c", URI), ("inventory", "-c", URI),
                 ("replication", "status", "--json", "-c", URI),
                 ("migrate", "test", "--to", URI, "-c", "test:///default", "-c", URI),
                 ("start", "test", "-c", URI)):
        result = run(*args, env=env)
        assert result.returncode in (0, 1, 2) and "Traceback" not in result.stderr, result.stderr
        if args[0] in ("inventory", "replication"):  # a lost host: named on stderr, exit 1
            assert result.returncode == 1 and "is lost" in result.stderr, result.stderr
        outputs += [result.stdout, result.stderr]
    text = everything_written(tmp_path, *outputs)
    assert SECRET not in text
    assert "admin:***@127.0.0.1" in text  # the URI is still shown, without its password
    assert any(e["outcome"] == "refused" for e in audit_entries(tmp_path))


def audit_entries(state: Path) -> list[dict[str, object]]:
    path = state / "hvc" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_password_in_the_config_file_is_never_shown(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[hosts]\nlab = "{URI}"\n')
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "HVC_CONFIG": str(config)}
    result = run("inventory", "--json", "-c", "lab", env=env)
    assert result.returncode == 1 and "host admin:***@127.0.0.1" not in result.stdout
    doc = json.loads(result.stdout)
    assert doc["hosts"][0]["uri"] == "qemu+tcp://admin:***@127.0.0.1:1/system"
    assert SECRET not in everything_written(tmp_path / "state", result.stdout, result.stderr)


def test_a_password_never_reaches_a_screenshot(tmp_path: Path) -> None:
    scenario = tmp_path / "look.toml"
    scenario.write_text('[[step]]\nview = "fleet"\n[[step]]\nscreenshot = "fleet"\n'
                        '[[step]]\npress = ["r"]\n[[step]]\nscreenshot = "after-refresh"\n')
    shots = tmp_path / "shots"
    result = run("play", str(scenario), "--screenshots", str(shots), "-c", "test:///default", "-c", URI,
                 env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert result.returncode == 0, result.stderr
    svgs = [p.read_text() for p in shots.glob("*.svg")]
    assert len(svgs) == 2
    assert SECRET not in everything_written(tmp_path / "state", result.stdout, result.stderr, *svgs)
    assert any("admin:***@127.0.0.1" in svg.replace("&#160;", " ") for svg in svgs)


def test_an_internal_error_on_the_command_line_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch,
                                                                      figures: Figures) -> None:
    def broken(_backend: object, _as_json: bool) -> None:
        raise RuntimeError(f"injected bug while printing {URI}")

    monkeypatch.setattr(console.cli, "_print_inventory", broken)
    out, err = io.StringIO(), io.StringIO()
    with figures.fault("an unexpected exception in a CLI command"):
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exited:
            main(["inventory", "--demo"])
        assert exited.value.code == 1
        line = err.getvalue()
        assert line.count("\n") == 1 and "Traceback" not in line
        assert line.startswith("hvc: error: internal error: injected bug while printing qemu+tcp://admin:***@")
        assert line.rstrip().endswith(f"(traceback in {log_path()})")
        logged = log_path().read_text()
        assert "Traceback" in logged and "RuntimeError: injected bug" in logged and SECRET not in logged


def test_the_config_read_only_default_refuses_changes(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("read_only = true\n")
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "HVC_CONFIG": str(config)}
    result = run("migrate", "web-01", "--to", "fra-hv02", "--speed", "0", env=env)
    assert result.returncode == 2 and "read-only" in result.stderr
    assert run("inventory", "--demo", "--json", env=env).returncode == 0  # reading still works
    entries = audit_entries(tmp_path / "state")
    assert [e["outcome"] for e in entries] == ["refused"]


def test_the_config_read_only_default_opens_read_only_libvirt_connections(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, bool]] = []
    import libvirt

    real_open, real_ro = libvirt.open, libvirt.openReadOnly
    monkeypatch.setattr(libvirt, "open", lambda uri: opened.append((uri, False)) or real_open(uri))
    monkeypatch.setattr(libvirt, "openReadOnly", lambda uri: opened.append((uri, True)) or real_ro(uri))
    config = tmp_path / "config.toml"
    config.write_text("read_only = true\n")
    monkeypatch.setenv("HVC_CONFIG", str(config))
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        main(["inventory", "--json", "-c", "test:///default"])
    assert opened and all(read_only for _, read_only in opened), opened
    assert json.loads(out.getvalue())["hosts"][0]["state"] == "connected"


def test_state_dir_follows_xdg_state_home() -> None:
    assert str(state_dir()).startswith(os.environ["XDG_STATE_HOME"])
    assert audit.audit_path().parent == state_dir()
