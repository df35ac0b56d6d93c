"""Messages the console's workers post to the app (thread-safe via post_message)."""

from __future__ import annotations

from textual.message import Message

from backends.models import Job, JobResult
from console.analyst import Analysed


class InventoryUpdated(Message):
    """A fresh snapshot arrived with what the console derives from it (alerts, CPU use; computed off
    the UI loop); coalesces, since only the newest one matters."""

    def __init__(self, analysed: Analysed) -> None:
        super().__init__()
        self.analysed = analysed
        self.inventory = analysed.inventory

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, InventoryUpdated)


class BackendFailed(Message):
    """A refresh failed; the error reaches the screen instead of vanishing."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class JobFinished(Message):
    """A job ended; never coalesced, never dropped."""

    def __init__(self, job: Job, result: JobResult) -> None:
        super().__init__()
        self.job = job
        self.result = result


class JobProgressed(Message):
    """A job emitted an event; coalesces per job, since the record holds every event."""

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobProgressed) and message.job.id == self.job.id
