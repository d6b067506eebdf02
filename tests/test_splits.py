"""Splits: stratified, disjoint, patient-grouped, seeded; external (held-out sources); their refusals."""

import dataclasses
import json

import numpy as np
import pytest

from trainer.splits import Split, SplitError, make_external_split, make_split


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
        # the 90 images without an id are not one patient "" (all in one part): each part gets some
        unknown = np.array([not p for p in patients])
        assert min(unknown[idx].sum() for idx in (s.train, s.val, s.test)) >= 10, seed


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


def _parts_of(split):
    return {"train": split.train, "val": split.val, "test": split.test}


def _assert_together(split, groups):
    """Each group of sample indices lies in one part."""
    where = {int(i): part for part, idx in _parts_of(split).items() for i in idx}
    for group in groups:
        assert len({where[i] for i in group}) == 1, (group, [where[i] for i in group])


def test_external_split_holds_out_whole_sources():
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2] * 3)
    sources = np.array(["a", "a", "a", "b", "b", "c", "c", "c", "b", "a", "b", "c"] * 3)
    split = make_external_split(labels, sources, ["c"], seed=1)
    assert set(sources[split.test]) == {"c"} and "c" not in set(sources[split.train])
    assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(36))
    assert split.test_sources == ("c",) and json.loads(split.to_json())["test_sources"] == ["c"]
    assert split.test_fraction == 0.0 and not split.grouped
    back = Split.from_json(split.to_json())
    assert back.test_sources == ("c",) and np.array_equal(back.test, split.test)
    assert "test_sources" not in json.loads(make_split(labels, seed=1).to_json())
    with pytest.raises(SplitError, match="not in the store"):
        make_external_split(labels, sources, ["z"])
    only_c = np.where(sources == "c", 2, labels % 2)
    with pytest.raises(SplitError, match="occur only in the test source"):
        make_external_split(only_c, sources, ["c"])


def test_external_split_defaults_are_the_studys_protocol():
    """Without options: seed 0 and 30 % of the training sources for validation (as make_split)."""
    labels = np.repeat([0, 1, 2], 40)
    sources = np.array(["a", "b"] * 60)
    split = make_external_split(labels, sources, ["b"])
    assert split.seed == 0 and split.val_fraction == 0.3
    same = make_external_split(labels, sources, ["b"], seed=0, val_fraction=0.3)
    assert all(np.array_equal(a, b) for a, b in zip(_parts_of(split).values(), _parts_of(same).values(), strict=True))
    assert np.bincount(labels[split.val]).tolist() == [6, 6, 6]  # round(0.3 * 20) per class
    assert make_split(labels).seed == 0


def test_an_external_test_set_may_lack_a_class_the_training_sources_have():
    """Only a class the training sources lack is refused; the test sources may hold fewer classes."""
    labels = np.array([0, 1, 2] * 20 + [0, 1] * 10)
    sources = np.array(["a"] * 60 + ["b"] * 20)
    split = make_external_split(labels, sources, ["b"])
    assert set(labels[split.test].tolist()) == {0, 1} and len(split.test) == 20


def test_external_split_with_every_sample_held_out_says_so():
    labels = np.array([0, 1, 2] * 10)
    with pytest.raises(SplitError, match="nothing is left to train on"):
        make_external_split(labels, ["a"] * 30, ["a"])


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 1.5])
def test_fractions_outside_the_open_interval_are_refused(fraction):
    labels = np.repeat([0, 1, 2], 30)
    sources = np.array(["a", "b"] * 45)
    with pytest.raises(SplitError, match="must lie in \\(0, 1\\)"):
        make_external_split(labels, sources, ["b"], val_fraction=fraction)
    for name in ("test_fraction", "val_fraction"):
        with pytest.raises(SplitError, match=f"{name} must lie in"):
            make_split(labels, **{name: fraction})


def test_external_split_groups_patients_and_identical_files_of_the_training_sources():
    labels = np.repeat([0, 1, 2], 40)
    sources = np.array(["a", "a", "a", "b"] * 30)
    patients = [f"p{i // 4}" if i % 8 < 4 else "" for i in range(120)]
    held = np.flatnonzero(sources == "b")
    duplicates = [[0, 1], [2, 5], [held[0], 4], [held[1], held[2]], [6, 9, 10]]
    for seed in range(4):
        split = make_external_split(labels, sources, ["b"], patients, seed=seed, duplicates=duplicates)
        assert split.grouped
        known = [[i for i, p in enumerate(patients) if p == name and sources[i] == "a"]
                 for name in set(patients) - {""}]
        _assert_together(split, [g for g in known if g] + [[0, 1], [2, 5], [6, 9, 10]])
    ungrouped = make_external_split(labels, sources, ["b"], patient_ids=None)
    assert not ungrouped.grouped


def test_external_split_refuses_a_validation_part_with_one_class():
    """Class 1 has a single training sample: 30 % of it rounds to none, so validation holds one class."""
    labels = np.array([0] * 10 + [1] + [0, 1] * 5)
    sources = np.array(["a"] * 11 + ["b"] * 10)
    with pytest.raises(SplitError, match="the val part holds 1 class"):
        make_external_split(labels, sources, ["b"])


def test_a_store_of_one_class_is_refused():
    with pytest.raises(SplitError, match="the store holds 1 class"):
        make_split(np.zeros(30, dtype=int))


def test_the_highest_class_missing_from_a_part_is_named():
    """Class 3 has two samples: one goes to test, none to validation (round(0.3 * 1) = 0)."""
    labels = labels_of((20, 20, 20, 2))
    with pytest.raises(SplitError, match=r"class\(es\) \[3\] have fewer than 1 sample\(s\) in the val part"):
        make_split(labels, seed=0)


def test_a_split_cannot_be_changed_after_it_is_made():
    """Every arm of a comparison shares one split object; none may change it under the others."""
    split = make_split(labels_of(), seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        split.seed = 1


def test_the_seed_and_fractions_are_keyword_only_and_patients_may_be_named():
    labels = labels_of()
    patients = [f"p{i // 2}" for i in range(len(labels))]
    assert make_split(labels, patient_ids=patients).grouped
    sources = np.array(["a", "b"] * (len(labels) // 2))
    assert make_external_split(labels, sources, test_sources=["b"], patient_ids=patients).grouped
    with pytest.raises(TypeError):
        make_split(labels, None, 3)
