"""The two-host lab, started once for the whole lab test session.

If the lab cannot start, every lab test fails with the reason: it never skips silently.
Set HVC_LAB_KEEP=1 to leave it running afterwards (handy while developing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from backends.errors import HvcError
from backends.libvirt.lab import LabStatus, lab_down, lab_up

_failure: str | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab() -> Iterator[LabStatus]:
    global _failure
    if _failure:
        pytest.fail(f"THE LIBVIRT LAB COULD NOT START: {_failure}", pytrace=False)
    try:
        status = lab_up(lambda step: print(f"lab: {step}"))
    except HvcError as exc:
        _failure = exc.one_line()
        pytest.fail(f"THE LIBVIRT LAB COULD NOT START: {_failure}", pytrace=False)
    if not status.up:
        _failure = "; ".join(status.problems) or "lab_up() returned a lab that is not up"
        pytest.fail(f"THE LIBVIRT LAB COULD NOT START: {_failure}", pytrace=False)
    yield status
    if not os.environ.get("HVC_LAB_KEEP"):
        lab_down()
