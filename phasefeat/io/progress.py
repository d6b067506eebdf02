"""The conversion's progress bar: moved per file from any thread, its estimate from steady-state work."""

from __future__ import annotations

import time
from collections import Counter

from tqdm import tqdm

__all__ = ["SteadyRateBar", "PieceProgress"]


class SteadyRateBar(tqdm):
    """A tqdm bar whose rate, and so its time left, counts only the work after start-up.

    The first image of each worker pays for start-up (importing, Numba's compiling), so tqdm's
    own estimate, which counts it, ran far too long at first. The rate here is measured from the moment ``warmup`` images
    (one per worker) are done; until then the bar shows no estimate.
    """

    def __init__(self, *args, warmup: int = 1, **kwargs):
        self.warmup, self._steady = max(1, int(warmup)), None
        super().__init__(*args, **kwargs)

    def update(self, n=1):
        done = super().update(n)
        if self.disable:  # a disabled tqdm keeps only its count
            return done
        if self._steady is None and self.n - self.initial >= self.warmup:
            self._steady = (self.n, time.perf_counter())
        return done

    def steady_rate(self) -> float | None:
        """Images per second since start-up ended, or None before there is a measurement."""
        if self._steady is None:
            return None
        n0, t0 = self._steady
        seconds = time.perf_counter() - t0
        return (self.n - n0) / seconds if self.n > n0 and seconds > 0 else None

    #: Shown until the rate is measured: tqdm would otherwise estimate from the start-up.
    WAITING_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<?, estimating after start-up{postfix}]"

    @property
    def format_dict(self):
        values = super().format_dict
        rate = self.steady_rate()
        values["rate"] = rate
        if rate is None and values.get("bar_format") is None:
            values["bar_format"] = self.WAITING_FORMAT
        return values


class PieceProgress:
    """The bar, moved per file from any thread; a piece's result settles its count exactly.

    Ticks travel on their own queue, so some may arrive after their piece's result: those
    of a settled piece are dropped, never counted twice.
    """

    def __init__(self, bar, sizes, known_failures):
        import threading

        self.bar, self.sizes, self.known = bar, sizes, known_failures
        self.lock, self.ticked, self.settled, self.failed = threading.Lock(), Counter(), set(), 0

    def tick(self, piece_id):
        with self.lock:
            if piece_id not in self.settled:
                self.ticked[piece_id] += 1
                self.bar.update(1)

    def restart(self, piece_id):
        """A piece starts again (its worker died): take back the files it had counted."""
        with self.lock:
            self.bar.update(-self.ticked.pop(piece_id, 0))

    def settle(self, piece_id, failed):
        with self.lock:
            self.settled.add(piece_id)
            self.failed += failed
            self.bar.update(self.sizes[piece_id] - self.ticked[piece_id])
            self.bar.set_postfix(failed=self.failed + self.known, refresh=False)
