"""Results of a grid: runs.csv, results.json, report.md with the study's tables and honest statistics, figures."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np

__all__ = ["write_report", "paired_comparison", "summary_lines"]

COLUMNS = ("run", "input", "loss", "seed", "val_loss", "test_loss", "test_cross_entropy",
           "test_accuracy", "macro_f1", "macro_auc_ovr", "ece", "epochs_run", "weights_sha256",
           "bit_identical_to")


def paired_comparison(a, b) -> dict:
    """Mean paired difference a - b with a 95 % t confidence interval and a paired t-test."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "mean_diff": mean, "ci95": [float("nan")] * 2, "p_value": float("nan")}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    if sd == 0:  # identical differences: the t statistic is undefined, the answer is not
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return {"n": n, "mean_diff": mean, "ci95": [mean - half, mean + half], "p_value": p}


def _rows(results):
    by_seed = {}
    for r in results:
        by_seed.setdefault((r["input"], r["seed"]), []).append(r)
    rows = []
    for r in results:
        twins = [o["loss"] for o in by_seed[(r["input"], r["seed"])]
                 if o is not r and o["weights_sha256"] == r["weights_sha256"]]
        m = r["metrics"]
        rows.append({"run": r["run"], "input": r["input"], "loss": r["loss"], "seed": r["seed"],
                     "val_loss": r["val_loss"], "test_loss": r["test_loss"],
                     "test_cross_entropy": r["test_cross_entropy"], "test_accuracy": r["test_accuracy"],
                     "macro_f1": m["macro_f1"], "macro_auc_ovr": m["macro_auc_ovr"], "ece": m["ece"],
                     "epochs_run": r["epochs_run"], "weights_sha256": r["weights_sha256"],
                     "bit_identical_to": ";".join(twins)})
    return rows


def _figures(results, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phasefeat.figures import atomic_savefig

    arms = sorted({(r["input"], r["loss"]) for r in results})
    written = []
    fig, axes = plt.subplots(1, len(arms), figsize=(4 * len(arms), 3.2), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        best = min((r for r in results if (r["input"], r["loss"]) == arm), key=lambda r: r["val_loss"])
        for key, style in (("loss", "-"), ("val_loss", "--")):
            ax.plot(best["history"][key], style, label=key)
        ax.set_title(f"{arm[0].upper()} + {arm[1].upper()} (best run, seed {best['seed']})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(atomic_savefig(fig, out / "learning_curves.png").name)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(arms), figsize=(3.4 * len(arms), 3.2), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        best = min((r for r in results if (r["input"], r["loss"]) == arm), key=lambda r: r["val_loss"])
        cm = np.asarray(best["metrics"]["confusion_matrix"])
        ax.imshow(cm, cmap="Blues")
        names = best["class_names"]
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_title(f"{arm[0].upper()} + {arm[1].upper()}", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    written.append(atomic_savefig(fig, out / "confusion_matrices.png").name)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, arm in enumerate(arms):
        runs = sorted((r for r in results if (r["input"], r["loss"]) == arm), key=lambda r: r["seed"])
        ax.plot([r["seed"] for r in runs], [100 * r["test_loss"] for r in runs], "o-",
                label=f"{arm[0].upper()} + {arm[1].upper()}", alpha=0.8, markersize=6 - k)
    ax.set_xlabel("seed (paired across arms)")
    ax.set_ylabel("test loss (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(atomic_savefig(fig, out / "per_seed_losses.png").name)
    plt.close(fig)
    return written


def write_report(results: list[dict], out) -> Path:
    """Write runs.csv, results.json, report.md and figures into ``out``; returns report.md."""
    out = Path(out)
    rows = _rows(results)
    with open(out / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    arms = sorted({(r["input"], r["loss"]) for r in rows})
    summary, comparisons = {}, []
    for arm in arms:
        runs = sorted((r for r in rows if (r["input"], r["loss"]) == arm), key=lambda r: r["seed"])
        vals = {k: np.array([r[k] for r in runs]) for k in ("val_loss", "test_loss", "test_accuracy")}
        summary["+".join(arm)] = {k: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1
                                      else float("nan")} for k, v in vals.items()}
    for a, b in itertools.combinations(arms, 2):
        ra = {r["seed"]: r for r in rows if (r["input"], r["loss"]) == a}
        rb = {r["seed"]: r for r in rows if (r["input"], r["loss"]) == b}
        seeds = sorted(set(ra) & set(rb))
        entry = {"a": "+".join(a), "b": "+".join(b), "seeds": seeds}
        for key in ("test_loss", "val_loss", "test_accuracy"):
            entry[key] = paired_comparison([ra[s][key] for s in seeds], [rb[s][key] for s in seeds])
        entry["bit_identical_seeds"] = [s for s in seeds if ra[s]["weights_sha256"] == rb[s]["weights_sha256"]]
        comparisons.append(entry)
    (out / "results.json").write_text(json.dumps(
        {"runs": rows, "summary": summary, "comparisons": comparisons}, indent=1, default=float))
    figures = _figures(results, out)
    lines = ["# Loss comparison report", "",
             f"{len(rows)} runs: {len(arms)} arms x {len(rows) // max(len(arms), 1)} paired seeds. "
             "Losses are mean cross-entropy x 100, as in the study's tables.", ""]
    for arm in arms:
        runs = sorted((r for r in rows if (r["input"], r["loss"]) == arm), key=lambda r: r["seed"])
        lines += [f"## {arm[0].upper()} + {arm[1].upper()}", "",
                  "| run | seed | val loss % | test loss % | test accuracy % |", "|---|---:|---:|---:|---:|"]
        for r in runs:
            lines.append(f"| {r['run']} | {r['seed']} | {100 * r['val_loss']:.2f} | {100 * r['test_loss']:.2f} | "
                         f"{100 * r['test_accuracy']:.2f} |")
        s = summary["+".join(arm)]
        lines += [f"| **average** | | {100 * s['val_loss']['mean']:.2f} ± {100 * s['val_loss']['std']:.2f} | "
                  f"{100 * s['test_loss']['mean']:.2f} ± {100 * s['test_loss']['std']:.2f} | "
                  f"{100 * s['test_accuracy']['mean']:.2f} |", ""]
    lines += ["## Paired comparisons (a - b, same seeds)", "",
              "| a | b | test loss diff % (95 % CI) | p (paired t) | accuracy diff % | bit-identical seeds |",
              "|---|---|---|---:|---:|---|"]
    for c in comparisons:
        t, acc = c["test_loss"], c["test_accuracy"]
        lines.append(f"| {c['a']} | {c['b']} | {100 * t['mean_diff']:.2f} ({100 * t['ci95'][0]:.2f}, "
                     f"{100 * t['ci95'][1]:.2f}) | {t['p_value']:.3g} | {100 * acc['mean_diff']:.2f} | "
                     f"{len(c['bit_identical_seeds'])} of {len(c['seeds'])} |")
    lines += ["", "## Bit identity", ""]
    for c in comparisons:
        if c["bit_identical_seeds"]:
            lines.append(f"* {c['a']} and {c['b']}: final weights are bit-identical for seeds "
                         f"{c['bit_identical_seeds']}, so every difference between them is exactly zero there: "
                         "the two losses are the same function of one-hot labels.")
    if not any(c["bit_identical_seeds"] for c in comparisons):
        lines.append("* No two arms produced bit-identical weights.")
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def summary_lines(out, audit: dict | None = None) -> list[str]:
    """Three plain sentences about a finished grid, from its results.json.

    With an ``audit`` record (:func:`trainer.audit.run_audit`) the third sentence is its verdict.
    """
    results = json.loads((Path(out) / "results.json").read_text())
    summary, comparisons = results["summary"], results["comparisons"]
    lines = []
    arms = sorted(summary, key=lambda a: summary[a]["test_loss"]["mean"])
    best = arms[0]
    lines.append(f"Lowest mean test loss: {best.upper()} at {100 * summary[best]['test_loss']['mean']:.2f} % "
                 f"(accuracy {100 * summary[best]['test_accuracy']['mean']:.1f} %), of {len(arms)} arms.")
    for c in comparisons:
        (ia, la), (ib, lb) = c["a"].split("+"), c["b"].split("+")
        if la == lb and ia != ib:
            t = c["test_loss"]
            lines.append(f"{c['a'].upper()} - {c['b'].upper()}: test loss {100 * t['mean_diff']:+.2f} points "
                         f"(95 % CI {100 * t['ci95'][0]:+.2f} to {100 * t['ci95'][1]:+.2f}, paired over "
                         f"{t['n']} seeds).")
            break
    identical = [c for c in comparisons if c["bit_identical_seeds"]]
    if identical:
        c = identical[0]
        lines.append(f"{c['a'].upper()} and {c['b'].upper()} trained bit-identical weights on "
                     f"{len(c['bit_identical_seeds'])} of {len(c['seeds'])} paired seeds: the losses coincide.")
    else:
        lines.append("No two arms trained bit-identical weights.")
    if audit is not None:
        from .audit import summary_line

        lines = [lines[0], lines[-1], summary_line(audit)]
    return lines[:3]
