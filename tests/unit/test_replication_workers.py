"""Up to ``AT_ONCE`` threads over job connections of their own (``replication.workers``): each
thread opens its connections on first use only, every connection is closed whatever happened,
and what an item raised comes back as its outcome."""

from __future__ import annotations

import threading
import time

import libvirt
import pytest

from backends.libvirt.replication import workers
from backends.libvirt.replication.workers import AT_ONCE, Connect, at_once


class Conn:
    def __init__(self, uri: str) -> None:
        self.uri, self.closed_by = uri, ""

    def close(self) -> None:
        self.closed_by = threading.current_thread().name


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Conn]:
    made: list[Conn] = []

    def open_job_connection(uri: str) -> Conn:
        if uri == "down":
            raise libvirt.libvirtError("cannot connect")
        made.append(Conn(uri))
        return made[-1]

    monkeypatch.setattr(workers, "open_job_connection", open_job_connection)
    return made


def test_each_thread_opens_its_connections_once_and_closes_them(opened: list[Conn]) -> None:
    def work(n: int, connect: Connect) -> tuple[str, ...]:
        if n == 0:
            return ()  # asked for none: opens none
        if n == 5:
            raise ValueError("five")
        time.sleep(0.01)  # so that every thread takes items
        return tuple(c.uri for c in connect())

    got = dict(at_once(range(10), work, ("a", "b"), "test-pool"))
    assert isinstance(got.pop(5), ValueError)
    assert got == {0: ()} | {n: ("a", "b") for n in range(1, 10) if n != 5}
    threads = {c.closed_by for c in opened}
    assert len(threads) == AT_ONCE and all(name.startswith("test-pool-") for name in threads)
    assert sorted(c.uri for c in opened) == ["a"] * AT_ONCE + ["b"] * AT_ONCE


def test_a_failed_open_is_the_items_outcome_and_closes_what_was_opened(opened: list[Conn]) -> None:
    got = list(at_once(["only"], lambda _item, connect: connect(), ("a", "down"), "test-pool"))
    assert isinstance(got[0][1], libvirt.libvirtError)
    assert [(c.uri, c.closed_by) for c in opened] == [("a", "test-pool-0")]


def test_closing_early_waits_for_the_items_working_and_closes_their_connections(opened: list[Conn]) -> None:
    stop = threading.Event()
    working: list[int] = []
    finished: list[int] = []

    def work(n: int, connect: Connect) -> int:
        if n and not stop.is_set():  # item 0 comes back at once; the next AT_ONCE hold until stopped
            connect()
            working.append(n)
            stop.wait(5)
            time.sleep(0.02)
            finished.append(n)
        return n

    results = at_once(range(2 * AT_ONCE), work, ("a",), "test-pool")
    assert next(results) == (0, 0)
    deadline = time.monotonic() + 5
    while len(working) < AT_ONCE and time.monotonic() < deadline:
        time.sleep(0.001)
    stop.set()  # what a caller does first: the items left then return at once
    results.close()
    assert sorted(finished) == sorted(working) == list(range(1, AT_ONCE + 1))
    assert len(opened) == AT_ONCE and all(c.closed_by for c in opened)
