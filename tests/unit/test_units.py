"""Sizes and CPU lists as operators type them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.errors import BadInput
from backends.units import format_cpuset, format_kib, parse_cpuset, parse_size_kib


@pytest.mark.parametrize(("text", "kib"), [
    ("512M", 512 * 1024), ("4G", 4 << 20), ("1.5GiB", 3 << 19), ("2T", 2 << 30), ("64", 64),
    ("64K", 64), (" 8 gb ", 8 << 20),
])
def test_parse_size(text: str, kib: int) -> None:
    assert parse_size_kib(text) == kib


@pytest.mark.parametrize("text", ["", "G", "4X", "-1G", "1e3", "four"])
def test_parse_size_rejects_nonsense_with_a_hint(text: str) -> None:
    with pytest.raises(BadInput, match="512M"):
        parse_size_kib(text)


def test_format_kib() -> None:
    assert [format_kib(v) for v in (None, 512, 16 << 20, 128 << 20, 1 << 30)] == [
        "?", "512K", "16.0G", "128G", "1.0T"]


@given(st.sets(st.integers(0, 300), max_size=60))
def test_cpuset_round_trips(cpus: set[int]) -> None:
    assert parse_cpuset(format_cpuset(sorted(cpus))) == tuple(sorted(cpus))


def test_cpuset_exclusions_and_errors() -> None:
    assert parse_cpuset("0-3,^2,8") == (0, 1, 3, 8)
    for bad in ("a", "3-1", "1-x"):
        with pytest.raises(ValueError):
            parse_cpuset(bad)
