"""Classification metrics from predicted probabilities (NumPy only, so they are easy to test).

Accuracy alone hides class imbalance (COVID-19 is the minority), so every run
reports per-class sensitivity and specificity, macro F1, one-vs-rest AUC, the
confusion matrix and the expected calibration error.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion_matrix", "classification_metrics", "roc_auc_ovr", "expected_calibration_error",
           "MARGIN", "BOOTSTRAP", "interval_metrics", "bootstrap_draws", "percentile_interval",
           "above_chance"]

#: A model counts as above chance (it learned something) when its accuracy's 95 % interval lies
#: entirely more than this far above chance, or its macro AUC's interval entirely more than twice
#: this above 0.5 (AUC does not need a calibrated threshold: a model that always answers one
#: class can still rank well). The audit's verdicts and the report's "did the arms learn" use it.
MARGIN = 0.10
#: Bootstrap resamples behind every interval of :func:`interval_metrics`.
BOOTSTRAP = 1000


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``cm[i, j]`` = samples of true class i predicted as j."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def _binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get half credit)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks for ties
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc_ovr(y_true, probabilities) -> list[float]:
    """One-vs-rest AUC of each class (NaN for a class absent from ``y_true``)."""
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return [_binary_auc(probabilities[:, c], y_true == c) for c in range(probabilities.shape[1])]


def expected_calibration_error(y_true, probabilities, bins: int = 15) -> float:
    """ECE of the top-class confidence over equal-width bins."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def classification_metrics(y_true, probabilities, class_names) -> dict:
    """Accuracy, per-class sensitivity/specificity/F1, macro F1, OvR AUC, confusion, ECE."""
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n = len(class_names)
    y_pred = probabilities.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        sensitivity = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        f1 = np.where(precision + np.nan_to_num(sensitivity) > 0,
                      2 * precision * np.nan_to_num(sensitivity) /
                      (precision + np.nan_to_num(sensitivity)), 0.0)
    auc = roc_auc_ovr(y_true, probabilities)
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(np.mean(f1)),
        "per_class": {name: {"sensitivity": float(sensitivity[c]), "specificity": float(specificity[c]),
                             "f1": float(f1[c]), "auc_ovr": auc[c]}
                      for c, name in enumerate(class_names)},
        "macro_auc_ovr": float(np.nanmean(auc)) if not np.all(np.isnan(auc)) else float("nan"),
        "confusion_matrix": cm.tolist(),
        "ece": expected_calibration_error(y_true, probabilities),
    }


def _macro_auc(y: np.ndarray, probabilities: np.ndarray, classes) -> float:
    """Macro one-vs-rest AUC over ``classes`` that occur with both outcomes (NaN if none does)."""
    from scipy.stats import rankdata

    values = []
    for c in classes:
        positive = y == c
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos and n_neg:
            ranks = rankdata(probabilities[:, c])
            values.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(values)) if values else float("nan")


def interval_metrics(labels, runs_probabilities, seed: int = 0, resamples: int = BOOTSTRAP) -> dict:
    """Mean accuracy and macro AUC over paired runs, with 95 % hierarchical bootstrap intervals.

    Each resample draws the runs (seeds) with replacement and then the test images with
    replacement, so the intervals hold both the seed-to-seed spread and the test set's
    sampling; as means of values in [0, 1] they never leave [0, 1].

    Parameters
    ----------
    labels : array of int, shape (n,)
        The test labels (the same for every run: one split).
    runs_probabilities : list of arrays, shape (n, C)
        Each run's predicted probabilities.

    Returns
    -------
    dict
        ``accuracy``, ``accuracy_ci``, ``macro_auc``, ``macro_auc_ci`` (NaN where the test
        set has fewer than two classes), ``seed_accuracy`` and ``seed_macro_auc`` (each run's),
        ``chance`` (share of the majority class, what always answering it scores), ``n``,
        ``classes_present``.

    References
    ----------
    .. [1] B. Efron, R. Tibshirani, An Introduction to the Bootstrap, Chapman & Hall, 1993, ch. 6.
    .. [2] C. A. Field, A. H. Welsh, "Bootstrapping clustered data", J. R. Stat. Soc. B 69(3), 2007.
    """
    y = np.asarray(labels)
    probs = [np.asarray(p, dtype=np.float64) for p in runs_probabilities]
    classes = sorted(set(y.tolist()))
    correct = np.stack([p.argmax(axis=1) == y for p in probs])  # (R, n)
    seed_auc = [_macro_auc(y, p, classes) for p in probs]
    auc = float(np.mean(seed_auc))
    acc_draws, auc_draws = bootstrap_draws(y, probs, seed=seed, resamples=resamples,
                                           with_auc=not np.isnan(auc))
    return {"n": len(y), "classes_present": classes, "accuracy": float(correct.mean()),
            "accuracy_ci": percentile_interval(acc_draws), "macro_auc": auc,
            "macro_auc_ci": [float("nan")] * 2 if np.isnan(auc) else percentile_interval(auc_draws),
            "chance": max(np.bincount(y).tolist()) / len(y),
            "seed_accuracy": correct.mean(axis=1).tolist(), "seed_macro_auc": seed_auc}


def bootstrap_draws(labels, runs_probabilities, *, seed: int = 0, resamples: int = BOOTSTRAP,
                    with_auc: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro AUC of each hierarchical bootstrap resample.

    A resample draws the runs with replacement, then the test images with replacement; its
    accuracy is the mean over the drawn runs, its AUC the mean of the drawn runs' AUCs with a
    run drawn twice counted twice (so the draws centre on the mean over runs).

    Returns
    -------
    acc_draws : array, shape (resamples,)
    auc_draws : array, shape (m,)
        ``m <= resamples``: resamples whose images hold a single class have no AUC. Empty
        without ``with_auc``.
    """
    y = np.asarray(labels)
    probs = [np.asarray(p, dtype=np.float64) for p in runs_probabilities]
    classes = sorted(set(y.tolist()))
    correct = np.stack([p.argmax(axis=1) == y for p in probs])
    rng = np.random.default_rng(seed)
    runs = rng.integers(0, len(probs), size=(resamples, len(probs)))
    images = rng.integers(0, len(y), size=(resamples, len(y)))
    acc_draws = np.array([correct[r][:, d].mean() for r, d in zip(runs, images, strict=True)])
    if not with_auc:
        return acc_draws, np.array([])
    # Every run's AUC on every resample's images at once (what each resample picks is read from it):
    # the same ranks and sums as _macro_auc, so the same values to the bit.
    by_run = np.stack([_macro_auc_rows(y, p, classes, images) for p in probs])  # (runs, resamples)
    auc_draws = []
    for b, r in enumerate(runs):
        picked, counts = np.unique(r, return_counts=True)
        values = by_run[picked, b]
        keep = ~np.isnan(values)
        if keep.any():
            auc_draws.append(float(np.average(values[keep], weights=counts[keep])))
    return acc_draws, np.array(auc_draws)


def _macro_auc_rows(y: np.ndarray, probabilities: np.ndarray, classes, images: np.ndarray) -> np.ndarray:
    """:func:`_macro_auc` of ``y[d]`` and ``probabilities[d]`` for each row ``d`` of ``images``.

    The ranks of all rows come from one call (in blocks of about a million drawn images, so memory
    stays bounded for a large test set); each row's mean over its classes is then taken as
    :func:`_macro_auc` takes it, so every value is the same to the bit.
    """
    from scipy.stats import rankdata

    out = np.empty(len(images))
    block = max(1, 2**20 // max(1, images.shape[1]))
    for start in range(0, len(images), block):
        d = images[start:start + block]
        labels = y[d]
        per_class = np.full((len(d), len(classes)), np.nan)
        for j, c in enumerate(classes):
            positive = labels == c
            n_pos = positive.sum(axis=1)
            n_neg = positive.shape[1] - n_pos
            both = (n_pos > 0) & (n_neg > 0)
            ranks = rankdata(probabilities[d[both], c], axis=1)
            n_pos, n_neg = n_pos[both], n_neg[both]
            per_class[both, j] = ((np.where(positive[both], ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2)
                                  / (n_pos * n_neg))
        for i, row in enumerate(per_class, start):
            values = row[~np.isnan(row)]
            out[i] = float(np.mean(values)) if values.size else float("nan")
    return out


def percentile_interval(draws) -> list[float]:
    """The central 95 % of bootstrap draws: their 2.5th and 97.5th percentiles."""
    return np.percentile(draws, [2.5, 97.5]).tolist()


def above_chance(m: dict) -> bool:
    """Accuracy's interval wholly above chance + :data:`MARGIN`, or macro AUC's above 0.5 + 2 MARGIN."""
    auc_low = m["macro_auc_ci"][0]  # NaN (one class) or None (read back from JSON): never above
    return bool(m["accuracy_ci"][0] > m["chance"] + MARGIN or (auc_low is not None and auc_low > 0.5 + 2 * MARGIN))
