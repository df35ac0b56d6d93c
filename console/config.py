"""The user's config file: named hosts and defaults (no Textual, read on every command)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.errors import BadInput


class ConfigError(BadInput):
    title = "bad config"


@dataclass(frozen=True)
class Config:
    hosts: dict[str, str] = field(default_factory=dict)  # name → libvirt URI
    read_only: bool = False
    keys: dict[str, str] = field(default_factory=dict)  # action id → key(s), for the console
    path: Path | None = None
    policy_dir: Path | None = None  # S7: device policies replacing the shipped ones by name

    def resolve(self, connect: tuple[str, ...]) -> tuple[str, ...]:
        """Named hosts from the config become their URIs; URIs pass through."""
        return tuple(self.hosts.get(c, c) for c in connect)


def config_path() -> Path:
    if env := os.environ.get("HVC_CONFIG"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hvc" / "config.toml"


def load_config(path: Path | None = None) -> Config:
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()  # the common case: no TOML parser imported for it
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path}: not a text file (byte {exc.start} is not UTF-8)",
                          hint="the config is a UTF-8 TOML file") from None
    import tomllib

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML: {exc}") from None
    return _parse(doc, path)


def _parse(doc: dict[str, Any], path: Path) -> Config:
    unknown = sorted(set(doc) - {"hosts", "read_only", "keys", "policy_dir"})
    if unknown:
        raise ConfigError(f"config {path}: unknown key {unknown[0]!r}",
                          hint="known: hosts, read_only, keys, policy_dir")
    hosts = doc.get("hosts", {})
    if not isinstance(hosts, dict) or not all(isinstance(v, str) for v in hosts.values()):
        raise ConfigError(f"config {path}: [hosts] must map names to URI strings",
                          hint='e.g. [hosts] lab-a = "qemu:///system"')
    keys = doc.get("keys", {})
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ConfigError(f"config {path}: [keys] must map action ids to key names",
                          hint='e.g. [keys] migrate = "M"')
    read_only = doc.get("read_only", False)
    if not isinstance(read_only, bool):
        raise ConfigError(f"config {path}: read_only must be true or false")
    policy_dir = doc.get("policy_dir")
    if policy_dir is not None and not isinstance(policy_dir, str):
        raise ConfigError(f"config {path}: policy_dir must be a directory path",
                          hint='e.g. policy_dir = "~/hvc-policies"')
    return Config(hosts=dict(hosts), read_only=read_only, keys=dict(keys), path=path,
                  policy_dir=Path(policy_dir).expanduser() if policy_dir else None)
