"""trainer.report on hand-made results: every table, headline and sentence against numbers computed here.

No training: the runs are dictionaries with known losses, accuracies and weight hashes, so
each number of runs.csv, results.json, report.md and the terminal summary can be checked
independently (the end-to-end grid in test_trainer.py checks that real runs get there).
"""

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from trainer.report import LOSS_SCALE_NOTE, paired_comparison, summary_lines, write_report

NAMES = ["covid", "normal", "pneumonia"]
SEEDS = (0, 1, 2)
#: (input, seed) -> test loss, validation loss, accuracy, macro F1, macro AUC
NUMBERS = {
    "cxr": {"test_loss": [0.46, 0.45, 0.47], "val_loss": [0.44, 0.43, 0.48],
            "test_accuracy": [0.82, 0.84, 0.81], "macro_f1": [0.80, 0.83, 0.79],
            "macro_auc_ovr": [0.91, 0.92, 0.90]},
    "enh": {"test_loss": [0.34, 0.36, 0.30], "val_loss": [0.27, 0.26, 0.29],
            "test_accuracy": [0.80, 0.79, 0.82], "macro_f1": [0.78, 0.77, 0.81],
            "macro_auc_ovr": [0.93, 0.94, 0.95]},
}


def _run(model, what, loss, k, numbers, sha):
    n = {key: values[k] for key, values in numbers[what].items()}
    return {"run": f"{what}-{loss}-r{k}" if model == "vgg16" else f"{model}-{what}-{loss}-r{k}",
            "model": model, "input": what, "loss": loss, "seed": SEEDS[k], "class_names": NAMES,
            "val_loss": n["val_loss"], "test_loss": n["test_loss"], "test_cross_entropy": n["test_loss"],
            "test_accuracy": n["test_accuracy"], "epochs_run": 5 + k, "weights_sha256": sha,
            "history": {"loss": [0.9, 0.7, 0.6], "val_loss": [0.95, 0.8, n["val_loss"]]},
            "metrics": {"macro_f1": n["macro_f1"], "macro_auc_ovr": n["macro_auc_ovr"], "ece": 0.05,
                        "confusion_matrix": [[5, 1, 0], [0, 6, 1], [1, 0, 5]],
                        "per_class": {c: {"auc_ovr": 0.9} for c in NAMES}}}


def _results(twins=True, models=("vgg16",), numbers=NUMBERS):
    """CXR/ENH x CCE/SCCE x 3 seeds; with ``twins`` CCE and SCCE share their weights (bit-identical)."""
    def sha(*parts):  # like the real ones: unordered hex digests, equal only for equal weights
        return hashlib.sha256("-".join(map(str, parts)).encode()).hexdigest()

    # Model names as a JSON reader returns them: equal strings, not the same objects.
    return [_run(m[:1] + m[1:], what, loss, k, numbers, sha(m, what, k) if twins else sha(m, what, k, loss))
            for m in models for what in ("cxr", "enh") for loss in ("cce", "scce") for k in range(3)]


def _section(report: str, title: str) -> list[str]:
    """The table rows (``| ...``) of one ``## title`` section, header and rule left out."""
    body = report.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return rows[2:]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_report(_results(), out)
    return out


def test_runs_csv_holds_every_run_with_its_twins(report):
    with open(report / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    by_run = {r["run"]: r for r in rows}
    for r in _results():
        row = by_run[r["run"]]
        assert float(row["test_loss"]) == r["test_loss"] and float(row["val_loss"]) == r["val_loss"]
        assert float(row["test_accuracy"]) == r["test_accuracy"]
        assert float(row["macro_f1"]) == r["metrics"]["macro_f1"]
        assert int(row["seed"]) == r["seed"] and int(row["epochs_run"]) == r["epochs_run"]
        assert row["bit_identical_to"] == ("scce" if r["loss"] == "cce" else "cce")


def test_summary_and_comparisons_are_the_numbers_computed_here(report):
    results = json.loads((report / "results.json").read_text())
    for what in ("cxr", "enh"):
        for loss in ("cce", "scce"):
            s = results["summary"][f"{what}+{loss}"]
            for key, values in NUMBERS[what].items():
                assert s[key]["mean"] == pytest.approx(np.mean(values), abs=1e-15)
                assert s[key]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-15)
    pairs = {(c["a"], c["b"]): c for c in results["comparisons"]}
    assert len(pairs) == 6  # every pair of the four arms, within the one model
    c = pairs[("cxr+cce", "enh+cce")]
    for key in ("test_loss", "val_loss", "test_accuracy"):
        want = paired_comparison(NUMBERS["cxr"][key], NUMBERS["enh"][key])
        assert c[key]["mean_diff"] == pytest.approx(want["mean_diff"], abs=1e-15)
        assert c[key]["ci95"] == pytest.approx(want["ci95"], abs=1e-15)
    assert c["bit_identical_seeds"] == [] and c["seeds"] == list(SEEDS)
    assert pairs[("cxr+cce", "cxr+scce")]["bit_identical_seeds"] == list(SEEDS)
    assert pairs[("cxr+cce", "cxr+scce")]["test_loss"]["mean_diff"] == 0


def test_report_tables_headline_and_twins(report):
    text = (report / "report.md").read_text()
    assert LOSS_SCALE_NOTE in text and "12 runs: 4 arms" in text and "3 paired seed(s) [0, 1, 2]" in text
    enh = NUMBERS["enh"]
    mean, std = 100 * np.mean(enh["test_loss"]), 100 * np.std(enh["test_loss"], ddof=1)
    rows = _section(text, "ENH + CCE")
    assert [r.split("|")[1].strip() for r in rows[:3]] == ["enh-cce-r0", "enh-cce-r1", "enh-cce-r2"]
    assert f"| {100 * enh['test_loss'][2]:.2f} |" in rows[2]
    assert f"{mean:.2f} ± {std:.2f}" in rows[3]
    # lowest loss ENH, highest accuracy CXR: the headline says both and that they disagree
    headline = text.split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert "Lowest mean test loss: CXR+CCE" not in headline
    assert re.search(r"Lowest mean test loss: ENH\+(S)?CCE: test loss " + f"{mean:.2f}", headline)
    assert re.search(r"Highest mean test accuracy: CXR\+(S)?CCE", headline) and "disagree" in headline
    # CCE = SCCE on every seed: one paired row, CXR against ENH, and a note naming the twins
    paired = _section(text, "Paired comparisons (a - b, same seeds, same model)")
    assert len(paired) == 1
    d = paired_comparison(NUMBERS["cxr"]["test_loss"], enh["test_loss"])
    cells = [cell.strip() for cell in paired[0].split("|")[1:-1]]
    assert cells[:2] == ["cxr+cce", "enh+cce"] and cells[-1] == "0 of 3"
    assert cells[2] == f"{100 * d['mean_diff']:.2f} ({100 * d['ci95'][0]:.2f}, {100 * d['ci95'][1]:.2f})"
    assert cells[3] == f"{d['p_value']:.3g}"
    assert "cxr+cce = cxr+scce" in text and "enh+cce = enh+scce" in text
    assert "final weights are bit-identical for seeds [0, 1, 2]" in text
    assert "Models are compared side by side" not in text  # one model: no models table


def test_terminal_summary(report):
    first, second, third = summary_lines(report)
    mean = 100 * np.mean(NUMBERS["enh"]["test_loss"])
    assert first.startswith("Lowest mean test loss: ENH+") and f"at {mean:.2f} (loss x 100)" in first
    assert "highest accuracy: CXR+" in first and "loss and accuracy disagree" in first
    d = paired_comparison(NUMBERS["cxr"]["test_loss"], NUMBERS["enh"]["test_loss"])
    assert second.startswith("CXR+CCE - ENH+CCE") and f"{100 * d['mean_diff']:+.2f} points" in second
    assert "paired over 3 seeds" in second
    assert third == "CXR+CCE and CXR+SCCE trained bit-identical weights on 3 of 3 paired seeds: the losses coincide."


def test_no_twins_no_disagreement(tmp_path):
    numbers = {"cxr": dict(NUMBERS["cxr"]), "enh": dict(NUMBERS["enh"])}
    numbers["enh"]["test_accuracy"] = [0.90, 0.91, 0.89]  # ENH best on loss and on accuracy
    write_report(_results(twins=False, numbers=numbers), tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "It also has the highest mean test accuracy (tied with ENH+SCCE)." in text and "disagree" not in text
    assert len(_section(text, "Paired comparisons (a - b, same seeds, same model)")) == 6
    assert "No two arms produced bit-identical weights." in text and " are one arm here" not in text
    with open(tmp_path / "runs.csv", newline="") as handle:
        assert all(row["bit_identical_to"] == "" for row in csv.DictReader(handle))
    lines = summary_lines(tmp_path)
    assert lines[0].endswith("%.") and lines[2] == "No two arms trained bit-identical weights."


def test_two_models_are_compared_side_by_side_not_paired_across(tmp_path):
    write_report(_results(models=("vgg16", "resnet50")), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["comparisons"]) == 12  # six pairs within each model, none across
    assert all(("resnet50" in c["a"]) == ("resnet50" in c["b"]) for c in results["comparisons"])
    text = (tmp_path / "report.md").read_text()
    models = _section(text, "Models")
    assert len(models) == 8 and models[0].startswith("| resnet50 | CXR + CCE |")
    assert "## resnet50: ENH + SCCE" in text and "## ENH + SCCE" in text
    assert len(_section(text, "Paired comparisons (a - b, same seeds, same model)")) == 2


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.split("|")[1:-1]]


def _pm(values, scale=100, digits=2) -> str:
    return f"{scale * np.mean(values):.{digits}f} ± {scale * np.std(values, ddof=1):.{digits}f}"


def test_every_cell_of_every_arm_table(report):
    text = (report / "report.md").read_text()
    for what in ("cxr", "enh"):
        n = NUMBERS[what]
        for loss in ("cce", "scce"):
            rows = _section(text, f"{what.upper()} + {loss.upper()}")
            assert len(rows) == 4
            for k in range(3):
                assert _cells(rows[k]) == [
                    f"{what}-{loss}-r{k}", str(SEEDS[k]), f"{100 * n['val_loss'][k]:.2f}",
                    f"{100 * n['test_loss'][k]:.2f}", f"{100 * n['test_accuracy'][k]:.2f}",
                    f"{100 * n['macro_f1'][k]:.2f}", f"{n['macro_auc_ovr'][k]:.3f}"]
            assert _cells(rows[3]) == [
                "**mean ± std**", "", _pm(n["val_loss"]), _pm(n["test_loss"]), _pm(n["test_accuracy"]),
                _pm(n["macro_f1"]), _pm(n["macro_auc_ovr"], scale=1, digits=3)]


def test_headline_numbers(report):
    headline = (report / "report.md").read_text().split("## Headline", 1)[1].split("\n## ", 1)[0]
    cxr, enh = NUMBERS["cxr"], NUMBERS["enh"]
    lowest = (f"test loss {_pm(enh['test_loss'])}, accuracy "
              f"{_pm(enh['test_accuracy'], digits=1)} %")
    best = f"test loss {_pm(cxr['test_loss'])}, accuracy {_pm(cxr['test_accuracy'], digits=1)} %"
    assert lowest in headline and best in headline


def test_paired_row_accuracy_cells(report):
    text = (report / "report.md").read_text()
    (row,) = _section(text, "Paired comparisons (a - b, same seeds, same model)")
    d = paired_comparison(NUMBERS["cxr"]["test_accuracy"], NUMBERS["enh"]["test_accuracy"])
    assert _cells(row)[4] == f"{100 * d['mean_diff']:.2f} ({100 * d['ci95'][0]:.2f}, {100 * d['ci95'][1]:.2f})"


def test_terminal_summary_numbers_and_audit(report):
    first, second, _ = summary_lines(report)
    cxr, enh = NUMBERS["cxr"], NUMBERS["enh"]
    assert f"with accuracy {100 * np.mean(enh['test_accuracy']):.1f} %" in first
    assert f"({100 * np.mean(cxr['test_accuracy']):.1f} %): loss and accuracy disagree" in first
    d = paired_comparison(cxr["test_loss"], enh["test_loss"])
    assert f"95 % CI {100 * d['ci95'][0]:+.2f} to {100 * d['ci95'][1]:+.2f}" in second
    audit = {"verdicts": {"cxr": {"flagged": True, "inconclusive": False, "findings": [{"kind": "confounded"}]},
                          "enh": {"flagged": False, "inconclusive": True, "findings": []}}}
    lines = summary_lines(report, audit)
    assert lines[0] == first and lines[1].endswith("the losses coincide.")
    assert lines[2] == ("Shortcut audit: CXR FLAGGED: confounded by source; ENH inconclusive: the reference "
                        "model did not learn. Verdicts and the occlusion curve in audit/audit.md.")


def test_split_and_provenance_from_the_store(store, tmp_path):
    from phasefeat.io.store import open_store

    with open_store(store) as s:
        labels, names, attrs = s.labels.copy(), s.class_names, s.provenance
    order = np.random.default_rng(0).permutation(len(labels))
    parts = {"train": order[:len(order) // 2], "val": order[len(order) // 2:3 * len(order) // 4],
             "test": order[3 * len(order) // 4:]}
    (tmp_path / "split.json").write_text(json.dumps({k: v.tolist() for k, v in parts.items()} | {"grouped": False}))
    results = [dict(r, class_names=names, backend="jax") for r in _results()]  # the backend the runs recorded
    write_report(results, tmp_path, store_path=store)
    text = (tmp_path / "report.md").read_text()
    from importlib import metadata

    assert f"* trained with Keras {metadata.version('keras')} on the jax backend; store libraries: " in text
    rows = _section(text, "Data split")
    for c, name in enumerate(names):
        assert _cells(rows[c]) == [name, *(str(int((labels[parts[p]] == c).sum())) for p in ("train", "val", "test"))]
    assert _cells(rows[-1]) == ["**all**", *(str(len(parts[p])) for p in ("train", "val", "test"))]
    assert "could not be grouped by patient" in text
    assert f"params digest `{attrs['params_digest'][:16]}`" in text and f"preset `{attrs['preset']}`" in text
    assert f"{len(labels)} images, classes {', '.join(names)}" in text


def test_two_model_table_cells(tmp_path):
    write_report(_results(models=("vgg16", "resnet50")), tmp_path)
    rows = _section((tmp_path / "report.md").read_text(), "Models")
    n = NUMBERS["enh"]
    assert _cells(rows[2]) == ["resnet50", "ENH + CCE", _pm(n["test_loss"]), _pm(n["test_accuracy"]),
                               f"{np.mean(n['macro_auc_ovr']):.3f}"]


def test_twins_on_some_seeds_only_are_not_one_arm(tmp_path):
    """CCE = SCCE on seeds 1 and 2 but not on seed 0: they stay two arms, with the seeds named."""
    results = _results(twins=False)
    for r in results:
        if r["seed"] in (1, 2):
            r["weights_sha256"] = hashlib.sha256(f"{r['input']}-{r['seed']}".encode()).hexdigest()
    write_report(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert len(_section(text, "Paired comparisons (a - b, same seeds, same model)")) == 6
    assert " are one arm here" not in text
    assert "cxr+cce and cxr+scce: final weights are bit-identical for seeds [1, 2]" in text


@pytest.mark.parametrize("seeds", [1, 2])
def test_few_seeds(tmp_path, seeds):
    """Two seeds give a standard deviation; one gives none (n/a, shown as nan), and no warning."""
    results = [r for r in _results() if r["seed"] < seeds]
    write_report(results, tmp_path)
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]["enh+cce"]["test_loss"]
    values = NUMBERS["enh"]["test_loss"][:seeds]
    if seeds == 1:
        assert summary["mean"] == values[0] and np.isnan(summary["std"])
    else:
        assert summary["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-15)


def test_terminal_summary_of_two_models(tmp_path):
    write_report(_results(models=("vgg16", "resnet50")), tmp_path)
    first, second, third = summary_lines(tmp_path)
    assert first.startswith("Lowest mean test loss: ") and "CXR" in second and "ENH" in second
    assert third.endswith("the losses coincide.")


def test_arms_compared_on_the_seeds_they_share(tmp_path):
    """An arm that lacks a seed (an interrupted grid) is compared with the others on the common seeds."""
    results = [r for r in _results() if not (r["input"] == "enh" and r["loss"] == "scce" and r["seed"] == 2)]
    write_report(results, tmp_path)
    pairs = {(c["a"], c["b"]): c for c in json.loads((tmp_path / "results.json").read_text())["comparisons"]}
    assert pairs[("enh+cce", "enh+scce")]["seeds"] == [0, 1]
    assert pairs[("cxr+cce", "enh+cce")]["seeds"] == [0, 1, 2]


def test_equal_accuracy_is_no_disagreement(tmp_path):
    """ENH has the lower loss and exactly CXR's accuracy: nothing disagrees."""
    numbers = {"cxr": dict(NUMBERS["cxr"]), "enh": dict(NUMBERS["enh"])}
    numbers["enh"]["test_accuracy"] = list(NUMBERS["cxr"]["test_accuracy"])
    write_report(_results(numbers=numbers), tmp_path)
    assert "disagree" not in (tmp_path / "report.md").read_text()
    assert "disagree" not in summary_lines(tmp_path)[0]


def test_headline_spread_of_ten_points(tmp_path):
    """Accuracies 50/60/70 %: the headline's ± is the standard deviation over seeds, 10.0 points."""
    numbers = {"cxr": dict(NUMBERS["cxr"]), "enh": dict(NUMBERS["enh"])}
    numbers["enh"]["test_accuracy"] = [0.5, 0.6, 0.7]
    write_report(_results(numbers=numbers), tmp_path)
    headline = (tmp_path / "report.md").read_text().split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert _pm(numbers["enh"]["test_accuracy"], digits=1) == "60.0 ± 10.0"
    assert "Lowest mean test loss: ENH+CCE: test loss" in headline and "accuracy 60.0 ± 10.0 %" in headline


@pytest.mark.parametrize("missing", [("cxr", "cce"), ("enh", "cce")])
def test_summary_pairs_inputs_under_one_loss_when_an_arm_is_missing(tmp_path, missing):
    """Without CXR + CCE (ENH + CCE) a pair that differs in both input and loss comes before the
    pair under one loss; the summary's input comparison is the one under a single loss."""
    write_report([r for r in _results(twins=False) if (r["input"], r["loss"]) != missing], tmp_path)
    diagonal = {"cxr": ("cxr+scce", "enh+cce"), "enh": ("cxr+cce", "enh+scce")}[missing[0]]
    comparisons = json.loads((tmp_path / "results.json").read_text())["comparisons"]
    assert diagonal in [(c["a"], c["b"]) for c in comparisons]
    second = summary_lines(tmp_path)[1]
    d = paired_comparison(NUMBERS["cxr"]["test_loss"], NUMBERS["enh"]["test_loss"])
    assert second.startswith("CXR+SCCE - ENH+SCCE: test loss") and f"{100 * d['mean_diff']:+.2f} points" in second


def test_twins_in_a_three_loss_grid_list_each_pair_once(tmp_path):
    """Losses cce, focal, scce with cce = scce: four distinct arms, so six paired rows, each pair once
    (focal - scce is focal - cce again, in the other order)."""
    def sha(*parts):
        return hashlib.sha256("-".join(map(str, parts)).encode()).hexdigest()

    results = [_run("vgg16", what, loss, k, NUMBERS, sha(what, k) if loss != "focal" else sha(what, k, loss))
               for what in ("cxr", "enh") for loss in ("cce", "focal", "scce") for k in range(3)]
    write_report(results, tmp_path)
    rows = _section((tmp_path / "report.md").read_text(), "Paired comparisons (a - b, same seeds, same model)")
    pairs = [frozenset(_cells(row)[:2]) for row in rows]
    canonical = [frozenset(p.replace("+scce", "+cce") for p in pair) for pair in pairs]
    assert len(rows) == 6 and len(set(canonical)) == 6


def test_every_figure_is_shown_in_the_report(report):
    text = (report / "report.md").read_text()
    figures = sorted(p.name for p in report.glob("*.png"))
    assert figures and all(f"]({name})" in text for name in figures)


def test_an_unreadable_store_leaves_provenance_out(tmp_path):
    """The store moved or damaged after training: the report is written without its provenance,
    and the split, which it cannot count by class, is referred to."""
    junk = tmp_path / "gone.h5"
    junk.write_bytes(b"not an HDF5 file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "split.json").write_text(json.dumps({"train": [0, 1], "val": [2], "test": [3], "grouped": False}))
    write_report(_results(), out, store_path=junk)  # a split, but no labels to count it with
    text = (out / "report.md").read_text()
    assert "* store `" not in text and "* features:" not in text and "The split is in `split.json`." in text
    assert "* trained: 12 run(s) on a device not recorded (an earlier version)" in text


def test_metrics_lines_table_holds_every_number():
    from trainer.metrics import classification_metrics
    from trainer.report import metrics_lines

    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.eye(3)[[0, 0, 1, 1, 1, 0]] * 0.8 + 0.2 / 3
    metrics = classification_metrics(y, p, ["normal", "pneumonia", "covid"])
    lines = metrics_lines(metrics)
    assert lines[0].startswith("6 test images: accuracy 66.7 %")
    row = {line.split()[0]: line.split() for line in lines[3:6]}
    assert row["normal"][1:4] == ["3", "66.7", "%"] and row["covid"][1:4] == ["1", "0.0", "%"]
    assert [[int(v) for v in line.split()[1:]] for line in lines[-3:]] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_finite_json_writes_null_for_undefined_numbers():
    from trainer.report import finite_json

    text = finite_json({"v": float("nan"), "ci": (np.float64(0.5), float("inf")), "n": np.int64(3),
                        "a": np.array([1.0, np.nan])})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"v": None, "ci": [0.5, None], "n": 3, "a": [1.0, None]}


def test_learning_curves_use_the_tables_scale_and_whole_epochs(tmp_path, monkeypatch):
    from trainer import report_figures

    figures = []
    monkeypatch.setattr(report_figures, "_save", lambda fig, path: figures.append(fig) or path.name)
    results = _results()
    for r in results:  # each run's own curve, so that the plotted one says which run it is
        r["history"] = {"loss": [r["val_loss"] + 0.5, r["val_loss"] + 0.2, r["val_loss"]],
                        "val_loss": [r["val_loss"] + 0.6, r["val_loss"] + 0.3, r["val_loss"]]}
    arms = sorted({report_figures.arm_of(r) for r in results})
    report_figures._learning_curves(results, arms, tmp_path)
    ax = figures[0].axes[0]
    # the best run is the arm's lowest validation loss: CXR + CCE's seed 1 (0.43 of 0.44, 0.43, 0.48)
    best = min((r for r in results if (r["input"], r["loss"]) == ("cxr", "cce")), key=lambda r: r["val_loss"])
    assert arms[0][1:] == ("cxr", "cce") and best["seed"] == 1
    assert report_figures.best_run(results, arms[0]) is best
    thick = [line for line in ax.lines if line.get_linewidth() == 2]
    assert np.allclose(thick[0].get_ydata(), 100 * np.asarray(best["history"]["loss"]))
    assert "x 100" in ax.get_ylabel()
    figures[0].canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def _predictions(out, results, learned_inputs):
    """predictions.npz for every run: right answers for ``learned_inputs``, uniform guesses otherwise."""
    y = np.array([0, 1, 2] * 10)
    for r in results:
        folder = out / "runs" / r["run"]
        folder.mkdir(parents=True, exist_ok=True)
        p = np.eye(3)[y] * 0.9 + 0.1 / 3 if r["input"] in learned_inputs else np.full((30, 3), 1 / 3)
        np.savez(folder / "predictions.npz", indices=np.arange(30), labels=y, probabilities=p.astype(np.float32))


def test_the_headline_does_not_rank_arms_that_did_not_learn(tmp_path):
    results = _results()
    _predictions(tmp_path, results, learned_inputs=())
    write_report(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    head = text.split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert "**The arms did not learn**" in head and "Lowest mean test loss" not in head
    assert summary_lines(tmp_path)[0].startswith("The arms did not learn: no arm is above chance")
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert {k: v["learned"] for k, v in summary.items()} == dict.fromkeys(summary, False)


def test_the_headline_ranks_only_the_arms_that_learned(tmp_path):
    results = _results()
    _predictions(tmp_path, results, learned_inputs=("enh",))
    write_report(results, tmp_path)
    head = (tmp_path / "report.md").read_text().split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert "Lowest mean test loss: ENH+" in head and "disagree" not in head  # CXR's accuracy is left out
    assert "**Not above chance** (the audit's rule), so left out of the lines above: CXR+CCE, CXR+SCCE" in head
    first = summary_lines(tmp_path)[0]
    assert first.startswith("Lowest mean test loss: ENH+") and first.endswith("Not above chance: CXR+CCE, CXR+SCCE.")


def test_without_predictions_nothing_is_claimed_about_learning(report):
    summary = json.loads((report / "results.json").read_text())["summary"]
    assert all(v["learned"] is None for v in summary.values())


def test_paired_accuracy_intervals_stay_within_what_is_possible(tmp_path):
    a, b = [1.0, 0.5], [0.0, 0.5]
    plain = paired_comparison(a, b)
    assert plain["ci95"][0] < -1 and plain["ci95"][1] > 1  # two seeds: the t interval reaches past +-1
    assert paired_comparison(a, b, bounds=(-1.0, 1.0))["ci95"] == [-1.0, 1.0]
    numbers = {"cxr": dict(NUMBERS["cxr"]), "enh": dict(NUMBERS["enh"])}
    numbers["cxr"]["test_accuracy"], numbers["enh"]["test_accuracy"] = [1.0, 0.5, 0.2], [0.0, 0.5, 0.9]
    write_report(_results(twins=False, numbers=numbers), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    for c in results["comparisons"]:
        low, high = c["test_accuracy"]["ci95"]
        assert -1.0 <= low <= high <= 1.0
    assert any(c["test_accuracy"]["ci95"] == [-1.0, 1.0] for c in results["comparisons"])


def test_a_one_run_grid_writes_its_report(tmp_path):
    """--inputs cxr --losses cce --repeats 1: one run, no comparison, a report all the same."""
    one = [r for r in _results() if r["run"] == "cxr-cce-r0"]
    write_report(one, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "1 runs: 1 arms (CXR + CCE) x 1 paired seed(s)" in text and "| normal |" not in text
    assert _section(text, "Paired comparisons (a - b, same seeds, same model)") == []
    headline = _headline(tmp_path)  # one arm: ranked alone, nothing compared, no interval claimed
    assert headline.strip().startswith(f"* Lowest mean test loss: CXR+CCE: test loss {100 * NUMBERS['cxr']['test_loss'][0]:.2f}")
    assert "It also has the highest mean test accuracy." in headline
    assert "interval" not in headline and "seed-to-seed" not in headline


def test_three_twin_arms_are_one_arm_in_the_comparisons(tmp_path):
    """cce, scce and cce_ls bit-identical on every seed: CXR vs ENH is compared once, not three times,
    with the keys as a JSON reader returns them (equal strings, not the same objects)."""
    results = []
    for r in _results():
        if r["loss"] == "cce":
            extra = json.loads(json.dumps({**r, "loss": "cce_ls", "run": r["run"].replace("cce", "cce_ls")}))
            results += [r, extra]
        else:
            results.append(r)
    write_report(results, tmp_path)
    rows = _section((tmp_path / "report.md").read_text(), "Paired comparisons (a - b, same seeds, same model)")
    assert len(rows) == 1 and "cxr+" in rows[0] and "enh+" in rows[0]


def _headline(out) -> str:
    return (out / "report.md").read_text().split("## Headline", 1)[1].split("\n## ", 1)[0]


def test_the_headline_names_the_pairs_that_differ_beyond_the_spread(report):
    """Twins (CCE = SCCE) are one arm; of the distinct pairs, only those whose paired interval
    excludes 0 are named, with the measure that does."""
    cxr, enh = NUMBERS["cxr"], NUMBERS["enh"]
    loss, accuracy = (paired_comparison(cxr[k], enh[k]) for k in ("test_loss", "test_accuracy"))
    which = [name for name, d in (("test loss", loss), ("accuracy", accuracy))
             if d["ci95"][0] > 0 or d["ci95"][1] < 0]
    assert which == ["test loss"]  # ENH's loss is lower on every seed; the accuracies overlap
    assert ("* **Beyond the seed-to-seed spread** (paired 95 % interval excludes 0): CXR+CCE vs ENH+CCE "
            "(test loss). Other differences lie within it") in _headline(report)
    assert "No two arms differ" not in summary_lines(report)[0]


def test_the_headline_says_plainly_when_no_pair_differs_beyond_its_interval(tmp_path):
    """The headline ranked arms whose paired difference was -4.68 (95 % CI -142 to 133) without a word."""
    numbers = {"cxr": dict(NUMBERS["cxr"]), "enh": dict(NUMBERS["enh"])}
    numbers["enh"]["test_loss"] = [0.50, 0.41, 0.45]  # mean 0.453 < CXR's 0.46, seed to seed either way
    numbers["enh"]["test_accuracy"] = [0.85, 0.80, 0.82]
    for key in ("test_loss", "test_accuracy"):
        ci = paired_comparison(NUMBERS["cxr"][key], numbers["enh"][key])["ci95"]
        assert ci[0] < 0 < ci[1]
    write_report(_results(numbers=numbers), tmp_path)
    headline = _headline(tmp_path)
    assert "Lowest mean test loss: ENH+CCE" in headline
    assert ("* **No pair of arms differs beyond its 95 % interval** (paired over seeds, test loss and accuracy): "
            "the ranking above lies within the seed-to-seed spread and does not say which arm is better.") in headline
    assert summary_lines(tmp_path)[0].endswith("No two arms differ beyond the seed-to-seed spread.")


def test_the_headline_of_one_seed_says_there_is_no_interval(tmp_path):
    write_report([r for r in _results() if r["seed"] == 0], tmp_path)
    assert "With one seed per arm there is no interval: the ranking above may be seed-to-seed noise" \
        in _headline(tmp_path)
    assert "No two arms differ" not in summary_lines(tmp_path)[0]


AUDIT = {"verdicts": {
    "cxr": {"flagged": True, "inconclusive": False, "headline": "the CXR model still classifies with 81% of the "
            "image blacked out",
            "findings": [{"kind": "confounded", "text": "x"}, {"kind": "source", "text": "y"}]},
    "enh": {"flagged": False, "inconclusive": False, "headline": "no shortcut found by these checks",
            "findings": [{"kind": "transfer", "text": "z"}]}}}


def test_the_headline_states_the_audits_verdict_per_input(tmp_path):
    write_report(_results(), tmp_path, audit=AUDIT)
    headline = _headline(tmp_path)
    assert ("* **Shortcut audit, CXR**: FLAGGED: confounded by source; also tells the image's source apart: the "
            "CXR model still classifies with 81% of the image blacked out (section Shortcut audit below).") in headline
    assert ("* **Shortcut audit, ENH**: not flagged, but falls on an unseen source: no shortcut found by these "
            "checks (section Shortcut audit below).") in headline
    write_report(_results(), tmp_path)
    assert "Shortcut audit" not in _headline(tmp_path)


def test_the_terminal_summary_says_what_other_findings_are():
    """It said "ENH other findings"."""
    from trainer.audit_report import summary_line

    line = summary_line(AUDIT)
    assert "other findings" not in line
    assert line.startswith("Shortcut audit: CXR FLAGGED: confounded by source; also tells the image's source "
                           "apart; ENH not flagged, but falls on an unseen source.")


def test_the_audit_section_explains_itself_without_a_path_into_the_project(tmp_path):
    from trainer.audit_report import READING_GUIDE, audit_markdown

    record = {"store": "s.h5", "inputs": ["cxr"], "repeats": 2, "seed": 0, "occlude_fractions": [0.9],
              "bootstrap": 1000, "margin": 0.1, "verdicts": {}, "class_source_table": [[1]],
              "class_names": ["a"], "source_names": ["x"], "cramers_v": None, "results": {}}
    lines = audit_markdown(record)
    assert READING_GUIDE[0] in lines and "`docs/shortcut-audit.md`" not in "\n".join(lines)
    assert "docs/shortcut-audit.md in the phasefeat source" in READING_GUIDE[0]


def test_figures_are_drawn_again_only_when_what_they_show_changed(tmp_path, monkeypatch):
    """A rerun that reuses every run keeps its figures; new results or predictions, a figure changed or
    missing, a damaged record or other drawing code draw them again."""
    from trainer import report as report_module
    from trainer import report_figures

    drawn = []

    def counting(results, out):
        drawn.append(len(results))
        return report_figures.draw_figures(results, out)

    monkeypatch.setattr(report_module, "draw_figures", counting)

    def cce(numbers=NUMBERS):  # two arms: each drawing costs seconds
        return [r for r in _results(numbers=numbers) if r["loss"] == "cce"]

    def draws(results=None) -> int:
        before = len(drawn)
        write_report(cce() if results is None else results, tmp_path)
        return len(drawn) - before

    assert draws() == 1
    page = (tmp_path / "report.md").read_text()
    assert draws() == 0 and (tmp_path / "report.md").read_text() == page  # the same names and captions
    (tmp_path / "per_seed_losses.png").write_bytes(b"not the figure")
    assert draws() == 1 and (tmp_path / "per_seed_losses.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "learning_curves.png").unlink()
    assert draws() == 1 and (tmp_path / "learning_curves.png").exists()
    numbers = json.loads(json.dumps(NUMBERS))
    numbers["enh"]["val_loss"][0] = 0.2  # another best run
    assert draws(cce(numbers)) == 1 and draws() == 1
    for r in cce():  # predictions appear: the ROC curves can be drawn
        (tmp_path / "runs" / r["run"]).mkdir(parents=True)
        np.savez(tmp_path / "runs" / r["run"] / "predictions.npz", labels=np.array([0, 1, 2, 0]),
                 probabilities=np.eye(3)[[0, 1, 2, 1]])
    assert draws() == 1 and "roc_curves.png" in (tmp_path / "report.md").read_text()
    np.savez(tmp_path / "runs" / "cxr-cce-r1" / "predictions.npz", labels=np.array([0, 1, 2, 0]),
             probabilities=np.eye(3)[[0, 1, 2, 0]])
    assert draws() == 1 and draws() == 0
    (tmp_path / "figures.json").write_text("{")
    assert draws() == 1 and draws() == 0
    other = tmp_path / "other_drawing_code.py"
    other.write_text(Path(report_figures.__file__).read_text() + "\n# changed\n")
    monkeypatch.setattr(report_figures, "__file__", str(other))
    assert draws() == 1 and draws() == 0
