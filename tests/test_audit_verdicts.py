"""The audit's logic without training: its plan, its numbers, its verdicts at each threshold, and
``run_audit`` end to end on runs whose predictions are scripted (tests/test_audit.py trains for real)."""

import dataclasses
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from datasets import tiny_store

from trainer.audit import (
    DEFAULT_FRACTIONS,
    LUNG_FREE_FRACTION,
    _dir_name,
    _numbers,
    _sensitivity,
    center_key,
    external_candidates,
    parse_fractions,
    plan,
    run_audit,
    verdicts,
)
from trainer.cli import cli
from trainer.experiment import GridError, RunConfig, store_info
from trainer.metrics import BOOTSTRAP, MARGIN


def test_external_candidates_share_their_classes_with_another_source():
    # The shared radiographs: ieee (covid, pneumonia), mhh (covid), nih (normal, pneumonia).
    labels = [0] * 20 + [0] * 20 + [1] * 40 + [2] * 8 + [2] * 32
    sources = ["ieee"] * 20 + ["mhh"] * 20 + ["nih"] * 40 + ["ieee"] * 8 + ["nih"] * 32
    assert external_candidates(labels, sources) == ["ieee", "mhh"]
    # without a source, exactly two classes are left: still enough to train on
    assert external_candidates([0, 1, 0, 1, 1, 1], ["a", "a", "b", "b", "c", "c"]) == ["a", "b", "c"]
    assert external_candidates([1, 1, 1, 1], ["a", "a", "b", "b"]) == []  # one class left: nothing to learn


def _result(acc, low, auc_low, chance=1 / 3, box=None):
    m = {"accuracy": acc, "accuracy_ci": [low, acc + 0.05], "chance": chance,
         "macro_auc": auc_low + 0.05, "macro_auc_ci": [auc_low, auc_low + 0.1]}
    return m if box is None else {**m, "box_fraction": box}


LEARNED, GUESS = _result(0.9, 0.85, 0.9), _result(0.35, 0.2, 0.45)


def _curve(*above, sizes=(0.5, 0.7, 0.9)):
    return {center_key(f): (_result(0.7, 0.6, 0.8, box=f) if f in above else _result(0.35, 0.2, 0.45, box=f))
            for f in sizes}


def test_verdict_is_inconclusive_when_the_reference_did_not_learn():
    v = verdicts({"cxr": {"full": GUESS, **_curve(0.5, 0.7, 0.9), "source": LEARNED}}, ["cxr"], 0.9, 2)["cxr"]
    assert v["inconclusive"] and not v["flagged"] and v["findings"] == []
    assert v["headline"].startswith("inconclusive: the reference model did not learn")
    assert "confounded" not in v["headline"] and "do not transfer" not in v["headline"]


def test_verdict_from_the_occlusion_curve():
    two = verdicts({"cxr": {"full": LEARNED, **_curve(0.5, 0.7)}}, ["cxr"], 0.9, 3)["cxr"]
    assert "above chance up to the 70% box, not from the 90% box on" in two["headline"]
    edges = verdicts({"cxr": {"full": LEARNED, **_curve(0.5)}}, ["cxr"], 0.9, 3)["cxr"]
    assert not edges["flagged"] and not edges["findings"] and not edges["inconclusive"]
    assert "classifies only while the lung edges are visible (above chance up to the 50% box, not from " \
           "the 70% box on): not a source finding" in edges["headline"]
    source = verdicts({"cxr": {"full": LEARNED, **_curve(0.5, 0.7, 0.9)}}, ["cxr"], 0.9, 2)["cxr"]
    assert source["flagged"] and "confounded by source" in source["headline"]
    assert "81% of the image blacked out (the central 90% of each side), where no lung is visible" in \
        source["headline"]
    for n_sources, recorded in ((1, "one source"), (0, "no sources")):
        single = verdicts({"cxr": {"full": LEARNED, **_curve(0.5, 0.7, 0.9)}}, ["cxr"], float("nan"),
                          n_sources)["cxr"]
        assert not single["flagged"] and "confounded" not in single["headline"]
        assert [f["kind"] for f in single["findings"]] == ["outside_lungs"]
        assert f"the store records {recorded}, so this experiment alone says nothing about sources" in \
            single["headline"]
    short = verdicts({"cxr": {"full": LEARNED, **_curve(0.5, 0.8, sizes=(0.5, 0.8))}}, ["cxr"], 0.9, 2)["cxr"]
    assert not short["flagged"] and "at the largest box tried (80% of each side" in short["headline"]
    blind = verdicts({"cxr": {"full": LEARNED, **_curve()}}, ["cxr"], 0.9, 2)["cxr"]
    assert not blind["flagged"] and "it needs what the box hides" in blind["headline"]
    assert blind["headline"].startswith("no shortcut found by these checks")


def test_verdicts_follow_the_documented_thresholds():
    by_accuracy = {"cxr": {"full": LEARNED, center_key(0.9): _result(0.6, 1 / 3 + MARGIN + 0.01, 0.5, box=0.9)}}
    assert verdicts(by_accuracy, ["cxr"], 0.9, 2)["cxr"]["flagged"]
    at_margin = {"cxr": {"full": LEARNED, center_key(0.9): _result(0.6, 1 / 3 + MARGIN, 0.5, box=0.9)}}
    assert not verdicts(at_margin, ["cxr"], 0.9, 2)["cxr"]["flagged"]
    by_auc = {"cxr": {"full": LEARNED, center_key(0.9): _result(0.34, 0.2, 0.5 + 2 * MARGIN + 0.01, box=0.9)}}
    assert verdicts(by_auc, ["cxr"], 0.9, 2)["cxr"]["flagged"]
    probe = {"cxr": {"full": LEARNED, **_curve(), "source": _result(0.9, 0.8, 0.9, chance=0.5)}}
    v = verdicts(probe, ["cxr"], 0.8, 2)["cxr"]
    assert not v["flagged"] and "tells the image source apart" in v["headline"]
    assert "Cramér's V 0.80" in v["headline"]
    assert "nearly decides" not in verdicts(probe, ["cxr"], 0.49, 2)["cxr"]["headline"]
    assert "nearly decides" in verdicts(probe, ["cxr"], 0.5, 2)["cxr"]["headline"]
    for drop, found in ((MARGIN + 0.01, True), (MARGIN - 0.01, False)):
        external = {"cxr": {"full": LEARNED, **_curve(),
                            "external:b": {"internal_sensitivity": 0.9, "external_sensitivity": 0.9 - drop,
                                           "class_names_present": ["pneumonia"]}}}
        assert ("do not transfer" in verdicts(external, ["cxr"], 0.3, 2)["cxr"]["headline"]) is found


@pytest.mark.parametrize(("text", "message"), [("0.5,x", "numbers separated by commas"), ("", "at least one"),
                                               ("-0.5", "must lie in [0.05, 0.95]"), ("0.04", "must lie in"),
                                               ("0.5,0.99", "must lie in [0.05, 0.95]"), ("0.5,0.5", "twice")])
def test_occlude_fractions_are_checked(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_fractions(text)
    assert parse_fractions("0.9, 0.5,0.7") == (0.5, 0.7, 0.9)
    assert parse_fractions("0.95,0.05") == (0.05, 0.95)  # both ends are allowed
    many = parse_fractions(",".join(f"{0.05 + k * 0.003:.3f}" for k in range(300)))  # distinct, however many
    assert len(many) == 300
    result = CliRunner().invoke(cli, ["audit", "--store", "s.h5", "--occlude-fractions", text or ","])
    assert result.exit_code == 2 and "--occlude-fractions" in result.output and "Traceback" not in result.output




def test_a_lung_free_box_is_one_of_at_least_the_documented_side():
    """A model above chance with the 0.90 box is a finding; the same at 0.89 asks for a larger box."""
    assert LUNG_FREE_FRACTION == 0.9 and DEFAULT_FRACTIONS == (0.5, 0.7, 0.9)
    at = verdicts({"cxr": {"full": LEARNED, **_curve(0.9, sizes=(0.9,))}}, ["cxr"], 0.9, 2)["cxr"]
    assert at["flagged"] and [f["kind"] for f in at["findings"]] == ["confounded"]
    below = verdicts({"cxr": {"full": LEARNED, **_curve(0.89, sizes=(0.89,))}}, ["cxr"], 0.9, 2)["cxr"]
    assert not below["flagged"] and "at the largest box tried (89% of each side" in below["headline"]
    assert "add 0.9 to --occlude-fractions" in below["headline"]


def test_a_box_larger_than_the_lung_free_side_is_lung_free_too():
    v = verdicts({"cxr": {"full": LEARNED, **_curve(0.95, sizes=(0.95,))}}, ["cxr"], 0.9, 2)["cxr"]
    assert v["flagged"] and "(the central 95% of each side), where no lung is visible" in v["headline"]


def test_a_curve_below_chance_is_reported_with_its_smallest_box():
    per = {"full": LEARNED, center_key(0.5): _result(0.36, 0.21, 0.46, box=0.5),
           center_key(0.9): _result(0.31, 0.2, 0.4, box=0.9)}
    v = verdicts({"cxr": per}, ["cxr"], 0.9, 2)["cxr"]
    assert "with the central 50% box or more blacked out the CXR model is not clearly above chance (accuracy 0.36" \
        in v["headline"]


def test_a_source_name_may_hold_a_colon():
    per = {"full": LEARNED, **_curve(), "external:site:2": {"internal_sensitivity": 0.9, "external_sensitivity": 0.3,
                                                             "class_names_present": ["covid"]}}
    assert "on the unseen source site:2 the sensitivity" in verdicts({"cxr": per}, ["cxr"], 0.3, 2)["cxr"]["headline"]


def test_experiments_cannot_be_changed():
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan(_info([], ["a"] * 12))[0].key = "other"


def test_a_model_that_classifies_without_the_lungs_is_a_finding_whatever_the_box():
    lungs = verdicts({"cxr": {"full": LEARNED, **_curve(), "lungs": LEARNED}}, ["cxr"], 0.9, 2)["cxr"]
    assert lungs["flagged"] and "still classifies with each image's lungs blacked out (accuracy 0.90" \
        in lungs["headline"]
    hidden = verdicts({"cxr": {"full": LEARNED, **_curve(0.5), "lungs": GUESS}}, ["cxr"], 0.9, 2)["cxr"]
    assert not hidden["flagged"] and "only while the lung edges are visible" in hidden["headline"]
    none = verdicts({"cxr": {"full": LEARNED}}, ["cxr"], 0.9, 2)["cxr"]
    assert none["occlusion"] == "the CXR model was not asked with the lungs hidden" and not none["findings"]


def test_the_source_probe_counts_only_above_chance_and_the_transfer_drop_only_above_the_margin():
    guess = verdicts({"cxr": {"full": LEARNED, **_curve(), "source": GUESS}}, ["cxr"], 0.9, 2)["cxr"]
    assert guess["findings"] == []
    assert 0.1 - 0.0 == MARGIN  # a drop of exactly the margin does not count
    for internal, drop, found in ((0.1, MARGIN, False), (0.8, MARGIN + 1e-9, True)):
        external = {"cxr": {"full": LEARNED, **_curve(),
                            "external:b": {"internal_sensitivity": internal, "external_sensitivity": internal - drop,
                                           "class_names_present": ["covid", "normal"]}}}
        v = verdicts(external, ["cxr"], 0.3, 2)["cxr"]
        assert ([f["kind"] for f in v["findings"]] == ["transfer"]) is found
        if found:
            assert v["headline"] == ("on the unseen source b the sensitivity for its classes (covid, normal) falls "
                                     f"from 0.80 to {0.8 - drop:.2f}: the results do not transfer to a new source")
            assert not v["flagged"]  # a transfer finding is not a source confound
    nan_v = verdicts({"cxr": {"full": LEARNED, **_curve(), "source": LEARNED}}, ["cxr"], float("nan"), 2)["cxr"]
    assert "nearly decides" not in nan_v["headline"] and "tells the image source apart at 0.90" in nan_v["headline"]


def test_each_input_gets_its_own_verdict():
    both = verdicts({"cxr": {"full": LEARNED, **_curve(0.9)}, "enh": {"full": GUESS}}, ["cxr", "enh"], 0.9, 2)
    assert both["cxr"]["flagged"] and not both["enh"]["flagged"] and both["enh"]["inconclusive"]
    assert "the ENH model on the whole image" in both["enh"]["headline"]
    first = verdicts({"enh": {"full": GUESS}, "cxr": {"full": LEARNED, **_curve(0.9)}}, ["enh", "cxr"], 0.9, 2)
    assert list(first) == ["enh", "cxr"] and first["cxr"]["flagged"]  # an inconclusive input ends nothing


def test_numbers_read_as_the_report_prints_them():
    m = {"accuracy": 0.625, "accuracy_ci": [0.55, 0.7], "chance": 1 / 3, "macro_auc": 0.8,
         "macro_auc_ci": [0.744, 0.86]}
    assert _numbers(m) == "accuracy 0.62 (95 % CI 0.55-0.70; chance 0.33), macro AUC 0.80 (0.74-0.86)"
    assert _numbers({**m, "macro_auc": float("nan")}).endswith("macro AUC n/a (one class)")


def test_sensitivity_is_the_mean_over_runs_of_the_macro_over_the_classes_asked():
    y = np.array([0, 0, 1, 1, 2])
    right, half = np.eye(3)[y], np.eye(3)[[0, 1, 1, 0, 0]]
    assert _sensitivity(y, [right], [0, 1]) == 1.0
    assert _sensitivity(y, [half], [0, 1]) == 0.5 and _sensitivity(y, [half], [2]) == 0.0
    assert _sensitivity(y, [right, half], [0, 1, 2]) == pytest.approx((1 + 1 / 3) / 2)
    assert _sensitivity(y, [half], [0, 1, 3]) == 0.5  # a class absent from the labels is left out
    assert _sensitivity(np.array([0, 0, 2, 2]), [np.eye(3)[[0, 0, 2, 0]]], [0, 1, 2]) == 0.75  # so is one between


def _info(masks, sources, labels=(0, 1, 2) * 4):
    return {"has_masks": np.array(masks, dtype=bool), "sources": list(sources), "labels": np.array(labels)}


def test_the_plan_asks_what_the_store_allows():
    sources = ["a"] * 4 + ["b"] * 4 + ["c"] * 4  # each holds every class
    keys = [e.key for e in plan(_info([True] * 12, sources))]
    assert keys == ["full", "center-0.50", "center-0.70", "center-0.90", "lungs", "source", "external:a",
                    "external:b", "external:c"]
    assert [e.key for e in plan(_info([True] * 11 + [False], sources), (0.6,))] == [
        "full", "center-0.60", "source", "external:a", "external:b", "external:c"]
    assert [e.key for e in plan(_info([], ["a"] * 12))] == ["full", "center-0.50", "center-0.70", "center-0.90"]
    assert "source" not in [e.key for e in plan(_info([], ["a"] * 6 + [""] * 6))]  # unknown sources: no probe
    assert "source" in [e.key for e in plan(_info([], ["a"] * 6 + ["b"] * 6))]  # two sources are enough
    exps = {e.key: e for e in plan(_info([True] * 12, sources), (0.7,))}
    assert exps["center-0.70"].overrides == {"occlude": "center", "occlude_fraction": 0.7}
    assert exps["center-0.70"].question == "class, central 70% box blacked out (49% of the image)"
    assert exps["lungs"].overrides == {"occlude": "lungs"} and exps["source"].overrides == {"target": "source"}
    assert exps["external:b"].overrides == {"test_sources": ("b",)} and exps["full"].overrides == {}
    assert _dir_name("external:site b/2", "cxr", 1) == "external-site-b-2-cxr-r1"


# ---- run_audit on scripted runs ------------------------------------------------------------------

class ScriptedRunner:
    """Writes each run's predictions instead of training: right answers where ``learns(job)``, else
    always the first class. Records what it was asked."""

    def __init__(self, learns, fail=(), refuse_out=False):
        self.learns, self.fail, self.refuse_out, self.jobs = learns, fail, refuse_out, []

    def prepare(self, store_path, store_id):
        from trainer.grid import planned_identity

        self.identity = planned_identity(store_id, None, "tensorflow")
        return self.identity

    def check_out(self, out):
        if self.refuse_out:
            raise GridError("the workers cannot write there")

    def run(self, store_path, jobs, identity, workers=1, desc="grid"):
        self.jobs, self.workers = list(jobs), workers
        results, failures = [], []
        for job in jobs:
            if job.run_dir.name in self.fail:
                failures.append({"run": job.run_dir.name, "reason": "out of memory"})
                continue
            info = store_info(store_path, job.config.input, job.config.target)
            labels = info["labels"][job.split.test]
            n = len(info["class_names"])
            guesses = labels if self.learns(job) else np.zeros_like(labels)
            job.run_dir.mkdir(parents=True, exist_ok=True)
            np.savez(job.run_dir / "predictions.npz", indices=job.split.test, labels=labels,
                     probabilities=np.eye(n, dtype=np.float32)[guesses])
            result = {"class_names": info["class_names"], "config_digest": job.config.digest(),
                      "store_identity": identity["store"], "threads": identity["threads"],
                      "backend": identity["backend"]}
            (job.run_dir / "result.json").write_text(json.dumps(result))
            results.append(result)
        return results, failures


@pytest.fixture
def audit_store(tmp_path, monkeypatch):
    """90 images of three classes from three sources, each source holding every class.

    The intervals use 40 bootstrap resamples here instead of 1,000 (their own tests are test_metrics.py's)."""
    import functools

    from trainer import audit, metrics

    monkeypatch.setattr(audit, "interval_metrics", functools.partial(metrics.interval_metrics, resamples=40))
    path = tiny_store(tmp_path / "s.h5", n=90, size=32)
    with h5py.File(path, "r+") as f:
        f["meta/source"][...] = np.array([f"site{(i // 3) % 3}" for i in range(90)], dtype=object)
    return path


def _audit(store, out, runner, **kwargs):
    return run_audit(store, out, inputs=("cxr",), repeats=2, seed=5, base=RunConfig(epochs=1), progress=False,
                     occlude_fractions=(0.5, 0.9), runner=runner, **kwargs)


def test_the_audit_of_a_model_that_reads_the_source(audit_store, tmp_path):
    runner = ScriptedRunner(lambda job: True)
    record = _audit(audit_store, tmp_path / "audit", runner)
    per = record["results"]["cxr"]
    assert list(per) == ["full", "center-0.50", "center-0.90", "source", "external:site0", "external:site1",
                         "external:site2"]
    assert len(runner.jobs) == 14 and [j.config.seed for j in runner.jobs[:2]] == [5, 6]
    assert {j.run_dir.name for j in runner.jobs} >= {"full-cxr-r0", "center-0.90-cxr-r1", "external-site2-cxr-r0"}
    assert all(m["accuracy"] == 1.0 and m["seed_accuracy"] == [1.0, 1.0] for m in per.values())
    assert per["source"]["target"] == "source" and per["full"]["target"] == "class"
    assert per["source"]["class_names_present"] == ["site0", "site1", "site2"]
    assert per["center-0.90"]["box_fraction"] == 0.9 and "box_fraction" not in per["full"]
    assert per["full"]["runs"] == ["runs/full-cxr-r0", "runs/full-cxr-r1"]
    ext = per["external:site1"]
    assert ext["internal_sensitivity"] == 1.0 == ext["external_sensitivity"] and ext["n"] == 30
    assert per["full"]["question"] == "class, whole image"
    v = record["verdicts"]["cxr"]
    assert v["flagged"] and "81% of the image blacked out" in v["headline"]
    assert [f["kind"] for f in v["findings"]] == ["confounded", "source"]
    assert record["sources_recorded"] == 3 and record["source_names"] == ["site0", "site1", "site2"]
    assert record["class_source_table"] == [[10, 10, 10]] * 3 and record["cramers_v"] == pytest.approx(0.0)
    assert record["repeats"] == 2 and record["seed"] == 5 and record["occlude_fractions"] == [0.5, 0.9]
    assert record["margin"] == MARGIN and record["bootstrap"] == BOOTSTRAP and record["inputs"] == ["cxr"]
    assert record["experiments"][0] == {"key": "full", "question": "class, whole image", "overrides": {}}
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["verdicts"] == json.loads(json.dumps(record["verdicts"]))
    text = (tmp_path / "audit" / "audit.md").read_text()
    assert text.startswith("# Shortcut audit\n") and "confounded by source" in text
    assert record["figure"] == "occlusion_curve.png" and (tmp_path / "audit" / "occlusion_curve.png").is_file()


def test_the_audit_of_a_model_that_needs_the_lungs(audit_store, tmp_path):
    def learns(job):
        return job.config.occlude == "none" and job.config.target == "class" and not job.config.test_sources

    record = _audit(audit_store, tmp_path / "audit", ScriptedRunner(learns))
    per, v = record["results"]["cxr"], record["verdicts"]["cxr"]
    assert per["full"]["accuracy"] == 1.0 and per["center-0.90"]["accuracy"] == pytest.approx(1 / 3)
    ext = per["external:site0"]
    assert ext["internal_sensitivity"] == 1.0 and ext["external_sensitivity"] == pytest.approx(1 / 3)
    assert not v["flagged"] and [f["kind"] for f in v["findings"]] == ["transfer", "transfer", "transfer"]
    assert "is not clearly above chance" in v["occlusion"]


def test_the_audit_needs_every_run(audit_store, tmp_path):
    runner = ScriptedRunner(lambda job: True, fail=("full-cxr-r1", "source-cxr-r0"))
    with pytest.raises(GridError, match=r"2 audit run\(s\) failed \(full-cxr-r1: out of memory; source-cxr-r0: "
                                        "out of memory\\); the audit needs every run"):
        _audit(audit_store, tmp_path / "audit", runner)
    assert not (tmp_path / "audit" / "audit.json").exists()


def test_the_audit_of_one_run_per_experiment(audit_store, tmp_path):
    """The study's three runs per arm are the default; one run per experiment works as well."""
    import inspect

    assert inspect.signature(run_audit).parameters["repeats"].default == 3
    runner = ScriptedRunner(lambda job: True)
    record = run_audit(audit_store, tmp_path / "audit", inputs=("cxr",), repeats=1, base=RunConfig(epochs=1),
                       progress=False, occlude_fractions=(0.9,), runner=runner)
    assert len(runner.jobs) == 6 and record["results"]["cxr"]["external:site0"]["internal_sensitivity"] == 1.0
    assert {j.config.seed for j in runner.jobs} == {0} and record["seed"] == 0 and runner.workers == 1
    with pytest.raises(TypeError):
        run_audit(audit_store, tmp_path / "other", ("cxr",))  # the options are keywords


def test_the_audit_checks_every_input_for_invalid_values_first(tmp_path):
    enh = np.full((90, 8, 8, 3), 0.5, np.float32)
    enh[7, 0, 0, 0] = np.nan
    path = tiny_store(tmp_path / "s.h5", n=90, enh_dtype="float32", enh=enh)
    runner = ScriptedRunner(lambda job: True)
    with pytest.raises(GridError, match=r"/enh holds NaN.* #7 \(f7.png\)"):
        run_audit(path, tmp_path / "audit", inputs=("cxr", "enh"), runner=runner, progress=False)
    assert runner.jobs == [] and not (tmp_path / "audit").exists()


def test_the_audit_leaves_nothing_where_the_workers_cannot_write(audit_store, tmp_path):
    with pytest.raises(GridError, match="cannot write there"):
        _audit(audit_store, tmp_path / "new" / "audit", ScriptedRunner(lambda job: True, refuse_out=True))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("change", [{"target": "source"}, {"occlude": "center"}, {"occlude": "outside"},
                                    {"occlude": "lungs"}, {"test_sources": ("site0",)}])
def test_the_audit_sets_target_occlusion_and_test_sources_itself(audit_store, tmp_path, change):
    with pytest.raises(GridError, match="leave --target, --occlude and --test-source at their defaults"):
        run_audit(audit_store, tmp_path / "a", base=RunConfig(**change), runner=ScriptedRunner(lambda j: True))


def test_the_audit_reuses_the_grids_finished_reference_runs(audit_store, tmp_path):
    grid = tmp_path / "cmp" / "runs"
    first = ScriptedRunner(lambda job: True)
    _audit(audit_store, tmp_path / "cmp" / "audit0", first)
    for job in first.jobs[:2]:  # the reference runs, as the grid's cxr-cce-r0 and -r1
        (grid / f"cxr-cce-r{job.config.seed - 5}").parent.mkdir(parents=True, exist_ok=True)
        job.run_dir.rename(grid / f"cxr-cce-r{job.config.seed - 5}")
    runner = ScriptedRunner(lambda job: True)
    record = _audit(audit_store, tmp_path / "cmp" / "audit", runner, reuse_runs=grid)
    assert record["results"]["cxr"]["full"]["runs"] == ["../runs/cxr-cce-r0", "../runs/cxr-cce-r1"]
    assert [j.run_dir for j in runner.jobs[:2]] == [grid / "cxr-cce-r0", grid / "cxr-cce-r1"]
    other = dataclasses.replace(RunConfig(epochs=2))  # other settings: the audit trains its own reference
    record = run_audit(audit_store, tmp_path / "cmp" / "audit2", inputs=("cxr",), repeats=2, seed=5, base=other,
                       progress=False, occlude_fractions=(0.5, 0.9), runner=ScriptedRunner(lambda j: True),
                       reuse_runs=grid)
    assert record["results"]["cxr"]["full"]["runs"] == ["runs/full-cxr-r0", "runs/full-cxr-r1"]
    (grid / "cxr-cce-r1" / "predictions.npz").unlink()  # finished but without predictions: not reused
    runner = ScriptedRunner(lambda job: True)
    _audit(audit_store, tmp_path / "cmp" / "audit3", runner, reuse_runs=grid)
    assert [j.run_dir.parent.name for j in runner.jobs[:2]] == ["runs", "runs"]
    assert runner.jobs[1].run_dir == tmp_path / "cmp" / "audit3" / "runs" / "full-cxr-r1"
