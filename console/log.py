"""hvc's own log file, in the user's state directory; tracebacks go here, not to the screen."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """Where hvc keeps its log and audit trail ($XDG_STATE_HOME/hvc)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hvc"


def log_path() -> Path:
    return state_dir() / "hvc.log"


def log_exception(exc: BaseException) -> Path:
    """Append ``exc`` with its traceback to the log and return where it went."""
    import logging  # here: every operation's audit needs the state directory, few need the log

    from backends.uri import redact

    class Redacting(logging.Formatter):
        """No password from a URI reaches the log, not even inside a traceback's message."""

        def format(self, record: logging.LogRecord) -> str:
            return redact(super().format(record))

    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("hvc")
    for stale in [h for h in logger.handlers if getattr(h, "baseFilename", None) != str(path.absolute())]:
        logger.removeHandler(stale)  # the state directory changed (tests, or XDG_STATE_HOME set later)
        stale.close()
    if not logger.handlers:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(Redacting("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.error("unexpected error", exc_info=exc)
    return path
