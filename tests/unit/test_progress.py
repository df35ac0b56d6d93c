"""The progress meter: rates smooth out, ETAs never run backwards beyond noise, 100 % is the cap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.progress import FLOOR_S, NOISE, Meter


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_steady_drain_gives_the_true_rate_and_eta() -> None:
    clock = Clock()
    meter = Meter("j", "pages", clock)
    for second in range(10):
        clock.t = float(second)
        p = meter.sample("copy", done=100 * second, remaining=1000 - 100 * second)
    assert p.rate == 100.0 and p.eta_s == 1.0 and p.fraction == 0.9


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 5.0), st.integers(0, 10_000), st.integers(-100, 10_000)),
                min_size=2, max_size=60))
def test_eta_never_runs_backwards_by_more_than_noise(samples: list[tuple[float, int, int]]) -> None:
    clock = Clock()
    meter = Meter("j", "bytes", clock)
    done, previous = 0, None
    for dt, step, remaining in samples:
        clock.t += dt
        done += step
        p = meter.sample("copy", done, remaining)
        assert 0.0 <= p.fraction <= 1.0 and p.remaining >= 0
        if previous is not None and previous.eta_s is not None and p.eta_s is not None:
            expected = max(0.0, previous.eta_s - dt)
            assert p.eta_s <= expected + max(FLOOR_S, NOISE * expected) + 1e-9
        if p.eta_s is not None:
            previous = p


def test_a_new_phase_starts_a_new_estimate() -> None:
    clock = Clock()
    meter = Meter("j", "pages", clock)
    meter.sample("copy", 0, 100)
    clock.t = 1
    assert meter.sample("copy", 50, 50).eta_s == 1.0
    clock.t = 2
    fresh = meter.sample("switchover", 0, 10)
    assert fresh.rate is None and fresh.eta_s is None
