"""The audit log: one JSON line per operation, flushed and fsynced as it is written.

Who (user and the host hvc runs on), what, its targets, the outcome, the reason and how long
it took, in the user's state directory; refusals are recorded too, since a refused
destructive action is exactly what someone will ask about later.
"""

from __future__ import annotations

import getpass
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from backends.models import Job, JobResult
from backends.uri import redact
from console.log import state_dir

_lock = threading.Lock()


def audit_path() -> Path:
    return state_dir() / "audit.jsonl"


def _append(entry: dict[str, Any]) -> None:
    path = audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry, sort_keys=True) + "\n"
    with _lock, open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "from": os.uname().nodename}


def record_job(job: Job, result: JobResult, backend: str) -> None:
    _append({
        "at": time.time(), **_who(), "backend": backend, "job": job.id, "kind": job.kind.value,
        "what": redact(job.description), "targets": [redact(t) for t in job.targets],
        "outcome": result.outcome.value, "reason": redact(result.reason), "duration_s": round(result.duration_s, 3),
    })


def record_refusal(kind: str, what: str, reason: str, backend: str) -> None:
    _append({
        "at": time.time(), **_who(), "backend": backend, "job": None, "kind": kind, "what": redact(what),
        "targets": [], "outcome": "refused", "reason": redact(reason), "duration_s": 0.0,
    })


def read(last: int | None = None) -> list[dict[str, Any]]:
    """The entries, oldest first; a torn last line (a crash mid-write) is skipped, not fatal."""
    try:
        lines = audit_path().read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines[-last:] if last else lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
