"""The lab's reaper: the command's exit status is its own, and an orphan is reaped at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REAPER = [sys.executable, "-m", "backends.libvirt.lab.reaper"]


def test_exit_status_is_the_commands() -> None:
    assert subprocess.run([*REAPER, "sh", "-c", "exit 3"], check=False).returncode == 3
    assert subprocess.run([*REAPER, "true"], check=False).returncode == 0
    missing = subprocess.run([*REAPER, "/nonexistent/daemon"], capture_output=True, text=True, check=False)
    assert missing.returncode == 127 and "cannot run" in missing.stderr


def test_an_orphan_of_the_daemon_is_reaped_at_once(tmp_path: Path) -> None:
    # Like `libvirtd -d` and its QEMU: the command forks a grandchild and returns; the
    # grandchild, orphaned, exits later. Its pid must vanish, not linger as a zombie.
    pidfile = tmp_path / "pid"
    done = subprocess.run([*REAPER, "sh", "-c", f"(sleep 0.3 & echo $! > {pidfile}); exit 0"],
                          capture_output=True, check=False, timeout=10)
    assert done.returncode == 0
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 0.3 + 0.5  # PID 1 on a timer would take 1–2 s more
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{pid}").exists()
