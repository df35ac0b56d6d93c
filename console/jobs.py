"""Runs operations as jobs: concurrently, one job per VM or device at a time, never silently.

No Textual here: the console listens through a callback (and posts messages from it), the
command line iterates events. A job's last event is always its ``JobResult``, even when the
operation raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from backends.base import Operation
from backends.errors import Conflict
from backends.models import Job, JobEvent, JobResult, Outcome

Listener = Callable[[Job, JobEvent], None]


@dataclass
class JobRecord:
    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list[JobEvent] = field(default_factory=list)
    result: JobResult | None = None
    done: threading.Event = field(default_factory=threading.Event)


class JobRunner:
    def __init__(self, audit: Callable[[Job, JobResult], None] | None = None) -> None:
        """``audit`` hears every finished job (the audit log), before listeners do."""
        self._audit = audit
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self, op: Operation) -> JobRecord:
        """Run ``op`` in its own thread; refuse it if a running job touches the same targets."""
        with self._lock:
            for record in self._jobs.values():
                busy = set(record.job.targets) & set(op.job.targets)
                if busy and record.result is None:
                    raise Conflict(f"{sorted(busy)[0]} is busy with job {record.job.id} ({record.job.description})",
                                   hint="wait for it to finish or cancel it")
            record = JobRecord(op.job)
            self._jobs[op.job.id] = record
        threading.Thread(target=self._run, args=(op, record), name=f"job {op.job.id}", daemon=True).start()
        return record

    def cancel(self, job_id: str) -> bool:
        record = self._jobs.get(job_id)
        if record is None or record.result is not None:
            return False
        record.cancel.set()
        return True

    def running(self) -> list[JobRecord]:
        return [r for r in self._jobs.values() if r.result is None]

    def all(self) -> list[JobRecord]:
        return list(self._jobs.values())

    def _run(self, op: Operation, record: JobRecord) -> None:
        started = time.time()
        try:
            result = op.run(lambda event: self._emit(record, event), record.cancel)
        except Exception as exc:  # an operation bug must still end the job, with the reason
            result = JobResult(op.job.id, Outcome.FAILED, f"internal error: {exc}", started, time.time())
        record.result = result
        if self._audit is not None:
            self._audit(op.job, result)
        self._emit(record, result)
        record.done.set()

    def _emit(self, record: JobRecord, event: JobEvent) -> None:
        record.events.append(event)
        for listener in self._listeners:
            listener(record.job, event)
