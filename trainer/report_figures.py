"""The report's figures: every learning curve, confusion matrices, per-seed losses, ROC curves.

Every axis is labelled and every title says which run (and seed) it shows; the best run of
an arm is the one with the lowest validation loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["draw_figures", "best_run", "arm_of"]


def arm_of(r) -> tuple[str, str, str]:
    """(model, input, loss) of a run or row; runs of earlier versions are VGG16."""
    return (r.get("model", "vgg16"), r["input"], r["loss"])


def arm_key(arm) -> str:
    """``cxr+cce`` (VGG16) or ``resnet50+cxr+cce``: the arm's key in results.json."""
    return "+".join(arm[1:] if arm[0] == "vgg16" else arm)


def best_run(results, arm):
    """The run of ``arm`` (model, input, loss) with the lowest validation loss."""
    return min((r for r in results if arm_of(r) == arm), key=lambda r: r["val_loss"])


def _name(arm) -> str:
    model, what, loss = arm
    return ("" if model == "vgg16" else f"{model}: ") + f"{what.upper()} + {loss.upper()}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    from phasefeat.tools.figures import atomic_savefig

    fig.tight_layout()
    atomic_savefig(fig, path)
    _pyplot().close(fig)
    return path.name


def _learning_curves(results, arms, out: Path) -> tuple[str, str]:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(arms), figsize=(4 * len(arms), 3.4), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        best = best_run(results, arm)
        for r in (r for r in results if arm_of(r) == arm):
            strong = r is best
            for key, style in (("loss", "-"), ("val_loss", "--")):
                # x 100, as every table of the report (and the study) writes losses
                ax.plot(np.arange(1, len(r["history"][key]) + 1), 100 * np.asarray(r["history"][key]), style,
                        color="C0" if key == "loss" else "C1", alpha=1.0 if strong else 0.3,
                        linewidth=2 if strong else 1,
                        label=f"{'training' if key == 'loss' else 'validation'} (best: {r['run']})"
                        if strong else None)
        ax.set_title(f"{_name(arm)}: every seed, best = seed {best['seed']}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss x 100 (as in the tables)")
        ax.legend(fontsize=7)
    return _save(fig, out / "learning_curves.png"), (
        "Learning curves of every run (thin) with each arm's best run (thick, lowest validation loss)")


def _confusion(results, arms, out: Path) -> tuple[str, str]:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(arms), figsize=(3.6 * len(arms), 3.4), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        best = best_run(results, arm)
        cm = np.asarray(best["metrics"]["confusion_matrix"])
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
        names = best["class_names"]
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        dark = cm.max() / 2
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > dark else "black")
        ax.set_title(f"{_name(arm)}\n{best['run']} (seed {best['seed']})", fontsize=9)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    return _save(fig, out / "confusion_matrices.png"), (
        "Confusion matrices of each arm's best run on the test split (counts)")


def _per_seed(results, arms, out: Path) -> tuple[str, str]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    drawn = {}
    markers = "osD^v<>p"
    for k, arm in enumerate(arms):
        runs = sorted((r for r in results if arm_of(r) == arm), key=lambda r: r["seed"])
        key = tuple(r["weights_sha256"] for r in runs)
        if key in drawn:  # bit-identical twin: say so on the line already drawn
            drawn[key].set_label(drawn[key].get_label() + f" = {arm[2].upper()}")
            continue
        (line,) = ax.plot([r["seed"] for r in runs], [100 * r["test_loss"] for r in runs],
                          marker=markers[k % len(markers)], linestyle="-", label=_name(arm), alpha=0.85)
        drawn[key] = line
    seeds = sorted({r["seed"] for r in results})
    ax.set_xticks(seeds)
    ax.set_xlabel("seed (paired across arms)")
    ax.set_ylabel("test loss (cross-entropy x 100)")
    ax.set_title("Test loss per seed; arms with bit-identical runs share one line", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, out / "per_seed_losses.png"), "Test loss of every run, by seed"


def _roc(results, arms, out: Path) -> tuple[str, str] | None:
    plt = _pyplot()
    curves = []
    for arm in arms:
        best = best_run(results, arm)
        path = out / "runs" / best["run"] / "predictions.npz"
        if not path.exists():
            return None
        with np.load(path) as data:
            curves.append((arm, best, data["labels"], data["probabilities"]))
    # Two panels a row, so that the page (about 1,150 px wide) shows the figure at its own size and
    # the legends stay readable (one row of four shrank them to about 7 px).
    columns = min(2, len(arms))
    rows = -(-len(arms) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.0 * rows), squeeze=False)
    for ax in axes.flat[len(arms):]:
        fig.delaxes(ax)
    for ax, (arm, best, labels, probs) in zip(axes.flat, curves, strict=False):
        for c, name in enumerate(best["class_names"]):
            positive = labels == c
            if positive.all() or not positive.any():
                continue
            order = np.argsort(-probs[:, c], kind="mergesort")
            tp = np.r_[0, np.cumsum(positive[order])] / positive.sum()
            fp = np.r_[0, np.cumsum(~positive[order])] / (~positive).sum()
            auc = best["metrics"]["per_class"][name]["auc_ovr"]
            ax.plot(fp, tp, label=f"{name} (AUC {auc:.2f})")
        ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
        ax.set_xlabel("false positive rate (1 - specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")
        ax.set_title(f"{_name(arm)}: {best['run']} (seed {best['seed']})", fontsize=10)
        ax.legend(fontsize=ROC_LEGEND_POINTS, loc="lower right")
    return _save(fig, out / "roc_curves.png"), "One-vs-rest ROC curves per class of each arm's best run"


#: The ROC legends' size: 12.5 px at the figures' 100 dpi, shown unscaled on the page.
ROC_LEGEND_POINTS = 9


def draw_figures(results, out) -> list[tuple[str, str]]:
    """Draw every figure into ``out``; returns ``(file name, caption)`` pairs."""
    out = Path(out)
    arms = sorted({arm_of(r) for r in results})
    figures = [_learning_curves(results, arms, out), _confusion(results, arms, out),
               _per_seed(results, arms, out)]
    roc = _roc(results, arms, out)
    if roc:
        figures.append(roc)
    return figures
