"""Jobs: every operation of this session, live, with its phase log and a cancel key."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable

from backends.models import Inventory, PhaseChanged, Progress
from console.actions import bindings
from console.screens.base import InventoryScreen, pane
from widgets.job_detail import JobDetail
from widgets.job_table import JobTable


class JobsScreen(InventoryScreen):
    SCOPE = "jobs"
    BINDINGS = bindings("jobs")
    TITLE_TEXT = "Jobs"

    def compose_body(self) -> ComposeResult:
        with pane("jobs-pane", "Jobs"):
            yield JobTable(id="jobs")
        with pane("job-pane", "Job"):
            yield JobDetail(id="job")

    def show(self, inv: Inventory) -> None:
        super().show(inv)
        self.show_jobs()

    def show_jobs(self) -> None:
        rows = []
        for record in reversed(self.hvc.jobs.all()):
            events = list(record.events)
            phase = next((e.phase for e in reversed(events) if isinstance(e, PhaseChanged | Progress)), "")
            progress = next((e for e in reversed(events) if isinstance(e, Progress)), None)
            rows.append((record.job, phase, progress, record.result))
        self.query_one(JobTable).show(rows)
        self._detail()

    @on(DataTable.RowHighlighted, "#jobs")
    def _detail(self) -> None:
        key = self.query_one(JobTable).current_key
        record = next((r for r in self.hvc.jobs.all() if r.job.id == key), None)
        self.query_one(JobDetail).show(record.job if record else None, list(record.events) if record else [])

    def apply_filter(self, text: str) -> None:
        self.query_one(JobTable).set_filter(text)

    def action_job_cancel(self) -> None:
        key = self.query_one(JobTable).current_key
        if key and self.hvc.jobs.cancel(key):
            self.set_status(f"{key}: cancelling — it stops at the next safe point")
        elif key:
            self.set_status(f"{key} has already finished")
