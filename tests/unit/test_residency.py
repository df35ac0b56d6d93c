"""S3: the residency tracker never lets a pinned page go, and its counts add up."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.residency import DmaError, ResidencyTracker

PAGES = 64
page = st.integers(0, PAGES - 1)
step = st.one_of(
    st.tuples(st.just("begin"), st.lists(page, min_size=1, max_size=8)),
    st.tuples(st.just("end"), st.integers(0, 20)),
    st.tuples(st.just("reclaim"), st.lists(page, max_size=16)),
    st.tuples(st.just("touch"), st.lists(page, max_size=16)),
    st.tuples(st.just("inflate"), st.integers(0, 20)),
    st.tuples(st.just("deflate"), st.integers(0, 20)),
)


@settings(max_examples=300, deadline=None)
@given(st.sets(page), st.lists(step, max_size=40))
def test_pinned_pages_stay_resident_and_counts_add_up(resident: set[int], steps: list[tuple[str, object]]) -> None:
    t = ResidencyTracker(PAGES, resident)
    refused = 0
    for kind, arg in steps:
        pinned_before = t.pinned_pages()
        if kind == "begin":
            pages = list(arg)  # type: ignore[call-overload]
            if any(t.is_ballooned(p) for p in pages):
                with pytest.raises(DmaError):
                    t.begin_dma(pages)
                continue
            was = {p for p in pages if t.is_resident(p)}
            transfer = t.begin_dma(pages)
            assert all(t.is_resident(p) and t.is_pinned(p) for p in pages)
            assert transfer.faulted == len(set(pages) - was)
        elif kind == "end" and t.transfers():
            done = t.transfers()[int(arg) % len(t.transfers())]  # type: ignore[call-overload]
            t.end_dma(done)
            assert all(t.is_resident(p) for p in done.pages)  # unpinned, not evicted
        elif kind == "reclaim":
            pages = list(arg)  # type: ignore[call-overload]
            result = t.reclaim(pages)
            refused += result.refused
            assert result.refused == sum(p in pinned_before for p in pages)
            assert t.pinned_pages() == pinned_before  # a reclaim never unpins
        elif kind == "touch":
            t.touch(p for p in arg if not t.is_ballooned(p))  # type: ignore[attr-defined]
        elif kind == "inflate":
            result = t.inflate(int(arg))  # type: ignore[call-overload]
            refused += result.refused
            assert not any(t.is_ballooned(p) for p in pinned_before)
            assert result.reclaimed <= int(arg)  # type: ignore[call-overload]
        elif kind == "deflate":
            t.deflate(int(arg))  # type: ignore[call-overload]
        # Invariants after every step.
        assert all(t.is_resident(p) for p in t.pinned_pages()), "a pinned page was taken"
        assert t.pinned_pages() == {p for tr in t.transfers() for p in tr.pages}
        assert t.resident == sum(t.is_resident(p) for p in range(PAGES))
        assert t.ballooned == sum(t.is_ballooned(p) for p in range(PAGES))
        assert t.resident + t.ballooned <= PAGES and t.usable == PAGES - t.ballooned
        assert t.refused == refused


def test_begin_dma_faults_in_then_pins_and_end_unpins() -> None:
    t = ResidencyTracker(8, resident=[0, 1])
    transfer = t.begin_dma([1, 2, 3], tag="gpu")
    assert transfer.faulted == 2 and t.resident == 4 and t.pinned == 3 and t.in_flight == 1
    assert t.reclaim([1, 2, 5]).refused == 2 and t.refused == 2
    t.end_dma(transfer)
    assert t.pinned == 0 and t.in_flight == 0
    assert t.reclaim([1, 2]).reclaimed == 2 and t.resident == 2


def test_a_page_pinned_twice_stays_pinned_until_both_transfers_end() -> None:
    t = ResidencyTracker(4)
    first, second = t.begin_dma([0, 1]), t.begin_dma([1, 2])
    t.end_dma(first)
    assert t.pinned_pages() == {1, 2}
    assert t.reclaim([1]).refused == 1
    t.end_dma(second)
    assert t.pinned == 0
    with pytest.raises(DmaError):
        t.end_dma(second)


def test_the_balloon_skips_pinned_pages_and_counts_them() -> None:
    t = ResidencyTracker(8, resident=range(8))
    t.begin_dma([7, 6], tag="nic")
    taken = t.inflate(3)
    assert (taken.reclaimed, taken.refused) == (3, 2)
    assert [t.is_ballooned(p) for p in range(8)] == [False, False, False, True, True, True, False, False]
    with pytest.raises(DmaError):
        t.begin_dma([5])
    assert t.end_all("nic") == 1 and t.deflate(10) == 3 and t.usable == 8
    assert t.inflate(100).reclaimed == 8  # nothing pinned: the whole guest can be ballooned


def test_out_of_range_pages_are_refused() -> None:
    with pytest.raises(DmaError):
        ResidencyTracker(4).begin_dma([4])
