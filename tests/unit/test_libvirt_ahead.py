"""Calls made ahead by a few threads, their results taken in order."""

from __future__ import annotations

import threading

import pytest

from backends.libvirt.ahead import AHEAD_MIN, CHUNK, in_order


def test_results_come_in_order_and_long_lists_are_called_from_other_threads() -> None:
    callers: set[str] = set()

    def call(n: int) -> int:
        callers.add(threading.current_thread().name)
        return n * n

    items = list(range(AHEAD_MIN * 5 + 3))
    assert list(in_order(call, items)) == [n * n for n in items]
    assert callers and all(name.startswith("libvirt-ahead") for name in callers)


def test_short_lists_are_called_in_place() -> None:
    callers = {threading.current_thread().name for _ in in_order(lambda n: n, range(AHEAD_MIN - 1))}
    assert callers == {threading.current_thread().name}
    assert list(in_order(lambda n: -n, [1, 2, 3])) == [-1, -2, -3]


def test_a_failing_call_raises_at_its_item_and_the_calls_not_started_are_dropped() -> None:
    called: list[int] = []
    release = threading.Event()

    def call(n: int) -> int:
        called.append(n)
        if n == 5:
            raise ValueError("gone")
        if n >= CHUNK:
            release.wait(5)  # the later chunks wait until the failure has been seen
        return n

    items = list(range(CHUNK * 20))
    got: list[int] = []
    with pytest.raises(ValueError, match="gone"):
        for result in in_order(call, items):
            got.append(result)
    release.set()
    assert got == [0, 1, 2, 3, 4]
    assert len(called) < len(items)  # the chunks still queued were cancelled
