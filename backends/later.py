"""A sequence made when first read: for a snapshot's parts that few readers need and that cost
much to make (the simulator's chains and pools at 10,000 VMs)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar, overload

T = TypeVar("T")


class Later(Sequence[T]):
    """What ``make`` returns, made once, on the first read (under ``lock`` when given, else two
    threads reading at once may both make it: harmless when ``make`` has no effects)."""

    __slots__ = ("_lock", "_made", "_make")

    def __init__(self, make: Callable[[], tuple[T, ...]], lock: threading.RLock | None = None) -> None:
        self._make: Callable[[], tuple[T, ...]] | None = make
        self._made: tuple[T, ...] | None = None
        self._lock = lock

    def made(self) -> tuple[T, ...]:
        if self._made is None:
            if self._lock is None:
                self._made_now()
            else:
                with self._lock:
                    self._made_now()
        assert self._made is not None
        return self._made

    def _made_now(self) -> None:
        make = self._make
        if self._made is None and make is not None:
            self._made, self._make = make(), None

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...
    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        return self.made()[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self.made())

    def __len__(self) -> int:
        return len(self.made())

    def __eq__(self, other: object) -> bool:
        return self.made() == tuple(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]
