"""Classification metrics from predicted probabilities (NumPy only, so they are easy to test).

Accuracy alone hides class imbalance (COVID-19 is the minority), so every run
reports per-class sensitivity and specificity, macro F1, one-vs-rest AUC, the
confusion matrix and the expected calibration error.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion_matrix", "classification_metrics", "roc_auc_ovr", "expected_calibration_error"]


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
