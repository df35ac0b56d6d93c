"""Typed errors with a short title and a message an operator can act on.

``exit_code`` follows the command-line convention: 2 for bad input (nothing changed),
1 for an operation that failed.
"""

from __future__ import annotations


class HvcError(Exception):
    """Base of every error hvc reports to a person."""

    title = "error"
    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __str__(self) -> str:
        return self.one_line()


class BadInput(HvcError):
    """The request itself is wrong; nothing was changed."""

    title = "bad input"
    exit_code = 2


class NotFound(BadInput):
    title = "not found"


class FleetFileError(BadInput):
    title = "bad fleet file"


class Unsupported(BadInput):
    """The backend cannot do this operation at all."""

    title = "unsupported"


class ReadOnly(BadInput):
    title = "read-only"


class Conflict(BadInput):
    """Another running job already touches the same VM or device."""

    title = "conflict"


class OperationFailed(HvcError):
    title = "operation failed"


class HostUnreachable(HvcError):
    title = "host unreachable"
