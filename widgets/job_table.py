"""Running and finished jobs, with a progress bar, rate, ETA and outcome each."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from backends.models import Job, JobResult, Outcome, Progress
from widgets.keyed_table import Cell, KeyedTable
from widgets.text import meter

OUTCOME_STYLE = {Outcome.SUCCEEDED: "green", Outcome.FAILED: "bold red", Outcome.CANCELLED: "yellow"}


class JobTable(KeyedTable):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(("job", "what", "phase", "progress", "ETA", "state"), **kwargs)

    def show(self, jobs: Sequence[tuple[Job, str, Progress | None, JobResult | None]]) -> None:
        """Each job with its current phase, its last progress sample and its result, newest first."""
        rows: list[tuple[str, list[Cell]]] = []
        for job, phase, progress, result in jobs:
            if result is not None:
                fraction = 1.0 if result.outcome is Outcome.SUCCEEDED else (progress.fraction if progress else 0.0)
                state = Text(result.outcome.value, style=OUTCOME_STYLE[result.outcome])
                eta = Text(f"{result.duration_s:.1f}s", style="dim")
            else:
                fraction = progress.fraction if progress else 0.0
                state = Text("running", style="cyan")
                eta = Text("…" if not progress or progress.eta_s is None else f"{progress.eta_s:.0f}s")
            bar = meter(round(fraction * 1000), 1000, width=12) + Text(f" {fraction * 100:3.0f}%")
            rows.append((job.id, [job.id, job.description, phase or "-", bar, eta, state]))
        self.set_rows(rows)
