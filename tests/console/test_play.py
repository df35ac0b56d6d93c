"""`hvc play`: shipped scenarios pass, and broken ones fail with the step, the line and the screen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends.errors import BadInput
from backends.requests import LifecycleAction, LifecycleRequest, MigrateRequest, RebalanceRequest
from console.scenario import find, load, operation, shipped_names

HVC = [sys.executable, "-m", "console"]
FAST = ("--demo", "--speed", "20")


def play(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HVC, "play", *args], capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
                          env={**os.environ, "HVC_CONFIG": "/nonexistent/hvc.toml"})


def scenario(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


def test_the_four_scenarios_ship() -> None:
    assert {"tour", "migrate-with-handoff", "vnuma-rebalance", "replication-failover"} <= set(shipped_names())


SIMULATED = [n for n in shipped_names() if not n.startswith("lab-")]  # lab-* run in tests/lab


@pytest.mark.parametrize("name", SIMULATED)
def test_every_shipped_scenario_passes(name: str, tmp_path: Path) -> None:
    result = play(name, *FAST, "--screenshots", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    steps = len(load(find(name)).steps)
    assert sum(line.startswith("step ") and " ok: " in line for line in result.stdout.splitlines()) == steps
    assert result.stdout.rstrip().splitlines()[-1].startswith(f"passed: {steps}/{steps} steps")
    shots = [s.value for s in load(find(name)).steps if s.action == "screenshot"]
    for shot in shots:
        assert (tmp_path / f"{shot}.svg").read_text().startswith("<svg")


def test_the_tour_shows_every_view_and_prints_job_progress(tmp_path: Path) -> None:
    result = play("tour", *FAST, "--screenshots", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert {p.stem for p in tmp_path.glob("*.svg")} >= {"fleet", "host", "vms", "devices", "replication", "jobs"}
    assert "Replicated&#160;disks" in (tmp_path / "replication.svg").read_text()
    lines = result.stdout.splitlines()
    assert "migrate-1 started: migrate web-01 fra-hv01 → dub-hv01" in lines
    assert any(line.startswith("migrate-1 precopy: ") and "% · " in line for line in lines)


def test_a_failed_assertion_exits_1_naming_the_step_with_the_screen(tmp_path: Path) -> None:
    path = scenario(tmp_path, '[[step]]\nview = "vms"\n\n[[step]]\nname = "look for it"\nassert_text = "no-such-vm"\n')
    result = play(path, *FAST)
    assert result.returncode == 1
    assert 'step 2/2 FAILED: assert_text "no-such-vm" (look for it)' in result.stdout
    assert "'no-such-vm' not on screen" in result.stdout
    screen = result.stdout.split("--- screen at step 2 ---\n")[1].split("--- end of screen ---")[0]
    assert "VMs · sorted by name" in screen and "analytics-01" in screen
    assert result.stderr.startswith(f"hvc: error: {path}: step 2 failed")


def test_a_wait_that_times_out_exits_1(tmp_path: Path) -> None:
    result = play(scenario(tmp_path, '[[step]]\nwait_text = "never shown"\ntimeout = 0.3\n'), *FAST)
    assert result.returncode == 1
    assert "timed out after 0.3s: 'never shown' is not on screen" in result.stdout


def test_a_refused_operation_fails_its_step(tmp_path: Path) -> None:
    result = play(scenario(tmp_path, '[[step]]\nrun = "migrate no-such-vm --to dub-hv01"\n'), *FAST)
    assert result.returncode == 1
    assert "step 1/1 FAILED" in result.stdout and "no job started: " in result.stdout


def test_json_gives_one_object_per_step_and_job_event(tmp_path: Path) -> None:
    text = '[[step]]\nrun = "start cache-01"\n\n[[step]]\nwait_job = true\n\n[[step]]\nassert_text = "nope"\n'
    result = play(scenario(tmp_path, text), *FAST, "--json")
    assert result.returncode == 1
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    events = [d["event"] for d in docs]
    assert events[0] == "scenario" and events[-1] == "end" and "started" in events and "result" in events
    failed = [d for d in docs if d["event"] == "step" and not d["ok"]]
    assert failed and failed[0]["index"] == 3 and "Fleet" in failed[0]["screen"]


def test_malformed_toml_exits_2_naming_the_line(tmp_path: Path) -> None:
    path = scenario(tmp_path, '[[step]]\nview = "vms"\n\n[[step]]\npress = j\n\n[[step]]\npause = 1\n')
    result = play(path, *FAST)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"hvc: error: {path}:5: not valid TOML: Invalid value")
    assert len(result.stderr.strip().splitlines()) == 1
    unclosed = scenario(tmp_path, '[[step]]\npress = ["2"\n')
    with pytest.raises(BadInput, match=r"s\.toml:2: not valid TOML: Unclosed array"):
        load(Path(unclosed))


def test_an_unknown_step_key_exits_2_naming_the_step_and_line(tmp_path: Path) -> None:
    path = scenario(tmp_path, '[[step]]\nview = "vms"\n\n[[step]]\nname = "oops"\npres = ["j"]\n')
    result = play(path, *FAST)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"hvc: error: {path}:6: step 2 'oops': unknown key 'pres'")


@pytest.mark.parametrize(("text", "problem"), [
    ('[[step]]\npress = "j"\nview = "vms"\n', ":3: step 1: a step does exactly one thing; found press, view"),
    ('[[step]]\nview = "racks"\n', ":2: step 1: view 'racks': one of fleet"),
    ('[[step]]\nassert_text = "x"\ntimeout = 3\n', ":3: step 1: timeout applies only to wait_job and wait_text"),
    ('[[step]]\nrun = "migrate web-01"\n', ":2: step 1: 'migrate web-01': Missing option '--to'"),
    ('[[step]]\nrun = "teleport web-01"\n', ":2: step 1: 'teleport' is not an operation"),
    ('[[step]]\nrun = "start web-01 --demo"\n', ":2: step 1: backend options"),
    ('[[step]]\nscreenshot = "../x"\n', ":2: step 1: screenshot takes a file name"),
    ('title = "t"\n', ": no steps"),
    ('steps = []\n', ":1: unknown top-level key 'steps'"),
])
def test_semantic_mistakes_name_the_line_and_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = scenario(tmp_path, text)
    with pytest.raises(BadInput) as exc:
        load(Path(path))
    assert str(exc.value).startswith(path + problem)


def test_an_unknown_scenario_exits_2() -> None:
    result = play("no-such-scenario", *FAST)
    assert result.returncode == 2 and "no scenario 'no-such-scenario'" in result.stderr and "tour" in result.stderr


def test_run_steps_build_the_same_requests_as_the_cli_verbs() -> None:
    assert operation("migrate web-01 --to dub-hv01 --bandwidth 100") == (
        MigrateRequest("web-01", "dub-hv01", 100, False, False), None)
    assert operation("hvc rebalance analytics-01 --vnode 0 --to-cell 0") == (
        RebalanceRequest("analytics-01", 0, 0, None), None)
    request, question = operation("shutdown web-01 --host fra-hv01")
    assert request == LifecycleRequest("web-01", LifecycleAction.SHUTDOWN, "fra-hv01") and question
    with pytest.raises(ValueError, match="exactly one of --to-cell CELL or --memory SIZE"):
        operation("rebalance analytics-01 --vnode 0")
