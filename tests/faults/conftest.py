"""Fault and bad-input suites: shared fixtures, and the figures printed at the end of the run."""

from __future__ import annotations

import pytest

from tests.faults.faulty import Faults
from tests.faults.figures import FIGURES, Figures


@pytest.fixture
def figures() -> Figures:
    return FIGURES


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    return Faults().install(monkeypatch)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if FIGURES.problems() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (FIGURES.faults_injected or FIGURES.bad_inputs or FIGURES.fuzzed):
        return
    terminalreporter.section("faults and bad input")
    terminalreporter.write_line(FIGURES.line())
    for note in FIGURES.notes:
        terminalreporter.write_line(f"  {note}")
    for problem in FIGURES.problems():
        terminalreporter.write_line(f"FAILED: {problem}", red=True)
