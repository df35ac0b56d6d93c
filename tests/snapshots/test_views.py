"""SVG snapshots of every view on the demo datacenter, at 120×40 and 80×24.

Regenerate on purpose with `.venv/bin/pytest tests/snapshots --snapshot-update`, then look at
the report of what changed before committing.
"""

from __future__ import annotations

import pytest

from tests.console.conftest import demo_app

VIEWS = {
    "fleet": [],
    "host-fra-hv02": ["j", "enter"],
    "host-fra-hv03-epyc": ["j", "j", "enter"],
    "vms": ["2", "j", "j"],
    "vms-filtered": ["2", "slash", *"pg-", "enter"],
    "devices": ["3"],
    "replication": ["4"],
    "help": ["2", "question_mark"],
    "services": ["6", "j"],
}


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
@pytest.mark.parametrize("view", list(VIEWS))
def test_view(snap_compare, view: str, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(demo_app(), press=VIEWS[view], terminal_size=size)
