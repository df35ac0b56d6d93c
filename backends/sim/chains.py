"""The simulated fleet's disk chains, each made when first needed.

A console's first view (the fleet's hosts) shows no chain, and at 10,000 VMs making every
chain is a fifth of the console's start; so the fleet holds how to make each (``Chains``),
makes a chain when it is looked up, and hands snapshots a sequence of them all
(``Later``) that makes the rest only when it is read: by the VMs view, the inventory
export, an operation.

A snapshot must keep showing the chains as they were when it was taken. Chains change only
through this mapping, and before the first change every sequence handed out and not yet read
is given the chains as they were (``Chains._changing``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, MutableMapping

from backends.later import Later
from backends.models import DiskChain

Key = tuple[str, str]  # (VM, disk target)


Recipe = tuple[Callable[..., DiskChain], tuple[object, ...]]  # a function and its arguments


class Chains(MutableMapping[Key, DiskChain]):
    """(VM, disk) → its chain, in the order given; a chain given as a recipe is made on its first
    lookup."""

    def __init__(self, recipes: dict[Key, Recipe]) -> None:
        self.lock = threading.RLock()  # a snapshot's sequence is read on other threads than operations change it
        self._entries: dict[Key, DiskChain | Recipe] = dict(recipes)
        self._all_made = not recipes  # once all are made they stay made: changes store chains
        self._shown: Later[DiskChain] | None = None  # the sequence handed out since the last change

    def __getitem__(self, key: Key) -> DiskChain:
        with self.lock:
            entry = self._entries[key]
            if isinstance(entry, DiskChain):
                return entry
            make, args = entry
            chain = self._entries[key] = make(*args)
            return chain

    def __setitem__(self, key: Key, chain: DiskChain) -> None:
        with self.lock:
            self._changing()
            self._entries[key] = chain

    def __delitem__(self, key: Key) -> None:
        with self.lock:
            self._changing()
            del self._entries[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def all(self) -> tuple[DiskChain, ...]:
        """Every chain, in order, made now where it was not yet."""
        with self.lock:
            if not self._all_made:
                for key in self._entries:
                    self[key]
                self._all_made = True
            return tuple(self._entries.values())  # type: ignore[arg-type]  # all made above

    def shown(self) -> Later[DiskChain]:
        """Every chain as it is now, as a sequence made when first read; the same object until
        the chains change."""
        with self.lock:
            if self._shown is None:
                self._shown = Later(self.all, self.lock)
            return self._shown

    def _changing(self) -> None:
        """Before a change: the sequence handed out since the last one (earlier ones were resolved
        then) takes the chains as they are still."""
        if self._shown is not None:
            self._shown.made()
            self._shown = None
