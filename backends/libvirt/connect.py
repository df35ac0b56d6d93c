"""Opening libvirt connections, and opening them ahead of the backend that will use them.

Opening is the slow part of a first load (the test driver parses the whole host definition
then: 1.8 s at 2,000 domains), and libvirt does it in C without holding the GIL. Started as
soon as the URIs are known, it runs beside the import of the backend and the model (0.1 s of
a command's start) instead of after it. Only this module and ``events`` are imported first.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import libvirt

from backends.errors import BadInput
from backends.libvirt.events import ensure_event_loop
from backends.uri import redact


def check_uri(uri: str) -> str:
    """Refuse what cannot be a libvirt URI before trying to connect to it."""
    scheme, sep, _ = uri.partition(":")
    if not sep or not scheme or not scheme.replace("+", "").replace("-", "").isalnum() or not _.startswith("//"):
        raise BadInput(
            f"{redact(uri)!r} is not a libvirt URI or a host name from the config file",
            hint="write it like qemu:///system, qemu+ssh://root@host/system or test:///default",
        )
    return uri


class Opening(threading.Thread):
    """One connection being opened in the background; ``take`` waits for it."""

    def __init__(self, uri: str, read_only: bool) -> None:
        super().__init__(name=f"open {redact(uri)}", daemon=True)
        self.uri, self.read_only = uri, read_only
        self._conn: Any = None
        self._error: libvirt.libvirtError | None = None

    def run(self) -> None:
        try:
            self._conn = open_connection(self.uri, self.read_only)
        except libvirt.libvirtError as exc:
            self._error = exc

    def take(self) -> Any:
        """The open connection, or the libvirtError opening it raised."""
        self.join()
        if self._error is not None:
            raise self._error
        return self._conn

    def discard(self) -> threading.Thread:
        """Close the connection once it is open, in a thread (returned) rather than waiting here."""
        closing = threading.Thread(target=self._close, name=f"close {self.name}", daemon=True)
        closing.start()
        return closing

    def _close(self) -> None:
        self.join()
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()


# Openings started from the command line before it was parsed (``console.start``), by URI; the
# first ``open_ahead`` takes over those it can use and closes the others.
_early: dict[str, Opening] = {}


def open_early(uris: list[str], read_only: bool) -> None:
    """Start opening the hosts a command line names, before the command itself is known."""
    _early.update(_start(uris, read_only))


def open_ahead(uris: tuple[str, ...] | list[str], read_only: bool) -> dict[str, Opening]:
    """Start opening each valid URI in the background, for ``LibvirtBackend(opened=…)``; an
    invalid one is left for the backend to refuse. An early opening of the same URI and
    read-only setting is used instead of a new one."""
    early = {uri: o for uri, o in _early.items() if o.read_only == read_only and uri in uris}
    for uri, opening in _early.items():
        if uri not in early:
            opening.discard()
    _early.clear()
    return early | _start([u for u in uris if u not in early], read_only)


def _start(uris: tuple[str, ...] | list[str], read_only: bool) -> dict[str, Opening]:
    openings: dict[str, Opening] = {}
    for uri in uris:
        try:
            check_uri(uri)
        except BadInput:
            continue
        if uri not in openings:
            ensure_event_loop()  # before any connection opens
            openings[uri] = opening = Opening(uri, read_only)
            opening.start()
    return openings


def open_connection(uri: str, read_only: bool) -> Any:
    return libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
