"""S7: the device policy authority.

A policy file per device class lists operations with their scope: ``local`` (only the device
itself is affected) or ``system`` (other devices, VMs or the host are). The authority permits
local operations, denies system-wide ones, or translates them into a local equivalent when the
policy names one (bus reset → function-level reset). SR-IOV physical and virtual functions get
their own overrides: resetting a physical function takes every one of its VFs down with it.

Pure: no libvirt, no I/O beyond reading policy files.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from backends.errors import BadInput
from backends.models import PciDevice

# Every operation the authority knows, with what it does (for help text and pickers).
OPS: dict[str, str] = {
    "flr": "function-level reset of this function only",
    "bus-reset": "secondary bus reset of the bridge above the device",
    "power-state": "move the device to D3hot and back",
    "config-write": "write the device's PCI configuration space",
    "rom-write": "rewrite the device's option ROM",
    "link-disable": "disable the PCIe link to the device",
}
SCOPES = ("local", "system")
_TOP = {"name", "description", "classes", "ops", "pf", "vf"}
_OP_KEYS = {"scope", "translate", "reason"}


class Verdict(StrEnum):
    PERMIT = "permit"
    DENY = "deny"
    TRANSLATE = "translate"


class PolicyError(BadInput):
    title = "bad device policy"


@dataclass(frozen=True, slots=True)
class Rule:
    scope: str  # local or system
    translate: str | None = None  # the local operation run instead of a system-wide one
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    """One device class's rules; ``pf``/``vf`` override ``ops`` for SR-IOV functions."""

    name: str
    classes: tuple[str, ...]  # class-code prefixes ("0x02", "0x0c03") or class names
    ops: dict[str, Rule]
    pf: dict[str, Rule] = field(default_factory=dict)
    vf: dict[str, Rule] = field(default_factory=dict)
    description: str = ""
    source: str = ""

    def rule(self, device: PciDevice, op: str) -> Rule | None:
        role = self.vf if device.is_vf else self.pf if device.vfs else {}
        return role.get(op) or self.ops.get(op)


@dataclass(frozen=True, slots=True)
class Decision:
    device: str
    host: str
    op: str  # what was asked
    verdict: Verdict
    run: str | None  # what actually runs (None: nothing)
    scope: str  # the asked operation's scope
    reason: str
    policy: str

    def summary(self) -> str:
        """One line for the audit log and the device view."""
        if self.verdict is Verdict.PERMIT:
            return f"{self.op} permitted ({self.scope}, policy {self.policy})"
        if self.verdict is Verdict.TRANSLATE:
            return f"{self.op} translated to {self.run} ({self.scope}: {self.reason}; policy {self.policy})"
        return f"{self.op} denied ({self.scope}: {self.reason}; policy {self.policy})"


def parse_policy(text: str, source: str = "policy") -> Policy:
    """A policy from TOML text; anything wrong is one PolicyError line naming the file and key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise PolicyError(f"{source}: unknown key {unknown[0]!r}", hint=f"known keys: {', '.join(sorted(_TOP))}")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PolicyError(f"{source}: 'name' must be a non-empty string")
    classes = doc.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) and c.strip() for c in classes):
        raise PolicyError(f"{source}: 'classes' must be a list of class codes or names", hint='e.g. ["0x02"]')
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise PolicyError(f"{source}: 'description' must be a string")
    ops = _rules(doc.get("ops", {}), f"{source}: ops")
    if not ops:
        raise PolicyError(f"{source}: no [ops]", hint="give each operation a scope, e.g. [ops.flr] scope = \"local\"")
    pf = _rules(doc.get("pf", {}), f"{source}: pf")
    vf = _rules(doc.get("vf", {}), f"{source}: vf")
    return Policy(name.strip(), tuple(c.strip().lower() for c in classes), ops, pf, vf, description, source)


def _rules(raw: Any, where: str) -> dict[str, Rule]:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be a table of operations")
    out: dict[str, Rule] = {}
    for op, table in raw.items():
        if op not in OPS:
            raise PolicyError(f"{where}: unknown operation {op!r}", hint=f"known: {', '.join(OPS)}")
        if not isinstance(table, dict):
            raise PolicyError(f"{where}.{op} must be a table like {{ scope = \"local\" }}")
        unknown = sorted(set(table) - _OP_KEYS)
        if unknown:
            raise PolicyError(f"{where}.{op}: unknown key {unknown[0]!r}", hint="known: reason, scope, translate")
        scope, translate, reason = table.get("scope"), table.get("translate"), table.get("reason", "")
        if scope not in SCOPES:
            raise PolicyError(f"{where}.{op}: scope must be 'local' or 'system', not {scope!r}")
        if translate is not None and (not isinstance(translate, str) or translate not in OPS or translate == op):
            raise PolicyError(f"{where}.{op}: translate must name another operation ({', '.join(OPS)})")
        if translate is not None and scope == "local":
            raise PolicyError(f"{where}.{op}: only a system-wide operation is translated")
        if not isinstance(reason, str):
            raise PolicyError(f"{where}.{op}: reason must be a string")
        out[op] = Rule(scope, translate, reason)
    return out


class Authority:
    """Decides device operations from the policies; the first policy matching a device's class wins."""

    def __init__(self, policies: list[Policy]) -> None:
        defaults = [p for p in policies if not p.classes]
        if not defaults:
            raise PolicyError("no default policy (one with no classes)", hint="keep default.toml")
        # The most specific class match wins: a longer class code or a name beats a prefix.
        self.policies = sorted((p for p in policies if p.classes), key=lambda p: -max(map(len, p.classes)))
        self.default = defaults[-1]

    def policy_for(self, device: PciDevice) -> Policy:
        cls = (device.device_class or "").strip().lower()
        best: tuple[int, Policy] | None = None
        for policy in self.policies:
            for pattern in policy.classes:
                hit = cls.startswith(pattern) if pattern.startswith("0x") else cls == pattern
                if hit and (best is None or len(pattern) > best[0]):
                    best = (len(pattern), policy)
        return best[1] if best else self.default

    def decide(self, device: PciDevice, op: str) -> Decision:
        policy = self.policy_for(device)

        def decision(verdict: Verdict, run: str | None, scope: str, reason: str) -> Decision:
            return Decision(device.address, device.host, op, verdict, run, scope, reason, policy.name)

        if op not in OPS:
            return decision(Verdict.DENY, None, "unknown", f"{op!r} is not an operation the authority knows")
        rule = policy.rule(device, op)
        if rule is None:
            return decision(Verdict.DENY, None, "unknown", f"the {policy.name} policy does not list {op}")
        if rule.scope == "local":
            return decision(Verdict.PERMIT, op, "local", rule.reason or OPS[op])
        if rule.translate:
            target = policy.rule(device, rule.translate)
            if target is not None and target.scope == "local":
                return decision(Verdict.TRANSLATE, rule.translate, "system", rule.reason or "system-wide")
        return decision(Verdict.DENY, None, "system", rule.reason or "it affects more than this device")

    def table(self, device: PciDevice) -> list[Decision]:
        """The decision for every known operation on ``device`` (the device view's policy table)."""
        return [self.decide(device, op) for op in OPS]


def shipped_policies() -> list[Policy]:
    folder = resources.files("backends.policy").joinpath("policies")
    return [parse_policy(f.read_text(encoding="utf-8"), f"policies/{f.name}")
            for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".toml")]


def load_authority(policy_dir: Path | None = None) -> Authority:
    """The shipped policies, each replaced by a user policy of the same name from ``policy_dir``."""
    by_name = {p.name: p for p in shipped_policies()}
    if policy_dir is not None:
        if not policy_dir.is_dir():
            raise PolicyError(f"policy directory {policy_dir} does not exist", hint="fix policy_dir in the config")
        for path in sorted(policy_dir.glob("*.toml")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise PolicyError(f"cannot read policy {path}: {exc}") from None
            policy = parse_policy(text, str(path))
            by_name[policy.name] = policy
    return Authority(list(by_name.values()))
