"""An unexpected exception inside the console: one error panel, the traceback in the log,
and the app keeps running.

Textual exits the app on an exception that escapes an action, a worker or a message handler.
``App._handle_exception`` is private, so instead the console catches at its own dispatch
points (see ``HvcApp.run_action``, ``poll``, ``_updated`` and ``_job_finished``) and calls
``report`` here: the operator sees what broke and where the details are, nothing else stops.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from backends.uri import redact
from console.log import log_exception

if TYPE_CHECKING:
    from textual.app import App


def describe(exc: BaseException, where: str) -> str:
    """The one line shown for ``exc``: what failed and where the traceback went (logs it)."""
    path = log_exception(exc)
    return redact(f"internal error in {where}: {type(exc).__name__}: {exc} (traceback in {path}); "
                  "hvc keeps running")


def report(app: App[object], exc: BaseException, where: str) -> None:
    """Show an error panel for ``exc`` (an error notification that stays until dismissed for a while)."""
    text = describe(exc, where)
    app.notify(text, title="internal error", severity="error", timeout=30, markup=False)
    set_status = getattr(app.screen, "set_status", None)
    if callable(set_status):
        with contextlib.suppress(Exception):  # the screen may be half-built; the notification is enough
            set_status(text, True)
