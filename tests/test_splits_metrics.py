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


def test_identical_files_land_in_one_part_and_nothing_else_moves():
    from trainer.splits import duplicate_groups

    labels = np.repeat([0, 1, 2], 40)
    patients = [f"p{i // 2}" for i in range(120)]
    digests = [f"{i:064x}" for i in range(120)]
    for a, b in ((3, 50), (7, 95), (60, 61), (10, 11)):  # across classes, and within (10 and 11: one patient)
        digests[b] = digests[a]
    groups = duplicate_groups(digests)
    assert groups == [[3, 50], [7, 95], [10, 11], [60, 61]]
    for seed in range(5):
        plain = make_split(labels, patients, seed=seed)
        merged = make_split(labels, patients, seed=seed, duplicates=groups)
        part = {i: name for name in ("train", "val", "test") for i in getattr(merged, name)}
        for group in groups:
            together = {part[i] for i in group} | {part[j] for i in group for j in range(120)
                                                   if patients[j] == patients[i]}
            assert len(together) == 1, (seed, group)
        assert sorted(np.concatenate([merged.train, merged.val, merged.test]).tolist()) == list(range(120))
        unchanged = make_split(labels, patients, seed=seed, duplicates=[])
        assert all(np.array_equal(getattr(plain, p), getattr(unchanged, p)) for p in ("train", "val", "test"))


def test_duplicates_are_reported_by_convert_inspect_and_the_report(tmp_path):
    from click.testing import CliRunner
    from datasets import class_folder_dataset

    from phasefeat.cli import cli
    from trainer.report import _split_table

    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=3)
    (root / "Normal" / "images" / "copy.png").write_bytes((root / "COVID" / "images" / "COVID 0.png").read_bytes())
    out = tmp_path / "s.h5"
    done = CliRunner().invoke(cli, ["convert", str(root), str(out), "--size", "32", "--features-at", "32", "-q",
                                    "--backend", "numpy"])
    assert done.exit_code == 0, done.output
    assert "duplicates: 1 group(s) of identical files (2 images; 1 group(s) with two labels" in done.output
    shown = CliRunner().invoke(cli, ["inspect", str(out)]).output
    assert "COVID/images/COVID 0.png (covid) = Normal/images/copy.png (normal)" in shown
    from phasefeat.io.store import open_store

    with open_store(out) as s:
        labels, digests = s.labels, s.sha256
    split = {"train": list(range(len(labels))), "val": [], "test": [], "grouped": False}
    lines = _split_table(split, labels, ["covid", "normal", "pneumonia"], digests)
    assert lines[-1].startswith("Identical files: 1 group(s) of identical files (2 images")


def test_partial_patient_ids_still_keep_each_known_patient_together():
    """Ids known for some images only: the known patients stay in one part; the others are their own group."""
    labels = np.repeat([0, 1, 2], 60)
    patients = [f"p{i // 3}" if i % 2 == 0 else "" for i in range(180)]
    for seed in range(4):
        s = make_split(labels, patients, seed=seed)
        assert s.grouped
        where = {}
        for part, idx in (("train", s.train), ("val", s.val), ("test", s.test)):
            for i in idx:
                if patients[i]:
                    assert where.setdefault(patients[i], part) == part, (seed, patients[i])


@pytest.mark.parametrize(("sizes", "minimum", "ok"), [((10, 10, 10), 1, True), ((10, 10, 10), 2, True),
                                                      ((10, 10, 10), 3, False)])
def test_the_minimum_per_class_is_inclusive(sizes, minimum, ok):
    """A class with exactly ``min_per_class`` samples in a part is accepted; one fewer is refused."""
    labels = labels_of(sizes)
    smallest = min(int(np.bincount(labels[getattr(make_split(labels, seed=0), p)]).min())
                   for p in ("train", "val", "test"))
    assert smallest == 2  # 10 samples: 3 test, 2 val, 5 train per class
    if ok:
        make_split(labels, seed=0, min_per_class=minimum)
    else:
        with pytest.raises(SplitError, match=f"fewer than {minimum}"):
            make_split(labels, seed=0, min_per_class=minimum)


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
