"""Splits (stratified, disjoint, patient-grouped, seeded) and metrics (checked by hand)."""

import numpy as np
import pytest

from trainer.metrics import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    roc_auc_ovr,
)
from trainer.splits import Split, SplitError, make_split


def labels_of(n_per_class=(100, 60, 30)):
    return np.repeat(np.arange(len(n_per_class)), n_per_class)


def test_split_is_disjoint_covering_stratified_and_reproducible():
    y = labels_of()
    s = make_split(y, seed=3)
    parts = [s.train, s.val, s.test]
    assert sum(len(p) for p in parts) == len(y)
    assert len(np.unique(np.concatenate(parts))) == len(y)
    for c, n in enumerate((100, 60, 30)):
        assert (y[s.test] == c).sum() == round(0.3 * n)
        rest = n - round(0.3 * n)
        assert (y[s.val] == c).sum() == round(0.3 * rest)
    again = make_split(y, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, [again.train, again.val, again.test], strict=True))
    other = make_split(y, seed=4)
    assert not np.array_equal(other.test, s.test)
    back = Split.from_json(s.to_json())
    assert np.array_equal(back.test, s.test) and np.array_equal(back.train, s.train) and back.seed == 3


def test_patients_never_straddle_parts():
    rng = np.random.default_rng(0)
    patients = [f"p{rng.integers(0, 60)}" for _ in range(300)]
    y = np.array([int(p[1:]) % 3 for p in patients])  # one class per patient
    s = make_split(y, patients, seed=1)
    assert s.grouped
    where = {}
    for part, idx in (("train", s.train), ("val", s.val), ("test", s.test)):
        for i in idx:
            assert where.setdefault(patients[i], part) == part


def test_tiny_class_is_a_clear_error():
    with pytest.raises(SplitError, match="fewer than 1"):
        make_split(labels_of((50, 50, 1)))
    with pytest.raises(SplitError, match="test_fraction"):
        make_split(labels_of(), test_fraction=1.5)


def test_metrics_on_a_worked_example():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([[.8, .1, .1], [.4, .5, .1], [.1, .8, .1], [.2, .7, .1], [.1, .1, .8], [.6, .2, .2]])
    cm = confusion_matrix(y, p.argmax(1), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"]["sensitivity"] == pytest.approx(0.5)
    assert m["per_class"]["a"]["specificity"] == pytest.approx(3 / 4)
    assert m["per_class"]["b"]["f1"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert m["confusion_matrix"] == cm.tolist()


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet(np.ones(3), 200)
    p[:, 0] = np.round(p[:, 0], 1)  # ties
    for c, auc in enumerate(roc_auc_ovr(y, p)):
        pos, neg = p[y == c, c], p[y != c, c]
        brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
        assert auc == pytest.approx(brute)


def test_ece_zero_when_confidence_matches_accuracy():
    p = np.tile([[1.0, 0.0]], (10, 1))
    assert expected_calibration_error(np.zeros(10, int), p) == 0
    assert expected_calibration_error(np.ones(10, int), p) == pytest.approx(1.0)
