"""Job events on the command line: rich bars in a terminal, plain lines in a log, or NDJSON."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any, TextIO

from backends.models import Job, JobEvent, JobResult, PhaseChanged, Progress
from backends.progress import describe


class Output:
    """Chooses the form once, from --json and whether stdout is a terminal."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.as_json = as_json
        self.rich = not as_json and self.stream.isatty()
        self._progress: Any = None
        self._task: Any = None

    def start(self, job: Job) -> None:
        if self.as_json:
            self._json({"event": "started", "job": asdict(job)})
        elif self.rich:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]{task.fields[phase]:<10}"), BarColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(job.description, total=1.0, phase="", info="")
            self._progress.console.print(f"[bold]{job.id}[/]: {job.description}")
        else:
            self._line(f"{job.id} started: {job.description}")

    def event(self, job: Job, event: JobEvent) -> None:
        if self.as_json:
            self._json({"event": _kind(event), **asdict(event)})
        elif self.rich:
            if isinstance(event, Progress):
                self._progress.update(self._task, completed=event.fraction, phase=event.phase, info=describe(event))
            elif isinstance(event, PhaseChanged):
                self._progress.update(self._task, phase=event.phase)
                self._progress.console.print(f"  [cyan]{event.phase}[/]: {event.message}")
        elif isinstance(event, Progress):
            self._line(f"{job.id} {event.phase}: {describe(event)}")
        elif isinstance(event, PhaseChanged):
            self._line(f"{job.id} {event.phase}: {event.message}")

    def finish(self, job: Job, result: JobResult) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self.as_json:
            self._json({"event": "result", **asdict(result), "duration_s": result.duration_s})
            return
        reason = f": {result.reason}" if result.reason else ""
        self._line(f"{job.id} {result.outcome.value} in {result.duration_s:.1f}s{reason}")

    def _json(self, doc: dict[str, Any]) -> None:
        self.stream.write(json.dumps(doc) + "\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _kind(event: JobEvent) -> str:
    return {Progress: "progress", PhaseChanged: "phase", JobResult: "result"}[type(event)]
