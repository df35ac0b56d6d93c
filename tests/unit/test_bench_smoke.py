"""`hvc bench --size smoke` runs from a checkout and prints every row (the figures are not asserted)."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from console.cli import cli

ROWS = (
    "hvc inventory --json, test:///",
    "libvirt remote calls / refresh / host",
    "hvc inventory --json --scale",
    "console start → first full frame",
    "key → frame while a migration streams, p99",
    "console CPU idle",
    "console resident memory",
    "holding-queue handoff",
    "lab live migration, hvc vs virsh migrate --live",
    "lab replication shipping vs cp",
)


def test_the_smoke_size_prints_every_row_with_its_peer() -> None:
    result = CliRunner().invoke(cli, ["bench", "--size", "smoke", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["cores"] and doc["size"] == "smoke"
    figures = [row["figure"] for row in doc["rows"]]
    for wanted in ROWS:
        assert any(f.startswith(wanted) for f in figures), wanted
    rows = {row["figure"]: row for row in doc["rows"]}
    inventory = next(r for f, r in rows.items() if f.startswith("hvc inventory --json, test:///"))
    if shutil.which("virsh"):
        assert inventory["peer"] == "virsh list --all" and inventory["ratio"] is not None
    calls = next(r for f, r in rows.items() if f.startswith("libvirt remote calls"))
    assert calls["peer"].endswith("domains") and calls["value"] >= 1
    lab = [r for f, r in rows.items() if f.startswith("lab ")]
    assert all(r["value"] is not None or r["note"] for r in lab)  # measured, or it says why not
