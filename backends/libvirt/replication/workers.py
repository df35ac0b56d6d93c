"""Work through a list up to ``AT_ONCE`` items at a time, each thread over job connections of its
own (a daemon serves one stream at a time per thread, so one item after another leaves the
machine half idle): shipping a sync's layers (``ship``) and reading them back (``verify``)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

import libvirt

from backends.libvirt.ops import open_job_connection

AT_ONCE = 3  # items at once (a layer shipped holds two streams and a read-ahead of ~8 MiB)

Item = TypeVar("Item")
Result = TypeVar("Result")
Connect = Callable[[], list[Any]]  # the thread's connections, one per URI, opened on the first call


def at_once(items: Sequence[Item], work: Callable[[Item, Connect], Result], uris: Sequence[str],
            name: str) -> Generator[tuple[Item, Result | BaseException], None, None]:
    """Each item with what ``work`` returned or raised, in the order they finish. ``work`` takes
    the item and its thread's ``Connect``; a thread's connections close when the list is done.
    Closing the iterator early waits for the items being worked on (stop them first: ``work``
    runs on into the items left unless it looks at a flag of the caller's)."""
    todo: queue.SimpleQueue[Item] = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    done: queue.SimpleQueue[tuple[Item, Result | BaseException]] = queue.SimpleQueue()
    threads: list[threading.Thread] = []
    try:
        for n in range(min(AT_ONCE, len(items))):
            threads.append(threading.Thread(target=_worker, args=(todo, done, work, uris),
                                            name=f"{name}-{n}", daemon=True))
            threads[-1].start()
        for _ in items:
            yield done.get()
    finally:
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()


def _worker(todo: queue.SimpleQueue[Item], done: queue.SimpleQueue[tuple[Item, Result | BaseException]],
            work: Callable[[Item, Connect], Result], uris: Sequence[str]) -> None:
    conns: list[Any] = []

    def connect() -> list[Any]:
        while len(conns) < len(uris):  # one at a time: a failed open leaves those made to be closed
            conns.append(open_job_connection(uris[len(conns)]))
        return conns

    try:
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                outcome: Result | BaseException = work(item, connect)
            except BaseException as exc:  # handed to the caller's thread, which decides
                outcome = exc
            done.put((item, outcome))
    finally:
        for conn in conns:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
