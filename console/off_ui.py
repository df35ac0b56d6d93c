"""Work that may wait for a host, run off the UI thread.

A ``backend.prepare`` on libvirt reads the domain's XML from its host; a picker that checks
each choice with the backend does that once per choice. With a host answering in seconds,
doing that in a key handler froze every key for as long. ``off_ui`` runs such work in a
thread and hands its result back to the UI thread; an ``HvcError`` becomes a status line
and a bug an error panel, as in any action.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from backends.errors import HvcError
from console.internal_error import report

if TYPE_CHECKING:
    from console.app import HvcApp

T = TypeVar("T")


def off_ui(app: HvcApp, work: Callable[[], T], then: Callable[[T], None], where: str) -> None:
    """Run ``work()`` in a thread, then ``then(result)`` on the UI thread; ``where`` (e.g. "checking
    migrate with the host") is the status line meanwhile and names it in an error panel."""
    app.preparing += 1
    app.show_status(f"{where}…")  # the key answers now; the result follows when the host does

    def done(result: T) -> None:
        app.preparing -= 1
        try:
            then(result)
        except Exception as exc:
            report(app, exc, where)

    def failed(exc: BaseException) -> None:
        app.preparing -= 1
        if isinstance(exc, HvcError):
            app.show_status(exc.one_line(), error=True)
        else:
            report(app, exc, where)

    def run() -> None:
        try:
            result = work()
        except Exception as exc:
            app.call_from_thread(failed, exc)
            return
        app.call_from_thread(done, result)

    app.run_worker(run, thread=True, group="off-ui", exit_on_error=False)
