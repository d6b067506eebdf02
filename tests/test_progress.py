"""The conversion's time estimate counts only work after start-up (it said 2:21:00 after the first image)."""

from __future__ import annotations

import io

import pytest

from phasefeat.io import progress
from phasefeat.io.progress import SteadyRateBar


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("warmup", [1, 2])
def test_the_estimate_waits_for_start_up_then_uses_the_steady_rate(monkeypatch, warmup):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    bar = SteadyRateBar(total=1000, desc="convert", unit="img", file=io.StringIO(), warmup=warmup, ncols=120)
    clock.now += 60.0  # the first image of each worker: importing and compiling
    bar.update(warmup)
    assert bar.steady_rate() is None and "estimating after start-up" in str(bar)
    for _ in range(10):  # then 0.5 s per image
        clock.now += 0.5
        bar.update(1)
    assert bar.steady_rate() == pytest.approx(2.0)
    shown = str(bar)
    assert "2.00img/s" in shown and "estimating" not in shown
    left = (1000 - warmup - 10) / 2.0  # seconds at the steady rate, not at 60 s for the first image
    assert f"<{int(left // 60):02d}:{int(left % 60):02d}" in shown
    bar.close()


def test_a_resumed_conversion_counts_from_where_it_resumed(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    bar = SteadyRateBar(total=100, initial=60, file=io.StringIO(), warmup=1)
    clock.now += 30.0
    bar.update(1)
    assert bar.steady_rate() is None  # the pieces finished before do not count as done here
    clock.now += 1.0
    bar.update(4)
    assert bar.steady_rate() == pytest.approx(4.0)
    bar.close()


def test_a_disabled_bar_counts_and_estimates_nothing():
    """`phasefeat convert -q` disables the bar: tqdm then sets no start, and the bar must not ask for it."""
    bar = SteadyRateBar(total=10, disable=True, warmup=2)
    bar.update(5)
    assert bar.steady_rate() is None  # and no AttributeError (it raised one)
    bar.close()
