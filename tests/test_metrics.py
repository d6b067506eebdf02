"""Metrics checked by hand: confusion, sensitivity, AUC, calibration, bootstrap intervals, above chance."""

import numpy as np
import pytest

from trainer.metrics import (
    BOOTSTRAP,
    MARGIN,
    above_chance,
    bootstrap_draws,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    interval_metrics,
    percentile_interval,
    roc_auc_ovr,
)


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


def test_ece_weights_each_bin_by_its_share_of_samples():
    """Two bins: 8 samples at confidence 0.9, all right (gap 0.1); 2 at 0.6, all wrong (gap 0.6).
    ECE = 0.8 * 0.1 + 0.2 * 0.6 = 0.2 (without the bin weights it would be 0.7)."""
    p = np.array([[0.9, 0.1]] * 8 + [[0.6, 0.4]] * 2)
    y = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(y, p) == pytest.approx(0.2)


def test_macro_auc_averages_the_classes_present():
    """A class absent from the test labels has no AUC; the macro mean is over the others, not NaN."""
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert np.isnan(m["per_class"]["c"]["auc_ovr"])
    assert m["per_class"]["a"]["auc_ovr"] == pytest.approx(0.75) and m["per_class"]["b"]["auc_ovr"] == pytest.approx(0.75)
    assert m["macro_auc_ovr"] == pytest.approx(0.75)


def test_interval_metrics_on_a_known_case():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    perfect = np.eye(3)[y]
    m = interval_metrics(y, [perfect, perfect], resamples=200)
    assert m["accuracy"] == 1.0 and m["accuracy_ci"] == [1.0, 1.0] and m["macro_auc"] == 1.0
    assert m["chance"] == 0.5 and m["classes_present"] == [0, 1, 2] and m["seed_accuracy"] == [1.0, 1.0]
    constant = np.tile([1.0, 0.0, 0.0], (100, 1))  # always the majority class
    m = interval_metrics(y, [constant], resamples=500)
    assert m["accuracy"] == 0.5 and m["accuracy_ci"][0] < 0.5 < m["accuracy_ci"][1]
    assert m["macro_auc"] == pytest.approx(0.5) and not above_chance(m)
    one_class = interval_metrics(np.zeros(10, int), [np.eye(3)[np.zeros(10, int)]], resamples=50)
    assert np.isnan(one_class["macro_auc"]) and one_class["chance"] == 1.0


def test_intervals_hold_the_seed_spread_and_stay_in_range():
    """Two seeds scoring 1.00 and 0.00: resampling test images alone gives 0.50 (0.50-0.50)."""
    y = np.array([0, 1, 2] * 10)
    right, wrong = np.eye(3)[y], np.eye(3)[(y + 1) % 3]
    m = interval_metrics(y, [right, wrong], resamples=400)
    assert m["accuracy"] == 0.5 and m["seed_accuracy"] == [1.0, 0.0]
    assert m["accuracy_ci"] == [0.0, 1.0]  # both seeds' outcomes lie inside the interval
    assert 0.0 <= m["macro_auc_ci"][0] <= m["macro_auc"] <= m["macro_auc_ci"][1] <= 1.0
    assert m["seed_macro_auc"] == [1.0, 0.25] and m["macro_auc_ci"][0] < 0.3 and m["macro_auc_ci"][1] == 1.0


@pytest.mark.parametrize(("low", "expected"), [(1 / 3 + MARGIN, False), (1 / 3 + MARGIN + 1e-9, True),
                                               (1 / 3 + MARGIN - 0.01, False)])
def test_above_chance_by_accuracy_at_its_boundary(low, expected):
    m = {"accuracy": low + 0.05, "accuracy_ci": [low, low + 0.1], "chance": 1 / 3,
         "macro_auc": 0.5, "macro_auc_ci": [0.4, 0.6]}
    assert above_chance(m) is expected


@pytest.mark.parametrize(("low", "expected"), [(0.5 + 2 * MARGIN, False), (0.5 + 2 * MARGIN + 1e-9, True),
                                               (0.5 + 2 * MARGIN - 0.01, False), (float("nan"), False),
                                               (None, False)])
def test_above_chance_by_auc_at_its_boundary(low, expected):
    m = {"accuracy": 0.3, "accuracy_ci": [0.2, 0.4], "chance": 1 / 3,
         "macro_auc": 0.75, "macro_auc_ci": [low, 0.9]}
    assert above_chance(m) is expected


def test_the_interval_is_the_central_95_percent_of_the_draws():
    draws = np.random.default_rng(0).permutation(np.arange(1001.0))
    assert percentile_interval(draws) == [25.0, 975.0]


def test_one_run_resampled_over_images_is_binomial():
    """One run of accuracy 0.5 on 200 images: the draws have mean 0.5 and sd sqrt(0.25 / 200)."""
    y = np.tile([0, 1], 100)
    guesses = np.eye(2)[np.tile([0, 0, 1, 1], 50)]
    acc, auc = bootstrap_draws(y, [guesses], resamples=1500)
    assert acc.shape == (1500,) and acc.mean() == pytest.approx(0.5, abs=0.004)  # sd of the mean 0.0009
    assert acc.std() == pytest.approx(np.sqrt(0.25 / 200), rel=0.1)
    assert len(auc) == 1500 and auc.mean() == pytest.approx(0.5, abs=0.004)  # hard scores: AUC = balanced accuracy


def test_a_run_drawn_twice_counts_twice():
    """Runs scoring 1, 1 and 0 (AUC and accuracy alike, whatever images are drawn): every draw is the
    share of right runs among three drawn, k / 3, and the draws centre on 2 / 3."""
    y = np.tile([0, 1], 15)
    right, reversed_ = np.eye(2)[y], np.eye(2)[1 - y]
    acc, auc = bootstrap_draws(y, [right, right, reversed_], resamples=600)
    for draws in (acc, auc):
        assert len(draws) == 600
        assert set(np.round(draws * 3, 9).tolist()) == {0.0, 1.0, 2.0, 3.0}
        assert draws.mean() == pytest.approx(2 / 3, abs=0.04)  # sd of the mean 0.011


def test_bootstrap_draws_follow_their_seed_and_default_to_the_documented_count():
    y = np.array([0, 1] * 6)
    p = np.random.default_rng(1).dirichlet(np.ones(2), 12)
    acc, auc = bootstrap_draws(y, [p])
    assert BOOTSTRAP == 1000 and len(acc) == BOOTSTRAP  # docs/shortcut-audit.md: "1,000 ... resamples"
    assert np.array_equal(acc, bootstrap_draws(y, [p], seed=0)[0])
    assert not np.array_equal(acc, bootstrap_draws(y, [p], seed=1)[0])
    assert bootstrap_draws(y, [p], with_auc=False)[1].size == 0
    m = interval_metrics(y, [p])
    assert m["accuracy_ci"] == percentile_interval(acc) and m["macro_auc_ci"] == percentile_interval(auc)


def _draws_one_by_one(y, probs, seed, resamples):
    """The hierarchical bootstrap as its docstring defines it, one resample at a time (scipy's ranks)."""
    from scipy.stats import rankdata

    def macro_auc(labels, p):
        values = []
        for c in sorted(set(y.tolist())):
            positive = labels == c
            n_pos, n_neg = int(positive.sum()), int((~positive).sum())
            if n_pos and n_neg:
                values.append((rankdata(p[:, c])[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
        return float(np.mean(values)) if values else float("nan")

    rng = np.random.default_rng(seed)
    runs = rng.integers(0, len(probs), size=(resamples, len(probs)))
    images = rng.integers(0, len(y), size=(resamples, len(y)))
    acc, auc = [], []
    for r, d in zip(runs, images, strict=True):
        acc.append(np.mean([probs[k][d].argmax(axis=1) == y[d] for k in r]))
        picked, counts = np.unique(r, return_counts=True)
        values = np.array([macro_auc(y[d], probs[k][d]) for k in picked])
        keep = ~np.isnan(values)
        if keep.any():
            auc.append(float(np.average(values[keep], weights=counts[keep])))
    return np.array(acc), np.array(auc)


@pytest.mark.parametrize(("n", "classes", "runs"), [(2, 2, 1), (7, 3, 2), (30, 3, 3), (41, 4, 2)])
@pytest.mark.parametrize("scores", ["continuous", "tied", "one class mostly"])
def test_bootstrap_draws_are_those_of_one_resample_at_a_time_to_the_bit(n, classes, runs, scores):
    """All resamples' AUCs are ranked at once; each draw is still the one its resample defines."""
    rng = np.random.default_rng(n * 10 + classes)
    y = rng.integers(0, classes, n) if scores != "one class mostly" else (rng.random(n) < 0.15).astype(int)
    probs = [rng.dirichlet(np.ones(classes), n) for _ in range(runs)]
    if scores == "tied":
        probs = [np.round(p, 1) for p in probs]
    for seed in (0, 7):
        acc, auc = bootstrap_draws(y, probs, seed=seed, resamples=200)
        want_acc, want_auc = _draws_one_by_one(y, probs, seed, 200)
        assert np.array_equal(acc, want_acc) and np.array_equal(auc, want_auc)


def test_resamples_of_a_single_class_have_no_auc():
    """Two images of class 1 among three: a resample of the class-0 image alone (or none of it) has no AUC."""
    y = np.array([0, 1, 1])
    acc, auc = bootstrap_draws(y, [np.eye(2)[y]], resamples=500)
    # P(one class) = (1/3)^3 + (2/3)^3 = 1/3: about 333 of 500 draws have an AUC (sd 10.5)
    assert len(acc) == 500 and abs(len(auc) - 1000 / 3) < 45 and set(auc.tolist()) == {1.0}


def test_ece_bins_are_equal_width_fifteen_by_default():
    """Confidence 0.90 (right) and 0.95 (wrong): different bins of 15 (edge 14/15 = 0.933) give
    0.5 * 0.1 + 0.5 * 0.95; one bin of 10 (0.9-1.0) gives |0.5 - 0.925|."""
    p = np.array([[0.9, 0.1], [0.95, 0.05]])
    y = np.array([0, 1])
    assert expected_calibration_error(y, p) == pytest.approx(0.525)
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(0.425)


def test_ece_lowest_bin_holds_the_least_confident_of_many_classes():
    """Twenty classes: confidences 0.05 and 0.06 fall in the first bin of 15 (below 1/15) together."""
    p = np.full((2, 20), 0.95 / 19)
    p[0, 0], p[1, 1] = 0.05, 0.06
    p[1, 2:] = 0.94 / 18
    p[1, 0] = 0.0
    y = np.array([0, 2])
    assert expected_calibration_error(y, p) == pytest.approx(abs(0.5 - 0.055))


def test_a_class_never_predicted_and_a_class_absent():
    """Class c absent from the labels; class b never predicted: precision and F1 0, not NaN."""
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.6, 0.1, 0.3], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    m = classification_metrics(y, p, ["a", "b", "c"])
    a, b, c = (m["per_class"][k] for k in "abc")
    assert m["confusion_matrix"] == [[2, 0, 0], [1, 0, 1], [0, 0, 0]]
    assert a["sensitivity"] == 1.0 and a["specificity"] == 0.5 and a["f1"] == pytest.approx(0.8)
    assert b["sensitivity"] == 0.0 and b["specificity"] == 1.0 and b["f1"] == 0.0
    assert np.isnan(c["sensitivity"]) and c["specificity"] == 0.75 and c["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx(0.8 / 3) and m["accuracy"] == 0.5
    assert m["ece"] == pytest.approx(expected_calibration_error(y, p))
    one = classification_metrics(np.zeros(3, int), np.eye(3)[[0, 0, 1]], ["a", "b", "c"])
    assert np.isnan(one["macro_auc_ovr"]) and one["accuracy"] == pytest.approx(2 / 3)


def test_confusion_matrix_has_a_row_and_column_for_every_class():
    assert confusion_matrix([1, 1, 0], [1, 0, 0], 4).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0] * 4, [0] * 4]


def test_tied_scores_share_their_mean_rank():
    """Scores 0.1, 0.5, 0.5, 0.9 for labels 0, 1, 0, 1: of 4 pairs 3 ranked right and one tie: AUC 3.5 / 4
    for class 1, and for class 0 (scores 1 - s) the same."""
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.5, 0.5, 0.9])
    assert roc_auc_ovr(y, np.stack([1 - s, s], axis=1)) == [pytest.approx(0.875), pytest.approx(0.875)]
    assert roc_auc_ovr(y, np.stack([s, 1 - s], axis=1)) == [pytest.approx(0.125), pytest.approx(0.125)]


def _ece_by_definition(y, p, bins):
    """Equal-width bins [k/B, (k+1)/B) (the last one closed): sum of share x |accuracy - confidence|."""
    confidence, right = p.max(axis=1), p.argmax(axis=1) == y
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return sum((which == k).mean() * abs(right[which == k].mean() - confidence[which == k].mean())
               for k in range(bins) if (which == k).any())


@pytest.mark.parametrize("classes", [3, 20])
def test_ece_equals_its_definition_for_any_bin_count(classes):
    rng = np.random.default_rng(classes)
    p = rng.dirichlet(np.full(classes, 0.3), 400)
    y = rng.integers(0, classes, 400)
    assert expected_calibration_error(y, p) == pytest.approx(_ece_by_definition(y, p, 15))
    for bins in (5, 7, 10, 16):
        assert expected_calibration_error(y, p, bins=bins) == pytest.approx(_ece_by_definition(y, p, bins))


def test_ece_keeps_the_two_lowest_bins_apart():
    """Confidence about 0.06 (bin 0 of 15), right, and 0.10 (bin 1), wrong: 0.5 (1 - 0.06) + 0.5 0.10;
    one bin would give |0.5 - 0.08|."""
    p = np.full((2, 20), 0.0)
    p[0, 0], p[0, 1:] = 0.05, 0.95 / 19
    p[1, 0], p[1, 1:] = 0.10, 0.90 / 19
    p[0, 1:] *= 0.99  # keep class 0 the top class of sample 0
    p[0, 0] = 1 - p[0, 1:].sum()
    conf = p.max(axis=1)
    assert expected_calibration_error(np.array([0, 1]), p) == pytest.approx(0.5 * (1 - conf[0]) + 0.5 * conf[1])


def test_auc_of_constant_scores_is_one_half_and_large_sets_end():
    y = np.array([0, 1, 0, 1, 1])
    assert roc_auc_ovr(y, np.full((5, 2), 0.5)) == [0.5, 0.5]
    rng = np.random.default_rng(3)  # 300 samples: more than CPython's cached small integers
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc_ovr(y, np.stack([1 - s, s], axis=1))[1] == pytest.approx(brute)


def test_sensitivity_specificity_and_f1_on_small_counts():
    """Four samples; class 0: tp 1, fn 0, fp 2, tn 1 -> precision 1/3, F1 0.5; class 1: one sample,
    never predicted; class 2: tp 1, fn 1, fp 0 -> precision 1, sensitivity 0.5, F1 2/3."""
    y = np.array([0, 1, 2, 2])
    p = np.eye(3)[[0, 0, 2, 0]]
    m = classification_metrics(y, p, ["a", "b", "c"])["per_class"]
    assert m["a"]["sensitivity"] == 1.0 and m["a"]["specificity"] == pytest.approx(1 / 3)
    assert m["a"]["f1"] == pytest.approx(0.5)
    assert m["b"]["sensitivity"] == 0.0 and m["b"]["specificity"] == 1.0 and m["b"]["f1"] == 0.0
    assert m["c"]["sensitivity"] == 0.5 and m["c"]["specificity"] == 1.0 and m["c"]["f1"] == pytest.approx(2 / 3)
    # every other sample predicted as class 0: its specificity is 0 (tn 0), not undefined
    z = classification_metrics(np.array([0, 1]), np.eye(2)[[0, 0]], ["a", "b"])["per_class"]
    assert z["a"]["specificity"] == 0.0 and z["b"]["specificity"] == 1.0
    # precision 1/4, sensitivity 1/2: F1 = 2 (1/8) / (3/4) = 1/3
    q = classification_metrics(np.array([0, 0, 1, 1, 1]), np.eye(2)[[0, 1, 0, 0, 0]], ["a", "b"])["per_class"]
    assert q["a"]["f1"] == pytest.approx(1 / 3)


def test_above_chance_is_ten_points_above_chance_in_absolute_terms():
    """The documented threshold (docs/shortcut-audit.md): the interval's low end more than 0.10 above chance,
    or the AUC interval's above 0.70."""
    m = {"accuracy_ci": [0.44, 0.6], "chance": 1 / 3, "macro_auc_ci": [0.69, 0.8]}
    assert above_chance(m) and not above_chance({**m, "accuracy_ci": [0.43, 0.6]})
    assert above_chance({**m, "accuracy_ci": [0.2, 0.6], "macro_auc_ci": [0.71, 0.8]})


def test_one_class_intervals_are_two_nans_and_options_are_keywords():
    m = interval_metrics(np.zeros(6, int), [np.eye(2)[np.zeros(6, int)]], resamples=20)
    assert len(m["macro_auc_ci"]) == 2 and all(np.isnan(v) for v in m["macro_auc_ci"])
    with pytest.raises(TypeError):
        bootstrap_draws(np.zeros(6, int), [np.eye(2)[np.zeros(6, int)]], 0)
