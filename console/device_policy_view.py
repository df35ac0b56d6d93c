"""What the Devices view shows for the selected device's policy: the authority's table and the
decisions the audit log holds for that device (no Textual; the screen renders it)."""

from __future__ import annotations

import time

from backends.base import Backend
from backends.errors import HvcError
from backends.models import PciDevice
from backends.policy import OPS, load_authority
from console import audit

RECENT = 4
_SCAN = 400  # audit entries read from the end of the log


def policy_rows(backend: Backend, device: PciDevice) -> tuple[str, list[tuple[str, str, str, str | None, str]]]:
    """The policy's name and one row per operation; a broken user policy file is the title instead."""
    try:
        authority = load_authority(backend.policy_dir)
    except HvcError as exc:
        return f"policy error: {exc.one_line()}", []
    role = " · SR-IOV PF" if device.vfs else " · SR-IOV VF" if device.is_vf else ""
    rows = [(d.op, d.scope, d.verdict.value, d.run, d.reason) for d in authority.table(device)]
    return f"{device.address} · policy {authority.policy_for(device).name}{role}", rows


def recent_decisions(device: PciDevice, limit: int = RECENT) -> list[tuple[str, str, str]]:
    """The latest device-op entries naming this device on its host, newest first: (time, outcome, text)."""
    out = []
    for entry in reversed(audit.read(_SCAN)):
        if entry.get("kind") != "device-op":
            continue
        text = f"{entry.get('what', '')} {entry.get('reason', '')} {' '.join(entry.get('targets') or [])}"
        if device.address not in text or device.host not in text:
            continue
        when = time.strftime("%H:%M:%S", time.localtime(entry.get("at", 0)))
        outcome = str(entry.get("outcome", ""))
        what = str(entry.get("what", ""))
        if outcome == "refused":
            what = str(entry.get("reason", "")).split(": ", 1)[-1]
        elif outcome != "succeeded":
            what = f"{what} — {outcome}: {entry.get('reason', '')}"
        out.append((when, outcome, what.split(": ", 1)[-1] if outcome == "succeeded" else what))
        if len(out) >= limit:
            break
    return out


def op_choices(backend: Backend, device: PciDevice) -> list[tuple[str, str, str | None]]:
    """Picker choices: every operation with the authority's decision; denied ones disabled with the reason."""
    _, rows = policy_rows(backend, device)
    out: list[tuple[str, str, str | None]] = []
    for op, scope, verdict, runs, reason in rows:
        if verdict == "deny":
            out.append((op, f"{op:<13} {scope:<7} deny", reason))
        elif verdict == "translate":
            out.append((op, f"{op:<13} {scope:<7} runs {runs} instead: {reason}", None))
        else:
            out.append((op, f"{op:<13} {scope:<7} permit: {OPS[op]}", None))
    return out
