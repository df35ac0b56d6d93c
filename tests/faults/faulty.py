"""A faulty libvirt: real connections (libvirt's test driver) behind a proxy that raises
``libvirt.libvirtError`` on chosen calls, after N calls, or for every call while a host is
"down", and sleeps on every call of a slow host.

``Faults.install(monkeypatch)`` replaces ``libvirt.open`` and ``libvirt.openReadOnly``, so the
real ``LibvirtBackend``, its host threads and the operations' own job connections all go
through it. Calls are named ``open``, ``getAllDomainStats`` (connection methods) and
``dom.migrate3``, ``dom.attachDeviceFlags`` … (methods of objects the connection returned).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import libvirt
import pytest

_WRAPPED = (libvirt.virDomain, libvirt.virNodeDevice, libvirt.virStoragePool, libvirt.virStorageVol)


@dataclass
class Rule:
    call: str
    message: str
    after: int = 0  # let this many calls through first
    times: int | None = None  # raise this often (None: every call from then on)
    delay_s: float = 0.0  # sleep before raising (a call that fails mid-way)
    seen: int = 0
    raised: int = 0


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down: set[str] = set()
        self.slow: dict[str, float] = {}
        self.slow_calls: list[str] = []  # calls that were slowed down
        self.rules: dict[str, list[Rule]] = {}
        self.raised: Counter[str] = Counter()  # "uri call" → times a fault was raised
        self.opens: dict[str, list[float]] = {}  # uri → monotonic time of every open attempt
        self._real_open = libvirt.open
        self._real_open_ro = libvirt.openReadOnly

    # -- what to inject ----------------------------------------------------------------

    def drop(self, uri: str) -> None:
        """The host's daemon stops: every call, and every new connection, fails."""
        self.down.add(uri)

    def restore(self, uri: str) -> None:
        self.down.discard(uri)

    def make_slow(self, uri: str, seconds: float) -> None:
        self.slow[uri] = seconds

    def fail(self, uri: str, call: str, message: str, *, after: int = 0, times: int | None = None,
             delay_s: float = 0.0) -> Rule:
        rule = Rule(call, message, after, times, delay_s)
        self.rules.setdefault(uri, []).append(rule)
        return rule

    @property
    def total_raised(self) -> int:
        return sum(self.raised.values())

    # -- plumbing ----------------------------------------------------------------------

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Faults:
        monkeypatch.setattr(libvirt, "open", lambda uri=None: self._open(uri, read_only=False))
        monkeypatch.setattr(libvirt, "openReadOnly", lambda uri=None: self._open(uri, read_only=True))
        return self

    def _open(self, uri: str, *, read_only: bool) -> Any:
        self.opens.setdefault(uri, []).append(time.monotonic())
        self.check(uri, "open")
        return Proxy((self._real_open_ro if read_only else self._real_open)(uri), uri, self, "")

    def check(self, uri: str, call: str) -> None:
        """Called before every proxied call: sleep if slow, raise if a fault applies."""
        if delay := self.slow.get(uri):
            self.slow_calls.append(call)
            time.sleep(delay)
        if uri in self.down:
            self._raise(uri, call, f"Cannot recv data: Connection reset by peer (host {uri} is down)")
        with self._lock:
            for rule in self.rules.get(uri, ()):
                if rule.call != call:
                    continue
                rule.seen += 1
                if rule.seen > rule.after and (rule.times is None or rule.raised < rule.times):
                    rule.raised += 1
                    break
            else:
                return
        if rule.delay_s:
            time.sleep(rule.delay_s)
        self._raise(uri, call, rule.message)

    def _raise(self, uri: str, call: str, message: str) -> None:
        with self._lock:
            self.raised[f"{uri} {call}"] += 1
        raise libvirt.libvirtError(message)


def _unwrap(value: Any) -> Any:
    return value._real if isinstance(value, Proxy) else value


class Proxy:
    """Forwards to a real libvirt object; every method call is checked against the faults first."""

    def __init__(self, real: Any, uri: str, faults: Faults, prefix: str) -> None:
        self._real, self._uri, self._faults, self._prefix = real, uri, faults, prefix

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr
        call = f"{self._prefix}{name}"

        def method(*args: Any, **kwargs: Any) -> Any:
            self._faults.check(self._uri, call)
            result = attr(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()})
            return self._wrap(result)

        return method

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, _WRAPPED):
            prefix = {libvirt.virDomain: "dom.", libvirt.virNodeDevice: "nodedev."}.get(type(value), "pool.")
            return Proxy(value, self._uri, self._faults, prefix)
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._wrap(v) for v in value)
        return value
