"""Running one operation from the command line: check, confirm, run as a job, report.

Exit codes: 0 it succeeded, 1 it failed or was cancelled (with the reason), 2 the request
was refused before anything changed. Ctrl-C cancels the job and waits for it to reach a
known state before exiting.
"""

from __future__ import annotations

import queue
import sys

from backends.base import Backend
from backends.errors import BadInput, HvcError
from backends.models import Job, JobEvent, JobResult, Outcome
from backends.requests import Request
from console import audit
from console.jobs import JobRunner
from console.progress_out import Output


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, ``--yes`` is the only way to say yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(f"{question.rstrip('?')}: needs confirmation", hint="pass --yes when there is no terminal")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise BadInput("not confirmed; nothing was changed")


def run_operation(backend: Backend, request: Request, *, as_json: bool, question: str | None = None,
                  yes: bool = False) -> int:
    try:
        op = backend.prepare(request)  # refusals (BadInput) surface as exit 2 before anything runs
        if question:
            confirm(question, yes)
    except HvcError as exc:
        audit.record_refusal(request.kind.value, str(request), exc.one_line(), backend.name)
        raise
    events: queue.Queue[tuple[Job, JobEvent]] = queue.Queue()
    runner = JobRunner(audit=lambda job, result: audit.record_job(job, result, backend.name))
    runner.listen(lambda job, event: events.put((job, event)))
    out = Output(as_json)
    record = runner.start(op)
    out.start(record.job)
    result: JobResult | None = None
    while result is None:
        try:
            job, event = events.get(timeout=0.5)
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            runner.cancel(record.job.id)  # the operation winds down to a known state
            continue
        if isinstance(event, JobResult):
            result = event
        else:
            out.event(job, event)
    out.finish(record.job, result)
    return 0 if result.outcome is Outcome.SUCCEEDED else 1
