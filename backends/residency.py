"""S3: a residency tracker for guests with direct-assigned devices on overcommitted hosts.

A device writes guest memory by DMA without the CPU faulting pages in, so every page a
transfer targets must be resident before it starts and must stay put until it ends. The
tracker keeps, per guest page: resident or not, ballooned (given back by the guest) or not,
and how many transfers pin it. ``begin_dma`` faults missing pages in and pins them;
``end_dma`` unpins; ``reclaim`` (the host taking memory back: swap, page reclaim) and
``inflate`` (the guest's balloon) never take a pinned page and count each refusal.

Pure bookkeeping with no clock: the simulator drives it, and its invariants are tested with
hypothesis (a pinned page is always resident; counts add up).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from backends.errors import BadInput
from backends.models import Residency, Vm, VmState
from backends.units import format_kib

_ABSENT, _RESIDENT, _BALLOONED = 0, 1, 2
MIN_BALLOON_KIB = 256 * 1024
_MASK = bytes([_ABSENT] + [_RESIDENT] * 255)


class DmaError(ValueError):
    """A transfer names a page the guest does not have (out of range or ballooned)."""


@dataclass(frozen=True, slots=True)
class Transfer:
    id: int
    pages: tuple[int, ...]
    faulted: int  # pages that had to be made resident first
    tag: str = ""  # the device doing it


@dataclass(frozen=True, slots=True)
class Reclaim:
    reclaimed: int  # pages taken from the guest
    refused: int  # pages refused because a transfer had them pinned


class ResidencyTracker:
    """Residency and DMA pins of one guest's ``pages`` pages; ``resident`` pages (page numbers, or a
    mask with one byte per page) start resident."""

    def __init__(self, pages: int, resident: Iterable[int] = (), ballooned: Iterable[int] = ()) -> None:
        if pages < 0:
            raise ValueError("pages must not be negative")
        self.pages = pages
        self._state = bytearray(pages)
        self._pins: dict[int, int] = {}
        self._transfers: dict[int, Transfer] = {}
        self._next_id = 1
        self._balloon: list[int] = []  # ballooned pages, most recent last (deflate returns them first)
        self.resident = 0
        self.refused = 0  # reclaims and balloon takes refused because the page was pinned
        self.faults = 0  # pages made resident for a transfer
        self.reclaimed = 0
        if isinstance(resident, bytes | bytearray):  # a mask, one byte per page: nonzero is resident
            mask = bytes(resident[:pages]).translate(_MASK)
            self._state[: len(mask)] = mask
            self.resident = mask.count(_RESIDENT)
            resident = ()
        for page in resident:
            self._check(page)
            if self._state[page] == _ABSENT:
                self._state[page] = _RESIDENT
                self.resident += 1
        for page in ballooned:
            self._check(page)
            if self._state[page] != _BALLOONED:
                self.resident -= self._state[page] == _RESIDENT
                self._state[page] = _BALLOONED
                self._balloon.append(page)

    # -- queries -----------------------------------------------------------------------

    @property
    def pinned(self) -> int:
        return len(self._pins)

    @property
    def in_flight(self) -> int:
        return len(self._transfers)

    @property
    def ballooned(self) -> int:
        return len(self._balloon)

    @property
    def usable(self) -> int:
        """Pages the guest has (not given back to the balloon)."""
        return self.pages - len(self._balloon)

    def is_resident(self, page: int) -> bool:
        return self._state[page] == _RESIDENT

    def is_pinned(self, page: int) -> bool:
        return page in self._pins

    def is_ballooned(self, page: int) -> bool:
        return self._state[page] == _BALLOONED

    def pinned_pages(self) -> frozenset[int]:
        return frozenset(self._pins)

    def transfers(self) -> tuple[Transfer, ...]:
        return tuple(self._transfers.values())

    def residency(self, page_kib: int, *, locked: bool = False) -> Residency:
        return Residency(self.resident * page_kib, self.pinned * page_kib, self.in_flight, self.refused, locked)

    # -- DMA -----------------------------------------------------------------------------

    def begin_dma(self, pages: Iterable[int], tag: str = "") -> Transfer:
        """Make every target page resident, then pin it for the transfer; all or nothing."""
        wanted = tuple(dict.fromkeys(pages))
        for page in wanted:
            self._check(page)
            if self._state[page] == _BALLOONED:
                raise DmaError(f"page {page} is in the balloon; the guest cannot DMA into it")
        faulted = 0
        for page in wanted:
            if self._state[page] == _ABSENT:
                self._state[page] = _RESIDENT
                self.resident += 1
                faulted += 1
            self._pins[page] = self._pins.get(page, 0) + 1
        self.faults += faulted
        transfer = Transfer(self._next_id, wanted, faulted, tag)
        self._next_id += 1
        self._transfers[transfer.id] = transfer
        return transfer

    def end_dma(self, transfer: Transfer | int) -> None:
        """Unpin a finished transfer's pages (they stay resident)."""
        found = self._transfers.pop(transfer if isinstance(transfer, int) else transfer.id, None)
        if found is None:
            raise DmaError(f"transfer {transfer} is not in flight")
        for page in found.pages:
            left = self._pins[page] - 1
            if left:
                self._pins[page] = left
            else:
                del self._pins[page]

    def end_all(self, tag: str | None = None) -> int:
        """End every transfer (of device ``tag``): a reset device abandons what it was doing."""
        ending = [t for t in self._transfers.values() if tag is None or t.tag == tag]
        for t in ending:
            self.end_dma(t)
        return len(ending)

    # -- taking memory back ----------------------------------------------------------------

    def touch(self, pages: Iterable[int]) -> int:
        """The guest's CPU uses pages: absent ones fault in; returns how many did."""
        faulted = 0
        for page in pages:
            self._check(page)
            if self._state[page] == _ABSENT:
                self._state[page] = _RESIDENT
                self.resident += 1
                faulted += 1
        return faulted

    def reclaim(self, pages: Iterable[int]) -> Reclaim:
        """The host takes resident pages back; a pinned page is refused and counted."""
        reclaimed = refused = 0
        for page in pages:
            self._check(page)
            if page in self._pins:
                refused += 1
            elif self._state[page] == _RESIDENT:
                self._state[page] = _ABSENT
                self.resident -= 1
                reclaimed += 1
        self.refused += refused
        self.reclaimed += reclaimed
        return Reclaim(reclaimed, refused)

    def inflate(self, count: int) -> Reclaim:
        """The balloon takes ``count`` pages from the top of guest memory down, skipping pinned ones
        (each skip is a refused reclaim); ``reclaimed`` < ``count`` when too few are unpinned."""
        taken = refused = 0
        page = self.pages - 1
        while taken < count and page >= 0:
            if self._state[page] != _BALLOONED:
                if page in self._pins:
                    refused += 1
                else:
                    self.resident -= self._state[page] == _RESIDENT
                    self._state[page] = _BALLOONED
                    self._balloon.append(page)
                    taken += 1
            page -= 1
        self.refused += refused
        return Reclaim(taken, refused)

    def deflate(self, count: int) -> int:
        """Give the guest back up to ``count`` ballooned pages (absent until it touches them)."""
        given = 0
        while given < count and self._balloon:
            self._state[self._balloon.pop()] = _ABSENT
            given += 1
        return given

    def unpinned_usable(self) -> int:
        return self.usable - self.pinned

    def _check(self, page: int) -> None:
        if not 0 <= page < self.pages:
            raise DmaError(f"page {page} is outside the guest's {self.pages} pages")


def check_balloon_target(vm: Vm, target: int) -> None:
    """Refuse what no backend can do: a guest that is not running (only a running guest's balloon
    driver answers), a target too small, above the maximum, or no change."""
    if vm.state is not VmState.RUNNING:
        raise BadInput(f"{vm.name} is {vm.state.value}; only a running guest's balloon driver answers",
                       hint=f"start {vm.name} first")
    maximum = vm.max_memory_kib or vm.memory_kib
    if target < MIN_BALLOON_KIB:
        raise BadInput(f"{format_kib(target)} is below the {format_kib(MIN_BALLOON_KIB)} a guest needs")
    if target > maximum:
        raise BadInput(f"{vm.name} can have at most {format_kib(maximum)}",
                       hint="raise its maximum memory first (needs a restart)")
    if target == vm.memory_kib:
        raise BadInput(f"{vm.name} already has {format_kib(target)}")
