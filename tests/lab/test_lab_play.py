"""The lab scenario: `hvc play lab-migrate` live-migrates a real guest there and back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from backends.libvirt.lab import LabStatus


def test_the_lab_scenario_migrates_a_real_guest_and_passes(lab: LabStatus, tmp_path: Path) -> None:
    args = [a for uri in lab.uris for a in ("-c", uri)]
    result = subprocess.run(
        [sys.executable, "-m", "console", "play", "lab-migrate", *args, "--screenshots", str(tmp_path)],
        capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL,
        env={**os.environ, "HVC_CONFIG": "/none"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "passed:" in result.stdout.splitlines()[-1]
    assert any("precopy" in line for line in result.stdout.splitlines())
    assert (tmp_path / "lab-migrate-jobs.svg").stat().st_size > 1000
