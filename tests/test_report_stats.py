"""trainer.report.paired_comparison against scipy.stats on known numbers."""

import math

import numpy as np
import pytest
from scipy import stats

from trainer.report import paired_comparison


def test_paired_difference_interval_and_p_value_match_scipy():
    a = [0.452, 0.463, 0.445, 0.470, 0.458]
    b = [0.440, 0.455, 0.447, 0.451, 0.449]
    d = np.subtract(a, b)
    got = paired_comparison(a, b)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert got["n"] == 5 and got["mean_diff"] == pytest.approx(d.mean(), abs=1e-15)
    assert got["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-15)
    assert got["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    interval = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert got["ci95"] == pytest.approx(list(interval), abs=1e-15)


def test_known_values_by_hand():
    """d = (1, 2, 3): mean 2, sd 1, t(0.975, 2) = 4.302653, half = 4.302653 / sqrt 3."""
    got = paired_comparison([2, 4, 6], [1, 2, 3])
    assert got["mean_diff"] == 2.0
    assert got["ci95"] == pytest.approx([2 - 2.484138, 2 + 2.484138], abs=1e-6)
    assert got["p_value"] == pytest.approx(0.07417990, abs=1e-7)  # t = 2 sqrt 3 on 2 df


def test_zero_variance_and_too_few_pairs():
    same = paired_comparison([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])  # bit-identical twins
    assert same["mean_diff"] == 0 and same["ci95"] == [0, 0] and same["p_value"] == 1.0
    shifted = paired_comparison([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])  # every difference 0.5
    assert shifted["ci95"] == [0.5, 0.5] and shifted["p_value"] == 0.0
    below = paired_comparison([0.5, 1.5, 2.5], [1.0, 2.0, 3.0])  # every difference -0.5
    assert below["ci95"] == [-0.5, -0.5] and below["p_value"] == 0.0
    one = paired_comparison([1.0], [0.0])
    assert one["n"] == 1 and math.isnan(one["p_value"]) and all(math.isnan(v) for v in one["ci95"])
    assert len(one["ci95"]) == 2


def test_two_pairs_are_enough_for_an_interval():
    a, b = [0.50, 0.47], [0.45, 0.44]
    got, d = paired_comparison(a, b), np.subtract(a, b)
    half = stats.t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
    assert got["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-15)
    assert got["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
