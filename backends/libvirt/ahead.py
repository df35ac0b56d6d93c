"""libvirt calls made ahead of their use, by a few threads over the same connection, their
results taken in order.

A first load reads one XML document per domain and makes three calls per storage volume. Made
one after another, each waits for its answer while nothing else runs: a round trip to a remote
daemon, or C work done without the GIL on the test driver. Made ahead, the calls overlap each
other and the parsing of the answers already in. A libvirt connection takes calls from several
threads at once. Short lists are called in place: starting threads would cost more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

AHEAD_MIN = 32  # fewer items than this are called in place
CHUNK = 32  # items per task: one future per item would cost as much as the call
WORKERS = 4

Item = TypeVar("Item")
Result = TypeVar("Result")


def in_order(call: Callable[[Item], Result], items: Sequence[Item]) -> Iterator[Result]:
    """``call(item)`` for each item, in order, the later ones made while the earlier are used.
    The first call that raises raises here, at its item; the calls not yet started are dropped
    when the iterator is closed or raises."""
    if len(items) < AHEAD_MIN:
        yield from map(call, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    def chunk(start: int) -> tuple[list[Result], Exception | None]:
        results: list[Result] = []
        try:
            for item in items[start:start + CHUNK]:
                results.append(call(item))
        except Exception as exc:  # raised where its item is taken, after the items before it
            return results, exc
        return results, None

    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="libvirt-ahead")
    try:
        for results, failed in pool.map(chunk, range(0, len(items), CHUNK)):
            yield from results
            if failed is not None:
                raise failed
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
