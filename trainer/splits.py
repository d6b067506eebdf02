"""Stratified, patient-grouped, seeded train / validation / test splits.

The study's protocol: train/test 7:3, then the training part train/validation
7:3 (49 % / 21 % / 30 %). Every arm of a comparison uses the same split, which
is saved with the results.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict

import numpy as np

__all__ = ["Split", "SplitError", "make_split"]


class SplitError(ValueError):
    """The data cannot be split as asked (e.g. too few samples of a class)."""


@dataclasses.dataclass(frozen=True)
class Split:
    """Sample indices of each part, sorted; disjoint and covering all samples."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    test_fraction: float
    val_fraction: float
    grouped: bool

    def to_json(self) -> str:
        return json.dumps({"seed": self.seed, "test_fraction": self.test_fraction,
                           "val_fraction": self.val_fraction, "grouped": self.grouped,
                           "train": self.train.tolist(), "val": self.val.tolist(),
                           "test": self.test.tolist()})

    @classmethod
    def from_json(cls, text: str) -> Split:
        d = json.loads(text)
        return cls(np.asarray(d["train"], dtype=np.int64), np.asarray(d["val"], dtype=np.int64),
                   np.asarray(d["test"], dtype=np.int64), d["seed"], d["test_fraction"],
                   d["val_fraction"], d["grouped"])


def _take(indices_by_group, group_label, labels, fraction, rng):
    """Pick whole groups, class by class, until each class has ~fraction of its samples."""
    chosen = []
    by_class = defaultdict(list)
    for group in sorted(indices_by_group):
        by_class[group_label[group]].append(group)
    for cls in sorted(by_class):
        groups = by_class[cls]
        order = rng.permutation(len(groups))
        total = sum(len(indices_by_group[g]) for g in groups)
        target = round(fraction * total)
        taken = 0
        for k in order:
            if taken >= target:
                break
            group = groups[k]
            chosen.extend(indices_by_group[group])
            taken += len(indices_by_group[group])
    return set(chosen)


def make_split(labels, patient_ids=None, *, seed: int = 0, test_fraction: float = 0.3,
               val_fraction: float = 0.3, min_per_class: int = 1) -> Split:
    """Split sample indices into train / validation / test.

    Parameters
    ----------
    labels : array of int, shape (N,)
    patient_ids : sequence of str, optional
        When given (and not all empty), all samples of a patient land in the
        same part; a patient's class is its most common label.
    seed : int
        Fixes the split.
    test_fraction, val_fraction : float
        Share of all samples for test, and of the remaining samples for validation.
    min_per_class : int
        Each class must have at least this many samples in every part.

    Raises
    ------
    SplitError
        For fractions outside (0, 1) or a class too small for the split.
    """
    labels = np.asarray(labels)
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 < value < 1:
            raise SplitError(f"{name} must lie in (0, 1), got {value}")
    grouped = patient_ids is not None and any(p for p in patient_ids)
    keys = [p if grouped and p else f"#{i}" for i, p in
            enumerate(patient_ids if grouped else [""] * len(labels))]
    indices_by_group = defaultdict(list)
    for i, key in enumerate(keys):
        indices_by_group[key].append(i)
    group_label = {g: Counter(labels[idx].tolist()).most_common(1)[0][0]
                   for g, idx in indices_by_group.items()}
    rng = np.random.default_rng(seed)
    test = _take(indices_by_group, group_label, labels, test_fraction, rng)
    rest = {g: idx for g, idx in indices_by_group.items() if idx[0] not in test}
    val = _take(rest, group_label, labels, val_fraction, rng)
    train = [i for idx in rest.values() for i in idx if i not in val]
    split = Split(np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64),
                  np.array(sorted(test), dtype=np.int64), seed, test_fraction, val_fraction, grouped)
    for part in ("train", "val", "test"):
        counts = np.bincount(labels[getattr(split, part)], minlength=int(labels.max()) + 1)
        short = [c for c, n in enumerate(counts) if n < min_per_class]
        if short:
            raise SplitError(f"class(es) {short} have fewer than {min_per_class} sample(s) in the "
                             f"{part} part (class sizes {np.bincount(labels).tolist()}); add data "
                             "or change the fractions")
    return split
