"""`hvc play`: run a scenario against the real console, headless, and report every step.

The app is the one an operator sees (``HvcApp``), driven through Textual's Pilot; only the
terminal is missing. Output is one plain line per step and per job event (or NDJSON), so a
CI log reads like the operator's session. See ``console.scenario`` for the format.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual._context import visible_screen_stack
from textual.app import App
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import Static

from backends.base import Backend
from backends.models import Job, JobEvent, JobResult, Outcome
from console.app import HvcApp
from console.progress_out import Output
from console.scenario import TIMEOUTS, Scenario, Step
from console.screens.dialogs import ConfirmScreen

POLL_S = 0.05


class StepFailed(Exception):
    """A step did not hold; the message says what was expected and what happened."""


def screen_text(app: App[Any]) -> str:
    """What the terminal shows now, as plain text: every line of the composed screen.

    The compositor renders the screen and the screens visible behind a modal dialog, as for an
    SVG screenshot, without touching what is waiting to be drawn. Trailing spaces are dropped.
    """
    visible_screen_stack.set(app._background_screens)  # a fresh list: rendering pops from it
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text.rstrip() for strip in strips)


class Report:
    """Step lines and job events, in order, as plain lines or NDJSON on one stream."""

    def __init__(self, as_json: bool, total: int) -> None:
        self.as_json, self.total = as_json, total
        self.jobs = Output(as_json)
        self.jobs.rich = False  # a log, even on a terminal: bars would tangle with step lines
        self.events: queue.Queue[tuple[Job, JobEvent]] = queue.Queue()
        self._seen: set[str] = set()

    def listen(self, job: Job, event: JobEvent) -> None:
        """From job threads: queued, and written between steps by the main loop."""
        self.events.put((job, event))

    def drain(self) -> None:
        while True:
            try:
                job, event = self.events.get_nowait()
            except queue.Empty:
                return
            if job.id not in self._seen:
                self._seen.add(job.id)
                self.jobs.start(job)
            if isinstance(event, JobResult):
                self.jobs.finish(job, event)
            else:
                self.jobs.event(job, event)

    def begin(self, scenario: Scenario, backend: str) -> None:
        self._emit({"event": "scenario", "title": scenario.title, "path": str(scenario.path), "backend": backend,
                    "steps": self.total},
                   f"scenario {scenario.title} ({scenario.path}) on {backend}: {self.total} steps")

    def step(self, step: Step, seconds: float, error: str | None = None, screen: str | None = None) -> None:
        self.drain()
        state = "ok" if error is None else "FAILED"
        line = f"step {step.index}/{self.total} {state}: {step.label} [{seconds:.2f}s]"
        doc: dict[str, Any] = {"event": "step", "index": step.index, "name": step.name, "action": step.action,
                               "value": step.value, "ok": error is None, "seconds": round(seconds, 3)}
        if error is not None:
            line += f"\n  {error}\n--- screen at step {step.index} ---\n{screen}\n--- end of screen ---"
            doc.update(error=error, screen=screen)
        self._emit(doc, line)

    def end(self, passed: int, seconds: float, failed: Step | None) -> None:
        self.drain()
        verdict = "passed" if failed is None else f"failed at step {failed.index}"
        self._emit({"event": "end", "ok": failed is None, "passed": passed, "steps": self.total,
                    "seconds": round(seconds, 3)},
                   f"{verdict}: {passed}/{self.total} steps in {seconds:.1f}s")

    def _emit(self, doc: dict[str, Any], line: str) -> None:
        sys.stdout.write((json.dumps(doc) if self.as_json else line) + "\n")
        sys.stdout.flush()


class Player:
    """Runs the steps of one scenario against a running app."""

    def __init__(self, app: HvcApp, pilot: Pilot[None], report: Report, screenshots: Path | None) -> None:
        self.app, self.pilot, self.report, self.screenshots = app, pilot, report, screenshots

    async def run(self, step: Step) -> None:
        await getattr(self, f"_{step.action}")(step)

    async def _settle(self) -> None:
        """Let posted messages (inventory updates, job ends) reach the screen."""
        await self.pilot.pause()
        await self.app.workers.wait_for_complete()
        await self.pilot.pause()

    async def _press(self, step: Step) -> None:
        await self.pilot.press(*step.value)
        await self._checked()

    async def _type(self, step: Step) -> None:
        await self.pilot.press(*step.value)

    async def _view(self, step: Step) -> None:
        kind, _, host = step.value.partition(" ")
        if kind != "host":
            await self.app.run_action(kind)
        elif self.app.inventory is None or self.app.inventory.host(host) is None:
            raise StepFailed(f"there is no host {host!r}")
        else:
            self.app.open_host(host)
        await self._settle()

    async def _run(self, step: Step) -> None:
        assert step.request is not None
        before = len(self.app.jobs.all())
        self.app.operate(step.request, step.question)
        await self._checked()
        if isinstance(self.app.screen, ConfirmScreen):
            await self.pilot.press("y")  # the dialog an operator would answer
        if len(self.app.jobs.all()) == before:
            raise StepFailed(f"no job started: {self._status() or 'the request was refused'}")

    async def _wait_job(self, step: Step) -> None:
        records = self.app.jobs.all()
        if not records:
            raise StepFailed("no job has been started")
        await self._until(lambda: all(r.done.is_set() for r in records), step.timeout,
                          lambda: "still running: " + ", ".join(r.job.id for r in records if not r.done.is_set()))
        await self._settle()
        failed = [r for r in records if r.result is not None and r.result.outcome is not Outcome.SUCCEEDED]
        if failed:
            raise StepFailed("; ".join(f"job {r.job.id} {r.result.outcome.value}: {r.result.reason}"
                                       for r in failed if r.result))

    async def _wait_text(self, step: Step) -> None:
        await self._until(lambda: step.value in screen_text(self.app), step.timeout,
                          lambda: f"{step.value!r} is not on screen")

    async def _assert_text(self, step: Step) -> None:
        await self._settle()
        text = screen_text(self.app)
        missing = [t for t in step.value if t not in text]
        if missing:
            raise StepFailed(", ".join(repr(t) for t in missing) + " not on screen")

    async def _assert_no_text(self, step: Step) -> None:
        await self._settle()
        text = screen_text(self.app)
        present = [t for t in step.value if t in text]
        if present:
            raise StepFailed(", ".join(repr(t) for t in present) + " on screen")

    async def _screenshot(self, step: Step) -> None:
        await self._settle()
        if self.screenshots is not None:
            path = self.screenshots / f"{step.value}.svg"
            path.write_text(self.app.export_screenshot(title=f"hvc · {step.value}"), encoding="utf-8")

    async def _pause(self, step: Step) -> None:
        await self._until(lambda: False, step.value, None)

    async def _checked(self) -> None:
        """Wait for the checks an action runs off the UI thread (prepare, picker choices) to answer."""
        await self._until(lambda: not self.app.preparing, TIMEOUTS["wait_job"], lambda: "a check still running")
        await self.pilot.pause(0)

    async def _until(self, done: Callable[[], bool], timeout: float | None, why: Callable[[], str] | None) -> None:
        """Poll ``done`` until it holds, writing job events meanwhile; fail after ``timeout``."""
        deadline = time.monotonic() + (timeout or 0)
        while not done():
            if time.monotonic() >= deadline:
                if why is None:
                    return
                raise StepFailed(f"timed out after {timeout:g}s: {why()}")
            self.report.drain()
            await self.pilot.pause(POLL_S)

    def _status(self) -> str:
        """The view's status line, where the console reports a refused request."""
        try:
            return str(self.app.screen.query_one("#status", Static).content)
        except NoMatches:
            return ""


async def play(scenario: Scenario, backend: Backend, *, size: tuple[int, int], screenshots: Path | None,
               as_json: bool) -> Step | None:
    """Run every step; the step that failed, or None when all passed."""
    app = HvcApp(backend)
    report = Report(as_json, len(scenario.steps))
    app.jobs.listen(report.listen)
    report.begin(scenario, backend.name)
    started, passed, failed = time.monotonic(), 0, None
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    try:
        async with app.run_test(size=size, notifications=True) as pilot:
            player = Player(app, pilot, report, screenshots)
            await pilot.pause()
            for step in scenario.steps:
                began = time.monotonic()
                try:
                    await player.run(step)
                except StepFailed as exc:
                    report.step(step, time.monotonic() - began, str(exc), screen_text(app))
                    failed = step
                    break
                report.step(step, time.monotonic() - began)
                passed += 1
            await asyncio.to_thread(_wind_down, app)
    finally:
        _wind_down(app)  # also when interrupted: no job is left running behind the scenario
        report.drain()
    report.end(passed, time.monotonic() - started, failed)
    return failed


def _wind_down(app: HvcApp) -> None:
    """Cancel jobs still running and wait until each has reached a known state."""
    for record in app.jobs.running():
        app.jobs.cancel(record.job.id)
    for record in app.jobs.all():
        record.done.wait(60)
