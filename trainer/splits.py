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

from phasefeat.io.inspect_store import duplicate_groups

__all__ = ["Split", "SplitError", "make_split", "make_external_split", "duplicate_groups"]


class SplitError(ValueError):
    """The data cannot be split as asked (e.g. too few samples of a class)."""


@dataclasses.dataclass(frozen=True)
class Split:
    """Sample indices of each part, sorted; disjoint and covering all samples.

    ``test_sources`` names the sources of an external test set (``test_fraction`` is then 0).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    test_fraction: float
    val_fraction: float
    grouped: bool
    test_sources: tuple[str, ...] = ()

    def to_json(self) -> str:
        out = {"seed": self.seed, "test_fraction": self.test_fraction,
               "val_fraction": self.val_fraction, "grouped": self.grouped,
               "train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()}
        if self.test_sources:
            out["test_sources"] = list(self.test_sources)
        return json.dumps(out)

    @classmethod
    def from_json(cls, text: str) -> Split:
        d = json.loads(text)
        return cls(np.asarray(d["train"], dtype=np.int64), np.asarray(d["val"], dtype=np.int64),
                   np.asarray(d["test"], dtype=np.int64), d["seed"], d["test_fraction"],
                   d["val_fraction"], d["grouped"], tuple(d.get("test_sources", ())))


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


def _need_two_classes(labels, where: str) -> None:
    present = np.unique(labels)
    if len(present) < 2:
        raise SplitError(f"{where} holds {len(present)} class(es) ({present.tolist()}); a classifier "
                         "needs at least two (a one-class model is 100 % accurate and means nothing)")


def _merge(keys: list[str], groups: list[list[int]]) -> list[str]:
    """``keys`` with every group of samples joined under one key (the smallest of its members'),
    and everything that shares a key with them joined too (union-find). Unchanged without groups."""
    parent = {k: k for k in keys}

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for group in groups:
        first, *rest = sorted({root(keys[i]) for i in group})
        for other in rest:
            parent[other] = first
    return [root(k) for k in keys]


def _groups(labels, patient_ids, duplicates=()):
    grouped = patient_ids is not None and any(p for p in patient_ids)
    keys = [p if grouped and p else f"#{i}" for i, p in
            enumerate(patient_ids if grouped else [""] * len(labels))]
    if duplicates:  # the same file twice: both copies in one part, as one patient's images
        keys = _merge(keys, duplicates)
    indices_by_group = defaultdict(list)
    for i, key in enumerate(keys):
        indices_by_group[key].append(i)
    group_label = {g: Counter(labels[idx].tolist()).most_common(1)[0][0]
                   for g, idx in indices_by_group.items()}
    return grouped, indices_by_group, group_label


def make_external_split(labels, sources, test_sources, patient_ids=None, *, seed: int = 0,
                        val_fraction: float = 0.3, duplicates=()) -> Split:
    """External validation: the named sources are the test set; train and validation share the rest.

    Parameters
    ----------
    labels : array of int, shape (N,)
    sources : sequence of str
        Each sample's source.
    test_sources : sequence of str
        The sources held out as the test set.
    patient_ids : sequence of str, optional
        Group the train/validation split by patient.

    Raises
    ------
    SplitError
        Unknown source names, a class that only the test sources hold (no model
        could learn it), or fewer than two classes for training.
    """
    labels = np.asarray(labels)
    sources = np.asarray(sources, dtype=object)
    known = sorted(set(sources.tolist()))
    unknown = [s for s in test_sources if s not in known]
    if unknown:
        raise SplitError(f"test source(s) {unknown} not in the store; its sources are {known}")
    held = np.isin(sources, list(test_sources))
    test, rest = np.flatnonzero(held), np.flatnonzero(~held)
    if len(rest) == 0:
        raise SplitError("every sample is in the test sources; nothing is left to train on")
    missing = sorted(set(labels[test].tolist()) - set(labels[rest].tolist()))
    if missing:
        raise SplitError(f"class(es) {missing} occur only in the test source(s) {list(test_sources)}: "
                         "no model can learn them from the other sources")
    _need_two_classes(labels[rest], "the training sources")
    if not 0 < val_fraction < 1:
        raise SplitError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    patients = None if patient_ids is None else [patient_ids[i] for i in rest]
    local = {int(i): k for k, i in enumerate(rest)}
    kept = [[local[i] for i in g if i in local] for g in duplicates]
    grouped, by_group, group_label = _groups(labels[rest], patients, [g for g in kept if len(g) > 1])
    val_local = _take(by_group, group_label, labels[rest], val_fraction, np.random.default_rng(seed))
    val = rest[sorted(val_local)]
    train = np.setdiff1d(rest, val)
    split = Split(train, np.sort(val), test, seed, 0.0, val_fraction, grouped, tuple(test_sources))
    for part in ("train", "val"):
        _need_two_classes(labels[getattr(split, part)], f"the {part} part")
    return split


def make_split(labels, patient_ids=None, *, seed: int = 0, test_fraction: float = 0.3,
               val_fraction: float = 0.3, min_per_class: int = 1, duplicates=(),
               n_classes: int | None = None) -> Split:
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
    duplicates : list of list of int, optional
        Groups of samples that are the same file (:func:`duplicate_groups`): each group
        lands in one part, joined with the patients of its members.
    n_classes : int, optional
        The number of classes (the store's class list) [default: the largest label + 1]. Every
        class, the last ones too, must reach ``min_per_class`` in every part.

    Raises
    ------
    SplitError
        For fractions outside (0, 1) or a class too small for the split.
    """
    labels = np.asarray(labels)
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 < value < 1:
            raise SplitError(f"{name} must lie in (0, 1), got {value}")
    _need_two_classes(labels, "the store")
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    grouped, indices_by_group, group_label = _groups(labels, patient_ids, duplicates)
    rng = np.random.default_rng(seed)
    test = _take(indices_by_group, group_label, labels, test_fraction, rng)
    rest = {g: idx for g, idx in indices_by_group.items() if idx[0] not in test}
    val = _take(rest, group_label, labels, val_fraction, rng)
    train = [i for idx in rest.values() for i in idx if i not in val]
    split = Split(np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64),
                  np.array(sorted(test), dtype=np.int64), seed, test_fraction, val_fraction, grouped)
    for part in ("train", "val", "test"):
        _need_two_classes(labels[getattr(split, part)], f"the {part} part")
        counts = np.bincount(labels[getattr(split, part)], minlength=n_classes)
        short = [c for c, n in enumerate(counts) if n < min_per_class]
        if short:
            raise SplitError(f"class(es) {short} have fewer than {min_per_class} sample(s) in the "
                             f"{part} part (class sizes {np.bincount(labels, minlength=n_classes).tolist()}); add data "
                             "or change the fractions")
    return split
