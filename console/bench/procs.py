"""Timing other processes: wall time and peak RSS of one child, the median of a few runs."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def hvc(*args: str) -> list[str]:
    """This checkout's ``hvc``, as the user runs it (the same interpreter, a fresh process)."""
    return [sys.executable, "-c", "from console.start import main; main()", *args]


def run_once(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one run; output discarded; a failure raises with its stderr."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=Path(__file__).parents[2])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[-4:])} exited {proc.returncode}: {err.strip()[-300:]}")
    return wall, usage.ru_maxrss * 1024


def median_run(argv: list[str], repeats: int) -> tuple[float, int]:
    runs = [run_once(argv) for _ in range(repeats)]
    return statistics.median(w for w, _ in runs), max(r for _, r in runs)


def interleaved(a: list[str], b: list[str], repeats: int) -> tuple[tuple[float, int], tuple[float, int]]:
    """Median wall of ``a`` and of ``b``, run alternately so load changes hit both alike."""
    ra, rb = [], []
    for _ in range(repeats):
        ra.append(run_once(a))
        rb.append(run_once(b))
    return ((statistics.median(w for w, _ in ra), max(r for _, r in ra)),
            (statistics.median(w for w, _ in rb), max(r for _, r in rb)))
