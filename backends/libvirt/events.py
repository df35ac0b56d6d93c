"""libvirt's event loop, run in one daemon thread for the whole process.

It must be registered before any connection is opened: without it, domain events never
arrive and keepalive cannot run, so remote connections drop silently.
"""

from __future__ import annotations

import threading

import libvirt

_lock = threading.Lock()
_started = False


def ensure_event_loop() -> None:
    """Register the default event implementation once and drive it from a daemon thread."""
    global _started
    with _lock:
        if _started:
            return
        # libvirt prints every error to stderr unless a handler is set; we report them ourselves.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run, name="libvirt-events", daemon=True)
        thread.start()
        _started = True


def _run() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()
