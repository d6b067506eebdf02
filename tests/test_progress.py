"""The conversion's time estimate counts only work after start-up (it said 2:21:00 after the first image)."""

from __future__ import annotations

import io

import pytest

from phasefeat.io import progress
from phasefeat.io.progress import SteadyRateBar


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

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


class FakeBar:
    """What PieceProgress asks of a tqdm bar: update (also negative) and set_postfix."""

    def __init__(self):
        self.n, self.postfix = 0, None

    def update(self, n=1):
        self.n += n

    def set_postfix(self, refresh=True, **values):
        self.postfix = values


def test_pieces_move_the_bar_per_file_and_settle_to_their_size():
    from phasefeat.io.progress import PieceProgress

    bar = FakeBar()
    moved = PieceProgress(bar, sizes=[3, 2], known_failures=3)
    moved.tick(0)
    moved.tick(0)
    assert bar.n == 2  # one step per file as it finishes
    moved.settle(0, failed=1)  # the piece's result: its third file counted now, exactly once
    assert bar.n == 3 and bar.postfix == {"failed": 4}  # the discovery's 3 failures plus the piece's 1
    moved.tick(0)  # a tick that arrives after its piece's result is dropped
    assert bar.n == 3
    moved.settle(1, failed=2)  # a piece with no ticks at all
    assert bar.n == 5 and bar.postfix == {"failed": 6}


def test_a_restarted_piece_takes_back_what_it_had_counted():
    from phasefeat.io.progress import PieceProgress

    bar = FakeBar()
    moved = PieceProgress(bar, sizes=[4, 4], known_failures=0)
    moved.tick(1)
    moved.tick(0)
    moved.tick(0)
    moved.restart(0)  # its worker died: the piece starts again from its first file
    assert bar.n == 1
    moved.restart(0)  # restarting again takes back nothing more
    assert bar.n == 1
    moved.tick(0)
    moved.settle(0, failed=0)
    assert bar.n == 5  # piece 0 complete once, piece 1's tick kept
    moved.settle(1, failed=0)
    assert bar.n == 8


def test_ticks_from_threads_are_counted_once_each():
    import threading

    from phasefeat.io.progress import PieceProgress

    bar = FakeBar()
    moved = PieceProgress(bar, sizes=[400, 400], known_failures=0)
    threads = [threading.Thread(target=lambda p=p: [moved.tick(p) for _ in range(200)]) for p in (0, 1, 0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert bar.n == 800 and moved.ticked == {0: 400, 1: 400}


def test_the_warm_up_is_at_least_one_image(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    bar = SteadyRateBar(total=10, file=io.StringIO(), warmup=0)
    assert bar.warmup == 1
    clock.now += 5.0
    bar.update(1)
    assert bar.steady_rate() is None  # the first image is start-up, even when asked for none
    clock.now += 1.0
    bar.update(2)
    assert bar.steady_rate() == pytest.approx(2.0)
    bar.close()


def test_a_bar_format_given_by_the_caller_is_kept_while_estimating():
    bar = SteadyRateBar(total=10, file=io.StringIO(), warmup=2, bar_format="{n_fmt} of {total_fmt}")
    bar.update(1)
    assert str(bar) == "1 of 10"  # not replaced by the waiting format
    bar.close()


def _bar(clock, monkeypatch, **kwargs):
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    return SteadyRateBar(file=io.StringIO(), **kwargs)


def test_a_resumed_conversion_waits_for_its_own_warm_up(monkeypatch):
    clock = Clock()
    bar = _bar(clock, monkeypatch, total=200, initial=63, warmup=2)
    clock.now += 30.0
    bar.update(1)  # one of two workers' first image: start-up, whatever was done before the resume
    clock.now += 30.0
    bar.update(1)
    assert bar.steady_rate() is None
    clock.now += 1.0
    bar.update(4)
    assert bar.steady_rate() == pytest.approx(4.0)  # from the second image on, not from the first
    bar.close()


def test_a_warm_up_passed_in_one_step_still_starts_the_estimate(monkeypatch):
    clock = Clock()
    bar = _bar(clock, monkeypatch, total=100, warmup=2)
    clock.now += 20.0
    bar.update(3)  # a settled piece moves the bar by several files at once
    clock.now += 2.0
    bar.update(5)
    assert bar.steady_rate() == pytest.approx(2.5)  # a rate that is not a whole number
    bar.close()


def test_the_rate_is_the_images_over_the_seconds_on_any_clock(monkeypatch):
    clock = Clock(now=0.0)  # perf_counter may start anywhere, near 0 too
    bar = _bar(clock, monkeypatch, total=100, warmup=1)
    clock.now += 0.5
    bar.update(1)
    clock.now += 1.0
    bar.update(5)
    assert bar.steady_rate() == pytest.approx(5.0)  # 5 images in the 1.0 s since the warm-up ended at 0.5 s
    bar.close()


def test_no_negative_rate_when_a_restarted_piece_takes_files_back(monkeypatch):
    from phasefeat.io.progress import PieceProgress

    clock = Clock()
    bar = _bar(clock, monkeypatch, total=20, warmup=2)
    moved = PieceProgress(bar, sizes=[10, 10], known_failures=0)
    for _ in range(3):
        clock.now += 10.0
        moved.tick(0)
    clock.now += 1.0
    moved.restart(0)  # its worker died: the bar drops below where the estimate started
    assert bar.n == 0 and bar.steady_rate() is None
    bar.close()


def test_no_rate_without_new_images_or_without_time(monkeypatch):
    clock = Clock()
    bar = _bar(clock, monkeypatch, total=1000, initial=300, warmup=1)
    clock.now += 5.0
    bar.update(1)
    clock.now += 1.0
    assert bar.steady_rate() is None  # time passed, no image yet: no measurement (not 0 images/s)
    bar.update(0)  # a piece settled with nothing left to count
    assert bar.steady_rate() is None
    bar.update(2)
    assert bar.steady_rate() == pytest.approx(2.0)  # two images in the second since the warm-up
    bar.close()


def test_same_instant_images_give_no_rate(monkeypatch):
    clock = Clock()
    bar = _bar(clock, monkeypatch, total=100, warmup=1)
    clock.now += 3.0
    bar.update(1)
    bar.update(2)  # no time has passed since the warm-up ended
    assert bar.steady_rate() is None
    bar.close()


def test_defaults_one_image_of_warm_up_and_one_image_per_update(monkeypatch):
    clock = Clock()
    bar = _bar(clock, monkeypatch, total=10)
    assert bar.warmup == 1
    bar.update()
    assert bar.n == 1
    bar.close()


def test_settling_a_piece_does_not_force_a_redraw():
    """Redraws follow tqdm's own pace (mininterval): many small pieces must not flood a log file."""
    from phasefeat.io.progress import PieceProgress

    out = io.StringIO()
    bar = SteadyRateBar(total=10, file=out, mininterval=1e9, miniters=10**9, warmup=1)
    drawn = len(out.getvalue())
    PieceProgress(bar, sizes=[2], known_failures=0).settle(0, failed=1)
    assert len(out.getvalue()) == drawn
    bar.close()
