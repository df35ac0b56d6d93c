"""Run every figure, print the table (with the machine's cores and load), or one JSON document."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from console.bench.figures import SIZES, Row, Size
from console.bench.procs import hvc, run_once

LAB_SKIPPED = "lab down: skipped (run `hvc lab up`)"


def sim_rows(size: Size) -> list[Row]:
    wall, rss = run_once(hvc("inventory", "--json", "--scale", size.scale))
    return [Row(f"hvc inventory --json --scale {size.scale}", wall, "s", ""),
            Row("  its peak RSS", rss / 2**20, "MB", "")]


def _probe(*args: str) -> dict[str, Any]:
    probe = subprocess.run([sys.executable, "-m", "console.bench.probe", *args],
                           capture_output=True, text=True, cwd=Path(__file__).parents[2], check=False)
    if probe.returncode:
        raise RuntimeError(f"console probe failed: {probe.stderr.strip()[-500:]}")
    got: dict[str, Any] = json.loads(probe.stdout.strip().splitlines()[-1])
    return got


def console_rows(size: Size) -> list[Row]:
    starts = sorted(_probe(size.scale, "start")["start_to_frame_s"] for _ in range(size.starts))
    start = statistics.median(starts)
    got = _probe(size.scale, str(size.idle_s), str(size.samples))
    vms = f"{got['vms']:,} VMs"
    return [
        Row(f"console start → first full frame, {vms}, median of {len(starts)}", start, "s", "≤ 1.0 s",
            start <= 1.0, note=f"starts s {' '.join(f'{s:.2f}' for s in starts)}"),
        Row(f"  switch to the VMs view → frame, {vms}", got["vms_view_s"], "s", ""),
        Row(f"key → frame while a migration streams, p50, {vms}", got["key_p50_ms"], "ms", ""),
        Row(f"key → frame while a migration streams, p99 ({got['key_samples']} keys, "
            f"{got['progress_events']} progress events)", got["key_p99_ms"], "ms", "p99 ≤ 50 ms",
            got["key_p99_ms"] <= 50),
        Row(f"console CPU idle, VMs view, default refresh, {size.idle_s:g} s", got["idle_cpu_pct"], "%",
            "≤ 2 % of a core", got["idle_cpu_pct"] <= 2),
        Row(f"console CPU idle, Replication view ({got['replicas']:,} replicas, every lag moving), default "
            f"refresh, {size.idle_s:g} s", got["replication_idle_cpu_pct"], "%", "≤ 2 % of a core",
            got["replication_idle_cpu_pct"] <= 2),
        Row(f"console resident memory, {vms}", got["rss_mb"], "MB", "≤ 300 MB", got["rss_mb"] <= 300),
    ]


def handoff_rows(size: Size) -> list[Row]:
    from backends.handoff import benchmark

    rate, lost = benchmark(size.handoff_requests, burst=1)
    return [Row(f"holding-queue handoff, {size.handoff_requests:,} requests, one arrive() each", rate, "req/s",
                "≥ 200,000 req/s, 0 lost", rate >= 200_000 and lost == 0, note=f"lost {lost}"),
            Row("  lost requests", lost, "", "0", lost == 0)]


def lab_rows(size: Size) -> list[Row]:
    up = lab_up()
    if up and size.lab_rounds:
        from console.bench.lab import lab_rows as measured

        return measured(size.lab_rounds)
    note = LAB_SKIPPED if not up else f"lab up: measured at --size full only (not at --size {size.name})"
    return [Row("lab live migration, hvc vs virsh migrate --live", None, "s", "≤ 1.1 × virsh", note=note),
            Row("lab replication shipping vs cp of the same files", None, "MiB/s", "≥ 50 % of cp", note=note),
            Row("lab replication shipping through libvirt streams only", None, "MiB/s", "—", note=note)]


def lab_up() -> bool:
    try:
        from console.bench.lab import LOCK, held_by_caller

        lock = [] if held_by_caller() else ["flock", "-w", "30", LOCK]
        status = subprocess.run([*lock, *hvc("lab", "status")],
                                capture_output=True, text=True, timeout=60, check=False,
                                cwd=Path(__file__).parents[2])
    except (OSError, subprocess.TimeoutExpired):
        return False
    return status.returncode == 0


def run(size: Size, echo: bool) -> list[Row]:
    from console.bench.libvirt_figs import calls_rows, inventory_rows, scratch

    rows: list[Row] = []
    with scratch() as tmp:
        for group in (lambda: inventory_rows(size, Path(tmp)), lambda: calls_rows(size, Path(tmp)),
                      lambda: sim_rows(size), lambda: console_rows(size), lambda: handoff_rows(size),
                      lambda: lab_rows(size)):
            got = group()
            rows.extend(got)
            if echo:
                click.echo(f"measured: {got[0].figure.strip()}", err=True)
    return rows


def machine() -> dict[str, object]:
    return {"cores": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": sys.version.split()[0]}


def table(rows: list[Row], info: dict[str, object]) -> str:
    head = ["figure", "hvc", "peer (same run)", "ratio", "target", ""]
    cells = [head, *[r.cells() for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = [f"hvc bench — {info['date']}, {info['cores']} cores, load {info['load']} before the run"]
    for n, line in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    met = [r for r in rows if r.met is not None]
    lines.append(f"{sum(1 for r in met if r.met)} of {len(met)} measured targets met")
    return "\n".join(lines)


@click.command("bench")
@click.option("--size", type=click.Choice(sorted(SIZES)), default="full", show_default=True,
              help="full: 10,000 simulated VMs, 2,000 test:/// domains; smoke: a few, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the table.")
def bench(size: str, as_json: bool) -> None:
    """Measure hvc at fleet scale beside its peers (virsh, cp) and print the figures."""
    info = machine()
    rows = run(SIZES[size], echo=not as_json)
    if as_json:
        click.echo(json.dumps({"size": size, **info, "rows": [asdict(r) for r in rows]}, indent=1))
    else:
        click.echo(table(rows, info))


def main() -> None:
    bench(prog_name="python -m console.bench")


COMMANDS = [bench]
