"""The report's figures (trainer.report_figures), read back from the matplotlib objects drawn.

Each figure is checked for what a reader takes from it: which run each line or panel shows, its
numbers (x 100 as in the tables), which run is marked best, labels, titles and legends, and the
sizes the report page was laid out for.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer import report_figures
from trainer.report_figures import ROC_LEGEND_POINTS, arm_of, best_run, draw_figures

NAMES = ["covid", "normal", "pneumonia"]


def _run(what, loss, seed, val_loss, model="vgg16", sha=None, test_loss=0.5, matrix=((5, 1, 0), (0, 6, 1), (1, 0, 5))):
    run = f"{what}-{loss}-r{seed}" if model == "vgg16" else f"{model}-{what}-{loss}-r{seed}"
    return {"run": run, "model": model, "input": what, "loss": loss, "seed": seed, "class_names": NAMES,
            "val_loss": val_loss, "test_loss": test_loss, "weights_sha256": sha or run,
            "history": {"loss": [val_loss + 0.5, val_loss + 0.25, val_loss + 0.125],
                        "val_loss": [val_loss + 0.4, val_loss + 0.2, val_loss]},
            "metrics": {"confusion_matrix": [list(row) for row in matrix],
                        "per_class": {c: {"auc_ovr": 0.5 + k / 10} for k, c in enumerate(NAMES)}}}


@pytest.fixture
def drawn(monkeypatch):
    figures = {}
    monkeypatch.setattr(report_figures, "_save", lambda fig, path: figures.setdefault(path.name, fig) and path.name)
    return figures


def test_an_arms_key_names_its_model_unless_it_is_vgg16():
    assert report_figures.arm_key(("vgg16", "cxr", "cce")) == "cxr+cce"
    assert report_figures.arm_key(("resnet50", "cxr", "cce")) == "resnet50+cxr+cce"


def test_the_best_run_is_the_lowest_validation_loss_of_its_arm():
    runs = [_run("cxr", "cce", 0, 0.5), _run("cxr", "cce", 1, 0.3), _run("enh", "cce", 2, 0.1),
            _run("cxr", "scce", 3, 0.2)]
    assert best_run(runs, ("vgg16", "cxr", "cce")) is runs[1]
    assert arm_of({"input": "cxr", "loss": "cce"}) == ("vgg16", "cxr", "cce")  # runs of earlier versions


def test_learning_curves_mark_the_best_run_of_each_arm(tmp_path, drawn):
    runs = [_run("cxr", "cce", 0, 0.5), _run("cxr", "cce", 1, 0.25), _run("enh", "cce", 0, 0.375)]
    arms = [("vgg16", "cxr", "cce"), ("vgg16", "enh", "cce")]
    name, caption = report_figures._learning_curves(runs, arms, tmp_path)
    assert (name, caption) == ("learning_curves.png", "Learning curves of every run (thin) with each arm's best "
                                                      "run (thick, lowest validation loss)")
    fig = drawn["learning_curves.png"]
    assert tuple(fig.get_size_inches()) == (8.0, 3.4) and len(fig.axes) == 2
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # whole epochs only
    assert ax.get_title() == "CXR + CCE: every seed, best = seed 1" and ax.title.get_fontsize() == 9
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "loss x 100 (as in the tables)")
    lines = {(line.get_linestyle(), line.get_alpha(), line.get_linewidth(), line.get_color()): line for line in ax.lines}
    assert set(lines) == {("-", 0.3, 1, "C0"), ("--", 0.3, 1, "C1"), ("-", 1.0, 2, "C0"), ("--", 1.0, 2, "C1")}
    best_training, best_validation = lines[("-", 1.0, 2, "C0")], lines[("--", 1.0, 2, "C1")]
    assert list(best_training.get_xdata()) == [1, 2, 3]
    assert np.allclose(best_training.get_ydata(), [75, 50, 37.5]) and np.allclose(best_validation.get_ydata(),
                                                                                [65, 45, 25])
    assert np.allclose(lines[("--", 0.3, 1, "C1")].get_ydata(), [90, 70, 50])
    assert best_training.get_label() == "training (best: cxr-cce-r1)"
    assert best_validation.get_label() == "validation (best: cxr-cce-r1)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training (best: cxr-cce-r1)",
                                                                   "validation (best: cxr-cce-r1)"]
    assert ax.get_legend().get_texts()[0].get_fontsize() == 7
    assert fig.axes[1].get_title() == "ENH + CCE: every seed, best = seed 0"
    assert (len(fig.axes[0].lines), len(fig.axes[1].lines)) == (4, 2)  # each arm's own runs only


def test_another_models_arm_is_named_with_its_model(tmp_path, drawn):
    runs = [_run("cxr", "cce", 0, 0.5, model="resnet50")]
    report_figures._learning_curves(runs, [("resnet50", "cxr", "cce")], tmp_path)
    assert drawn["learning_curves.png"].axes[0].get_title() == "resnet50: CXR + CCE: every seed, best = seed 0"


def test_confusion_matrices_show_the_best_runs_counts(tmp_path, drawn):
    runs = [_run("cxr", "cce", 0, 0.5, matrix=((9, 9, 9), (9, 9, 9), (9, 9, 9))),
            _run("cxr", "cce", 1, 0.25, matrix=((8, 1, 0), (0, 4, 1), (1, 0, 5))),
            _run("enh", "cce", 0, 0.375, matrix=((0, 0, 0), (0, 0, 0), (0, 0, 0)))]
    arms = [("vgg16", "cxr", "cce"), ("vgg16", "enh", "cce")]
    name, caption = report_figures._confusion(runs, arms, tmp_path)
    assert (name, caption) == ("confusion_matrices.png", "Confusion matrices of each arm's best run on the test "
                                                         "split (counts)")
    fig = drawn["confusion_matrices.png"]
    assert tuple(np.round(fig.get_size_inches(), 6)) == (7.2, 3.4) and len(fig.axes) == 2
    ax = fig.axes[0]
    image = ax.images[0]
    assert np.array_equal(image.get_array(), [[8, 1, 0], [0, 4, 1], [1, 0, 5]])
    assert image.get_clim() == (0, 8) and image.get_cmap().name == "Blues"
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert texts[(0, 0)].get_text() == "8" and texts[(0, 0)].get_color() == "white"
    assert texts[(1, 1)].get_text() == "4" and texts[(1, 1)].get_color() == "black"  # 4 is not above half of 8
    assert texts[(0, 1)].get_text() == "1" and texts[(0, 1)].get_color() == "black"
    assert texts[(2, 2)].get_color() == "white" and texts[(2, 2)].get_fontsize() == 8
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES == [t.get_text() for t in ax.get_yticklabels()]
    assert ax.get_xticklabels()[0].get_rotation() == 30 and ax.get_xticklabels()[0].get_fontsize() == 7
    assert ax.get_yticklabels()[0].get_fontsize() == 7
    assert ax.get_title() == "CXR + CCE\ncxr-cce-r1 (seed 1)" and ax.title.get_fontsize() == 9
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert fig.axes[1].images[0].get_clim() == (0, 1)  # an empty matrix still has a scale


def test_per_seed_losses_draw_twins_as_one_line(tmp_path, drawn):
    runs = [_run(what, loss, seed, 0.5, sha=f"{what}{seed}", test_loss=0.1 * seed + (what == "enh") * 0.05)
            for what in ("cxr", "enh") for loss in ("cce", "scce") for seed in (2, 0, 1)]
    arms = sorted({arm_of(r) for r in runs})
    name, caption = report_figures._per_seed(runs, arms, tmp_path)
    assert (name, caption) == ("per_seed_losses.png", "Test loss of every run, by seed")
    fig = drawn["per_seed_losses.png"]
    assert tuple(fig.get_size_inches()) == (6.4, 3.6)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["CXR + CCE = SCCE", "ENH + CCE = SCCE"]
    assert list(ax.lines[0].get_xdata()) == [0, 1, 2] and np.allclose(ax.lines[1].get_ydata(), [5, 15, 25])
    assert [line.get_marker() for line in ax.lines] == ["o", "D"]  # the third arm's marker: the line is the twins'
    assert all(line.get_linestyle() == "-" and line.get_alpha() == 0.85 for line in ax.lines)
    assert list(ax.get_xticks()) == [0, 1, 2]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("seed (paired across arms)", "test loss (cross-entropy x 100)")
    assert ax.get_title() == "Test loss per seed; arms with bit-identical runs share one line"
    assert ax.get_legend().get_texts()[0].get_fontsize() == 8 and ax.title.get_fontsize() == 9


def test_arms_that_are_not_twins_each_get_a_line_and_a_marker(tmp_path, drawn):
    runs = [_run("cxr", f"loss{k:02d}", 0, 0.5) for k in range(17)]
    report_figures._per_seed(runs, sorted({arm_of(r) for r in runs}), tmp_path)
    assert [line.get_marker() for line in drawn["per_seed_losses.png"].axes[0].lines] == list("osD^v<>p" * 2 + "o")


def _predictions(out, run, labels, probabilities):
    (out / "runs" / run).mkdir(parents=True, exist_ok=True)
    np.savez(out / "runs" / run / "predictions.npz", labels=np.asarray(labels), probabilities=np.asarray(probabilities))


def test_roc_curves_of_the_best_runs(tmp_path, drawn):
    runs = [_run(what, "cce", seed, 0.5 - seed / 10) for what in ("cxr", "enh", "mix") for seed in (0, 1)]
    labels = [0, 0, 1, 1, 2, 2]
    p = np.array([[0.9, 0.1, 0], [0.4, 0.6, 0], [0.3, 0.7, 0], [0.2, 0.8, 0], [0.1, 0, 0.9], [0.6, 0, 0.4]])
    for r in runs:
        _predictions(tmp_path, r["run"], labels, p if r["seed"] == 1 else np.full((6, 3), 1 / 3))
    arms = sorted({arm_of(r) for r in runs})
    name, caption = report_figures._roc(runs, arms, tmp_path)
    assert (name, caption) == ("roc_curves.png", "One-vs-rest ROC curves per class of each arm's best run")
    fig = drawn["roc_curves.png"]
    assert tuple(fig.get_size_inches()) == (9.2, 8.0) and len(fig.axes) == 3  # two a row; the fourth panel removed
    ax = fig.axes[0]
    assert ax.get_title() == "CXR + CCE: cxr-cce-r1 (seed 1)" and ax.title.get_fontsize() == 10
    covid = ax.lines[0]
    # covid scores 0.9, 0.6, 0.4, 0.3, 0.2, 0.1 (positives the 1st and 3rd): the curve through each cut
    assert np.allclose(covid.get_xdata(), [0, 0, 0.25, 0.25, 0.5, 0.75, 1])
    assert np.allclose(covid.get_ydata(), [0, 0.5, 0.5, 1, 1, 1, 1])
    assert [line.get_label() for line in ax.lines[:3]] == ["covid (AUC 0.50)", "normal (AUC 0.60)",
                                                          "pneumonia (AUC 0.70)"]
    diagonal = ax.lines[3]
    assert list(diagonal.get_xdata()) == [0, 1] == list(diagonal.get_ydata()) and diagonal.get_linestyle() == ":"
    assert diagonal.get_color() == "grey" and diagonal.get_linewidth() == 1
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("false positive rate (1 - specificity)",
                                                  "true positive rate (sensitivity)")
    legend = ax.get_legend()
    assert legend.get_texts()[0].get_fontsize() == ROC_LEGEND_POINTS == 9 and legend._loc == 4  # lower right


@pytest.mark.parametrize(("labels", "shown"), [([0, 0, 1, 1], ["covid", "normal"]), ([1, 1, 2, 2], ["normal", "pneumonia"])])
def test_a_class_absent_from_the_test_split_has_no_curve(tmp_path, drawn, labels, shown):
    runs = [_run("cxr", "cce", 0, 0.5)]
    _predictions(tmp_path, "cxr-cce-r0", labels, np.full((4, 3), 1 / 3))
    report_figures._roc(runs, [("vgg16", "cxr", "cce")], tmp_path)
    ax = drawn["roc_curves.png"].axes[0]
    assert [line.get_label().split(" ")[0] for line in ax.lines[:-1]] == shown
    assert tuple(drawn["roc_curves.png"].get_size_inches()) == (4.6, 4.0)


def test_without_every_best_runs_predictions_there_is_no_roc_figure(tmp_path, drawn):
    runs = [_run("cxr", "cce", 0, 0.5), _run("enh", "cce", 0, 0.5)]
    _predictions(tmp_path, "enh-cce-r0", [0, 1], np.eye(3)[[0, 1]])
    assert report_figures._roc(runs, sorted({arm_of(r) for r in runs}), tmp_path) is None
    assert "roc_curves.png" not in drawn


def test_draw_figures_writes_each_figure_in_order(tmp_path):
    runs = [_run("cxr", "cce", 0, 0.5), _run("enh", "cce", 0, 0.4)]
    names = [name for name, _ in draw_figures(runs, tmp_path)]
    assert names == ["learning_curves.png", "confusion_matrices.png", "per_seed_losses.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in names)
    for r in runs:
        _predictions(tmp_path, r["run"], [0, 1, 2], np.eye(3))
    assert [name for name, _ in draw_figures(runs, str(tmp_path))][-1] == "roc_curves.png"
    assert (tmp_path / "roc_curves.png").exists() and not list(tmp_path.glob("*.partial"))
