"""The command line as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HVC = [sys.executable, "-m", "console"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HVC, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, "HVC_CONFIG": "/nonexistent/hvc.toml", **(env or {})})


def test_inventory_json_has_the_documented_keys() -> None:
    result = run("inventory", "--demo", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["hosts"]) >= 6 and len({h["site"] for h in doc["hosts"]}) == 2
    assert len(doc["vms"]) >= 24
    cell = doc["hosts"][0]["numa"][0]
    assert {"id", "cpus", "memory_kib", "free_kib", "distances"} <= set(cell)
    assert cell["distances"] == {"0": 10, "1": 21}
    vm = doc["vms"][0]
    assert {"name", "host", "state", "vcpus", "memory_kib", "vnuma"} <= set(vm)
    assert any(d["physfn"] for d in doc["devices"]) and all("owner" in d for d in doc["devices"])
    assert any(len(c["layers"]) >= 3 for c in doc["chains"]) and all("vm" in c for c in doc["chains"])


def test_options_work_before_and_after_the_command() -> None:
    before, after = run("--scale", "3x4", "inventory", "--json"), run("inventory", "--json", "--scale", "3x4")
    assert before.returncode == after.returncode == 0
    assert len(json.loads(before.stdout)["vms"]) == len(json.loads(after.stdout)["vms"]) == 12


def test_inventory_tables_name_every_section() -> None:
    result = run("inventory", "--demo")
    assert result.returncode == 0
    for title in ("Hosts", "NUMA cells", "VMs", "PCI devices", "Disk chains", "Replication"):
        assert title in result.stdout
    assert "pg-main-01" in result.stdout and "0000:18:01.0" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("inventory", "--bogus"), "No such option '--bogus'"),
    (("frobnicate",), "No such command 'frobnicate'"),
    (("inventory", "--fleet", "/no/such/fleet.toml"), "fleet file /no/such/fleet.toml does not exist"),
    (("inventory", "--scale", "lots"), "--scale 'lots' is not HOSTSxVMS"),
    (("inventory", "--demo", "--scale", "2x2"), "--demo and --scale both pick a simulated fleet"),
    (("inventory", "--demo", "-c", "test:///default"), "-c/--connect and --demo pick different backends"),
])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_fleet_file_names_the_entry(tmp_path: Path) -> None:
    fleet = tmp_path / "f.toml"
    fleet.write_text('[[sites]]\nname = "a"\n[[hosts]]\nname = "h"\nsite = "b"\ncells = []\n')
    result = run("inventory", "--fleet", str(fleet))
    assert result.returncode == 2
    assert f"{fleet}: hosts[0] 'h': site 'b' is not one of the [[sites]] (a)" in result.stderr


def test_help_and_version() -> None:
    assert run("--version").stdout.strip() == "hvc, version 0.1.0"
    for cmd in ((), ("inventory",), ("demo",), ("lab",), ("lab", "up")):
        result = run(*cmd, "--help")
        assert result.returncode == 0 and "Usage: hvc" in result.stdout


def test_demo_without_a_terminal_prints_the_inventory() -> None:
    result = run("demo")
    assert result.returncode == 0
    assert "no terminal attached" in result.stderr and "fra-hv01" in result.stdout


def _loaded_after(args: list[str], keep: str) -> str:
    """The modules loaded, of those the expression ``keep`` (over ``m``) keeps, after ``hvc ARGS``
    in an interpreter of its own."""
    code = (
        "import sys, io, contextlib\n"
        "from console.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({args!r})\n"
        f"print(sorted(m for m in sys.modules if {keep}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_command_line_paths_do_not_import_textual() -> None:
    assert _loaded_after(["inventory", "--demo", "--json"], "m.split('.')[0] in ('textual', 'widgets')") == "[]"


def test_the_command_table_names_each_command_where_it_lives() -> None:
    import importlib

    from console.cli import ELSEWHERE

    found = {c.name: m for m in set(ELSEWHERE.values()) for c in importlib.import_module(m).COMMANDS}
    assert found == ELSEWHERE
    listed = run("--help").stdout
    assert all(f"  {name} " in listed for name in ELSEWHERE)


def test_a_command_imports_its_own_module_only() -> None:
    others = "('bench', 'cli_devices', 'cli_devices_policy', 'cli_services', 'cli_ops')"
    assert _loaded_after(["migrate", "--help"], f"m.startswith('console.') and m.split('.')[1] in {others}") == (
        "['console.cli_ops']")


def test_named_hosts_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[hosts]\nlocal-test = "test:///default"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text("hosts = 3\n")
    result = run("inventory", "--json", "-c", "local-test", env={"HVC_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hosts"][0]["uri"] == "test:///default"
    result = run("inventory", "--json", "-c", "x", env={"HVC_CONFIG": str(bad)})
    assert result.returncode == 2 and "[hosts] must map names to URI strings" in result.stderr
