"""Results of a grid: runs.csv, results.json, report.md (and report.html) with honest statistics.

The report reads without the code: what was compared on which data split, every run,
mean +- std of losses and of accuracy, F1 and AUC, paired differences between arms that
are not bit-identical twins, where the data and software came from, and figures whose
titles say which run they show.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np

from . import report_figures
from .report_figures import arm_key, arm_of, draw_figures
from .report_html import markdown_to_html
from .report_summary import headline, learned_arms, summary_lines

__all__ = ["write_report", "paired_comparison", "summary_lines", "where_trained", "LOSS_SCALE_NOTE"]

COLUMNS = ("run", "model", "input", "loss", "seed", "val_loss", "test_loss", "test_cross_entropy",
           "test_accuracy", "macro_f1", "macro_auc_ovr", "ece", "epochs_run", "weights_sha256",
           "bit_identical_to", "device", "threads")
METRICS = ("val_loss", "test_loss", "test_accuracy", "macro_f1", "macro_auc_ovr")
LOSS_SCALE_NOTE = ("losses are mean cross-entropy x 100, as in the study's tables: 45.60 means a mean "
                   "cross-entropy of 0.456")


def paired_comparison(a, b, bounds: tuple[float, float] | None = None) -> dict:
    """Mean paired difference a - b with a 95 % t confidence interval and a paired t-test.

    ``bounds``: the range the difference can take (accuracy: -1 to 1); the interval is cut
    to it, since a t interval over two or three seeds can reach past what is possible.
    """
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
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"n": n, "mean_diff": mean, "ci95": [low, high], "p_value": p}


def _rows(results):
    by_seed = {}
    for r in results:
        by_seed.setdefault((arm_of(r)[0], r["input"], r["seed"]), []).append(r)
    rows = []
    for r in results:
        twins = [o["loss"] for o in by_seed[(arm_of(r)[0], r["input"], r["seed"])]
                 if o is not r and o["weights_sha256"] == r["weights_sha256"]]
        m = r["metrics"]
        rows.append({"run": r["run"], "model": arm_of(r)[0], "input": r["input"], "loss": r["loss"],
                     "seed": r["seed"],
                     "val_loss": r["val_loss"], "test_loss": r["test_loss"],
                     "test_cross_entropy": r["test_cross_entropy"], "test_accuracy": r["test_accuracy"],
                     "macro_f1": m["macro_f1"], "macro_auc_ovr": m["macro_auc_ovr"], "ece": m["ece"],
                     "epochs_run": r["epochs_run"], "weights_sha256": r["weights_sha256"],
                     "bit_identical_to": ";".join(twins), "device": r.get("device", ""),
                     "threads": r.get("threads") or ""})
    return rows


def where_trained(results) -> str:
    """One line: the devices and thread counts the runs trained with (from each run's record)."""
    counts = {}
    for r in results:
        key = (r.get("device") or "", r.get("backend") or "", r.get("threads") or 0)
        counts[key] = counts.get(key, 0) + 1
    parts = []
    for (device, backend, threads), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        details = [f"{backend} backend"] if backend else []
        details += [f"{threads} thread(s) per run"] if threads else []
        where = f"on {device}" if device else "on a device not recorded (an earlier version)"
        parts.append(f"{n} run(s) {where}" + (f" ({', '.join(details)})" if details else ""))
    return "* trained: " + "; ".join(parts)


def _mean_std(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan")}


def _arm(arm) -> str:
    """``CXR + CCE``, led by the model when it is not VGG16 (``resnet50: CXR + CCE``)."""
    model, what, loss = arm
    return ("" if model == "vgg16" else f"{model}: ") + f"{what.upper()} + {loss.upper()}"


def _summaries(rows, arms) -> dict:
    return {arm_key(arm): {k: _mean_std([r[k] for r in rows if arm_of(r) == arm]) for k in METRICS}
            for arm in arms}


def _comparisons(rows, arms) -> list[dict]:
    """Paired comparisons between arms of the same model (different models differ in too much)."""
    out = []
    for a, b in itertools.combinations(arms, 2):
        if a[0] != b[0]:
            continue
        ra = {r["seed"]: r for r in rows if arm_of(r) == a}
        rb = {r["seed"]: r for r in rows if arm_of(r) == b}
        seeds = sorted(set(ra) & set(rb))
        entry = {"a": arm_key(a), "b": arm_key(b), "seeds": seeds}
        for key in ("test_loss", "val_loss", "test_accuracy"):
            entry[key] = paired_comparison([ra[s][key] for s in seeds], [rb[s][key] for s in seeds],
                                           bounds=(-1.0, 1.0) if key == "test_accuracy" else None)
        entry["bit_identical_seeds"] = [s for s in seeds if ra[s]["weights_sha256"] == rb[s]["weights_sha256"]]
        out.append(entry)
    return out


def _twins(comparisons) -> list[dict]:
    return [c for c in comparisons if c["seeds"] and c["bit_identical_seeds"] == c["seeds"]]


def _distinct(comparisons) -> list[dict]:
    """One comparison per pair of arm *classes*: twins (bit-identical on every seed) count once."""
    twin_of = {}
    for c in _twins(comparisons):
        keep, drop = sorted([c["a"], c["b"]])
        twin_of[drop] = twin_of.get(keep, keep)
    kept, seen = [], set()
    for c in comparisons:
        # Unordered: with losses cce, focal, scce the twin map turns (focal, scce) into (focal, cce).
        pair = tuple(sorted((twin_of.get(c["a"], c["a"]), twin_of.get(c["b"], c["b"]))))
        if pair[0] == pair[1] or pair in seen:
            continue
        seen.add(pair)
        kept.append(c)
    return kept


def _split_table(split: dict | None, labels, names, digests=()) -> list[str]:
    from phasefeat.io.inspect_store import duplicate_summary

    if split is None or labels is None:
        return ["The split is in `split.json`."]
    lines = ["| class | train | validation | test |", "|---|---:|---:|---:|"]
    parts = [np.asarray(split[p], dtype=np.int64) for p in ("train", "val", "test")]
    for c, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(str(int((labels[p] == c).sum())) for p in parts) + " |")
    lines.append("| **all** | " + " | ".join(str(len(p)) for p in parts) + " |")
    if split.get("test_sources"):
        lines += ["", f"External validation: the test part is the source(s) {split['test_sources']}."]
    if split.get("grouped"):
        lines += ["", "The split is grouped by patient: no patient has images in two parts."]
    else:
        lines += ["", "**Warning:** the store has no patient ids, so the split could not be grouped by "
                  "patient; images of one patient may sit in two parts and inflate test results."]
    duplicates = duplicate_summary(digests, labels)
    lines += ["", f"Identical files: {duplicates}." if duplicates else "Identical files: none."]
    return lines


def _keras_version() -> str:
    """The Keras the runs' software holds, without loading it: a driver whose runs train on a Dask
    cluster never imports Keras (seconds of start-up), and may not have it installed at all ("?")."""
    import sys
    from importlib import metadata

    if "keras" in sys.modules:
        return sys.modules["keras"].__version__
    try:
        return metadata.version("keras")
    except metadata.PackageNotFoundError:
        return "?"


def _provenance(store_path, results=()) -> tuple[list[str], dict]:
    """The store's and the software's lines of the report; the backend is the one the runs recorded."""
    if store_path is None:
        return [], {}
    from phasefeat.io.store import StoreError, open_store

    try:
        with open_store(store_path) as store:
            attrs, labels, names = store.provenance, store.labels.copy(), store.class_names
            digests = store.sha256
    except StoreError:
        return [], {}
    versions = attrs.get("library_versions", {})
    from .experiment import keras_backend

    backends = sorted({r["backend"] for r in results if r.get("backend")}) or [keras_backend()]
    lines = [f"* store `{store_path}`: {len(labels)} images, classes {', '.join(names)}",
             f"* features: preset `{attrs.get('preset', '?')}`, computed at {attrs.get('features_at', '?')}, "
             f"params digest `{str(attrs.get('params_digest', '?'))[:16]}`",
             f"* converted by phasefeat {attrs.get('phasefeat_version', '?')} on {attrs.get('device', '?')}, "
             f"{attrs.get('created', '?')}",
             f"* trained with Keras {_keras_version()} on the {', '.join(backends)} backend; "
             f"store libraries: {', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}"]
    return lines, {"labels": labels, "names": names, "sha256": digests}


#: What the report's figures were drawn from (a digest of the runs, their predictions and the drawing
#: code) and each figure's file digest: a rerun that reuses every run does not draw them again.
FIGURES_RECORD = "figures.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _figures_source(results, out: Path) -> str:
    """A digest of everything the figures show: the runs' results and predictions, the code drawing them."""
    import matplotlib

    h = hashlib.sha256(json.dumps(results, sort_keys=True, default=str).encode())
    for r in results:
        predictions = out / "runs" / r["run"] / "predictions.npz"
        h.update(f"{r['run']}:{_sha256(predictions) if predictions.exists() else '-'};".encode())
    h.update(Path(report_figures.__file__).read_bytes())
    h.update(matplotlib.__version__.encode())
    return h.hexdigest()


def _figures(results, out: Path) -> list[tuple[str, str]]:
    """The figures of :func:`draw_figures`: drawn, or those in ``out`` when they were drawn from the
    same runs by the same code and are unchanged since (drawing them costs seconds per report)."""
    from phasefeat.io._atomic import atomic_path

    source = _figures_source(results, out)
    record = out / FIGURES_RECORD
    try:
        earlier = json.loads(record.read_text())
        if earlier["source"] == source and all((out / name).is_file() and _sha256(out / name) == digest
                                               for name, _, digest in earlier["figures"]):
            return [(name, caption) for name, caption, _ in earlier["figures"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: draw them
    figures = draw_figures(results, out)
    with atomic_path(record) as tmp:
        Path(tmp).write_text(json.dumps({"source": source, "figures": [
            [name, caption, _sha256(out / name)] for name, caption in figures]}, indent=1))
    return figures


def write_report(results: list[dict], out, store_path=None, failures=(), appendix=(), audit=None) -> Path:
    """Write runs.csv, results.json, report.md, report.html and figures into ``out``; returns report.md.

    ``failures`` (``{"run", "reason"}`` dicts) are runs of the grid that failed: the report
    names them and their reasons, and its tables hold the runs that finished. ``appendix``:
    markdown lines added at the end of both report.md and report.html (the shortcut audit), whose
    verdict per input (``audit``: the audit's record) the headline states.
    """
    out = Path(out)
    rows = _rows(results)
    with open(out / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    arms = sorted({arm_of(r) for r in rows})
    summary = _summaries(rows, arms)
    for key, learned in learned_arms(out, results, arms).items():
        summary[key]["learned"] = learned
    comparisons = _comparisons(rows, arms)
    (out / "results.json").write_text(json.dumps(
        {"runs": rows, "summary": summary, "comparisons": comparisons, "failures": list(failures)},
        indent=1, default=float))
    figures = _figures(results, out)
    split_path = out / "split.json"
    split = json.loads(split_path.read_text()) if split_path.exists() else None
    provenance, data = _provenance(store_path, results)
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# Loss comparison report", "",
             f"{len(rows)} runs: {len(arms)} arms ({', '.join(_arm(a) for a in arms)}) x {len(seeds)} "
             f"paired seed(s) {seeds}. Repeat k of every arm uses the same seed, split, initial weights "
             f"and batch order. Throughout, {LOSS_SCALE_NOTE}.", ""]
    if failures:
        lines += ["## Failed runs", "", f"{len(failures)} run(s) of this grid failed; the tables below hold "
                  "the runs that finished. Fix the cause and run the same command again to complete it.", "",
                  *(f"* `{f['run']}`: {f['reason']}" for f in failures), ""]
    lines += ["## Headline", "",
             *headline(summary, _distinct(comparisons), audit), "", "## Data split", "",
             *_split_table(split, data.get("labels"), data.get("names", results[0]["class_names"]),
                           data.get("sha256", ())), ""]
    lines += ["## Data and software", "", *provenance, where_trained(results), ""]
    lines += ["## Arms", "", "Losses x 100; accuracy and macro F1 in %; macro AUC one-vs-rest.", ""]
    for arm in arms:
        runs = sorted((r for r in rows if arm_of(r) == arm), key=lambda r: r["seed"])
        lines += [f"## {_arm(arm)}", "",
                  "| run | seed | val loss | test loss | test accuracy % | macro F1 % | macro AUC |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in runs:
            lines.append(f"| {r['run']} | {r['seed']} | {100 * r['val_loss']:.2f} | {100 * r['test_loss']:.2f} | "
                         f"{100 * r['test_accuracy']:.2f} | {100 * r['macro_f1']:.2f} | {r['macro_auc_ovr']:.3f} |")
        s = summary[arm_key(arm)]
        lines += [f"| **mean ± std** | | {100 * s['val_loss']['mean']:.2f} ± {100 * s['val_loss']['std']:.2f} | "
                  f"{100 * s['test_loss']['mean']:.2f} ± {100 * s['test_loss']['std']:.2f} | "
                  f"{100 * s['test_accuracy']['mean']:.2f} ± {100 * s['test_accuracy']['std']:.2f} | "
                  f"{100 * s['macro_f1']['mean']:.2f} ± {100 * s['macro_f1']['std']:.2f} | "
                  f"{s['macro_auc_ovr']['mean']:.3f} ± {s['macro_auc_ovr']['std']:.3f} |", ""]
    distinct = _distinct(comparisons)
    models = sorted({a[0] for a in arms})
    if len(models) > 1:
        lines += ["## Models", "", "| model | arm | test loss | test accuracy % | macro AUC |",
                  "|---|---|---:|---:|---:|"]
        for arm in arms:
            s = summary[arm_key(arm)]
            lines.append(f"| {arm[0]} | {arm[1].upper()} + {arm[2].upper()} | "
                         f"{100 * s['test_loss']['mean']:.2f} ± {100 * s['test_loss']['std']:.2f} | "
                         f"{100 * s['test_accuracy']['mean']:.2f} ± {100 * s['test_accuracy']['std']:.2f} | "
                         f"{s['macro_auc_ovr']['mean']:.3f} |")
        lines += ["", "Models are compared side by side; paired differences are computed within a model "
                  "only (the same seed gives different models different initial weights).", ""]
    lines += ["## Paired comparisons (a - b, same seeds, same model)", "",
              "| a | b | test loss diff (95 % CI) | p (paired t) | accuracy diff % (95 % CI) | bit-identical seeds |",
              "|---|---|---|---:|---|---|"]
    for c in distinct:
        t, acc = c["test_loss"], c["test_accuracy"]
        lines.append(f"| {c['a']} | {c['b']} | {100 * t['mean_diff']:.2f} ({100 * t['ci95'][0]:.2f}, "
                     f"{100 * t['ci95'][1]:.2f}) | {t['p_value']:.3g} | {100 * acc['mean_diff']:.2f} "
                     f"({100 * acc['ci95'][0]:.2f}, {100 * acc['ci95'][1]:.2f}) | "
                     f"{len(c['bit_identical_seeds'])} of {len(c['seeds'])} |")
    twins = _twins(comparisons)
    if twins:
        names = ", ".join(f"{c['a']} = {c['b']}" for c in twins)
        lines += ["", f"Arms that trained bit-identical weights on every seed ({names}) are one arm here: "
                  "every comparison with one of them is listed once (all pairs are in `results.json`)."]
    lines += ["", "## Bit identity", ""]
    for c in comparisons:
        if c["bit_identical_seeds"]:
            lines.append(f"* {c['a']} and {c['b']}: final weights are bit-identical for seeds "
                         f"{c['bit_identical_seeds']}, so every difference between them is exactly zero there: "
                         "the two losses are the same function of one-hot labels.")
    if not any(c["bit_identical_seeds"] for c in comparisons):
        lines.append("* No two arms produced bit-identical weights.")
    lines += ["", "## Figures", ""]
    for name, caption in figures:
        lines += [f"**{caption}**", "", f"![{caption}]({name})", ""]
    lines += list(appendix)
    report = out / "report.md"
    report.write_text("\n".join(lines))
    (out / "report.html").write_text(markdown_to_html("\n".join(lines), out, title="Loss comparison report"))
    return report


def finite_json(obj) -> str:
    """``obj`` as standard JSON: NaN and infinities (an undefined AUC or Cramér's V) become ``null``.

    Python's ``json`` writes them as the bare words ``NaN`` / ``Infinity``, which other JSON
    readers (``jq``, JavaScript, R's jsonlite) reject.
    """
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, np.ndarray)):
            return [clean(v) for v in value]
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, np.integer):
            return int(value)
        return value

    return json.dumps(clean(obj), indent=1, allow_nan=False)


def metrics_lines(metrics: dict) -> list[str]:
    """A plain-text table of :func:`trainer.metrics.classification_metrics` (``trainer evaluate``)."""
    names = list(metrics["per_class"])
    cm = np.asarray(metrics["confusion_matrix"])
    width = max(12, *(len(n) + 2 for n in names))

    def pct(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"

    lines = [f"{cm.sum()} test images: accuracy {pct(metrics['accuracy'])}, macro F1 {pct(metrics['macro_f1'])}, "
             f"macro AUC {pct(metrics['macro_auc_ovr'])}, calibration error (ECE) {pct(metrics['ece'])}", "",
             f"{'class':<{width}}{'images':>8}{'sensitivity':>13}{'specificity':>13}{'F1':>9}{'AUC':>9}"]
    for name, row in zip(names, cm, strict=True):
        m = metrics["per_class"][name]
        lines.append(f"{name:<{width}}{row.sum():>8}{pct(m['sensitivity']):>13}{pct(m['specificity']):>13}"
                     f"{pct(m['f1']):>9}{pct(m['auc_ovr']):>9}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              f"{'':<{width}}" + "".join(f"{n:>{width}}" for n in names)]
    lines += [f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row) for name, row in zip(names, cm, strict=True)]
    return lines
