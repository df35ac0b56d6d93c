"""One job: its phase log, the queue it drains as a sparkline, and its outcome."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from backends.models import Job, JobEvent, JobResult, Outcome, PhaseChanged, Progress
from backends.progress import describe


class JobDetail(Vertical):
    DEFAULT_CSS = """
    JobDetail { height: auto; padding: 0 1; }
    JobDetail Sparkline { height: 3; margin: 1 0; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="job-head")
        yield Sparkline([], id="job-queue")
        yield Static(id="job-log")

    def show(self, job: Job | None, events: Sequence[JobEvent]) -> None:
        head = self.query_one("#job-head", Static)
        if job is None:
            head.update(Text("no job selected — operations started from the VMs and Devices views appear here",
                             style="dim"))
            self.query_one(Sparkline).data = []
            self.query_one("#job-log", Static).update("")
            return
        samples = [e for e in events if isinstance(e, Progress)]
        last = samples[-1] if samples else None
        head.update(_head(job, last, next((e for e in events if isinstance(e, JobResult)), None)))
        # Queue depth over time: what is left (and held) at each sample, the thing that must drain.
        self.query_one(Sparkline).data = [float(p.remaining + p.held) for p in samples[-120:]] or [0.0]
        self.query_one("#job-log", Static).update(_log(events))


def _head(job: Job, last: Progress | None, result: JobResult | None) -> RenderableType:
    line = Text.assemble((job.id, "bold"), "  ", job.description)
    parts: list[RenderableType] = [line, Text(f"targets: {', '.join(job.targets)}", style="dim")]
    if last is not None:
        parts.append(Text(f"{last.phase}: {describe(last)}"))
    if result is not None:
        style = "green" if result.outcome is Outcome.SUCCEEDED else "bold red"
        parts.append(Text(f"{result.outcome.value} after {result.duration_s:.1f}s"
                          + (f": {result.reason}" if result.reason else ""), style=style))
    return Group(*parts)


def _log(events: Sequence[JobEvent]) -> Text:
    out = Text()
    for event in events:
        if isinstance(event, PhaseChanged):
            out.append(f"▸ {event.phase:<11}", style="cyan")
            out.append(f"{event.message}\n")
    return out
