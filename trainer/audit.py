"""``trainer audit``: does the classifier need the lungs, or does it read the image's source?

Public COVID-19 collections were assembled from different sources per class, and
models trained on them learn the source (markers, borders, processing) rather
than the disease (DeGrave et al. 2021; Maguolo and Nanni 2021). The audit trains
the same model, with paired seeds, in up to four experiments per input:

* ``full``: the class model on the whole image (the comparison's own setting);
* ``center``: the class model with the central box (lungs and heart) blacked out;
* ``source``: the same model trained to predict the source (when there are two or more);
* ``external:<s>``: trained without source ``s`` and tested on it alone (when
  another source shares its classes).

Each experiment's accuracy and macro AUC come with 95 % bootstrap intervals over
the test images, next to chance, and a verdict in plain words is computed from
documented thresholds (:data:`MARGIN`); ``docs/shortcut-audit.md`` explains them.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from phasefeat.io._atomic import make_dirs, remove_dirs

from .experiment import GridError, RunConfig, prepare_split, store_info
from .grid import Job, SequentialRunner
from .report import finite_json

__all__ = ["MARGIN", "BOOTSTRAP", "Experiment", "plan", "external_candidates", "run_audit",
           "interval_metrics", "above_chance", "verdicts", "audit_markdown", "summary_line"]

#: An experiment is flagged when its accuracy's 95 % interval lies entirely more than this far
#: above chance (occluded, source probe), or its macro AUC's interval entirely more than twice
#: this above 0.5 (AUC does not need a calibrated threshold: a model that always answers one
#: class can still rank well), or when an unseen source loses more than this much sensitivity.
MARGIN = 0.10
#: Bootstrap resamples of the test images for every interval.
BOOTSTRAP = 1000


@dataclasses.dataclass(frozen=True)
class Experiment:
    key: str
    question: str
    overrides: dict


def external_candidates(labels, sources) -> list[str]:
    """Sources that can be held out: every class they hold also occurs in another source, and
    the remaining sources hold at least two classes."""
    labels = np.asarray(labels)
    sources = np.asarray(sources, dtype=object)
    out = []
    for s in sorted(set(sources.tolist()) - {""}):
        inside, rest = set(labels[sources == s].tolist()), set(labels[sources != s].tolist())
        if inside <= rest and len(rest) >= 2:
            out.append(s)
    return out


def plan(info: dict, occlude_fraction: float) -> list[Experiment]:
    """The experiments this store allows."""
    exps = [Experiment("full", "class, whole image", {})]
    if len(info["has_masks"]) and info["has_masks"].all():  # lung masks: black out the lungs themselves
        exps.append(Experiment("lungs", "class, lungs blacked out (each image's lung mask)",
                               {"occlude": "lungs"}))
    else:
        exps.append(Experiment("center", f"class, central {occlude_fraction:.0%} box blacked out",
                               {"occlude": "center", "occlude_fraction": occlude_fraction}))
    sources = info["sources"]
    named = sorted(set(sources) - {""})
    if len(named) >= 2 and all(sources):
        exps.append(Experiment("source", "source (hospital / collection), whole image",
                               {"target": "source"}))
    for s in external_candidates(info["labels"], sources):
        exps.append(Experiment(f"external:{s}", f"class, trained without source {s}, tested on it",
                               {"test_sources": (s,)}))
    return exps


def _auc_matrix(y, probabilities, classes) -> float:
    """Macro one-vs-rest AUC over the classes that are present with both outcomes."""
    from scipy.stats import rankdata

    values = []
    for c in classes:
        positive = y == c
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(probabilities[:, c])
        values.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(values)) if values else float("nan")


def interval_metrics(labels, runs_probabilities, seed: int = 0, resamples: int = BOOTSTRAP) -> dict:
    """Mean accuracy and macro AUC over paired runs, with 95 % bootstrap intervals.

    Parameters
    ----------
    labels : array of int, shape (n,)
        The test labels (the same for every run: one split).
    runs_probabilities : list of arrays, shape (n, C)
        Each run's predicted probabilities.

    Returns
    -------
    dict
        ``accuracy``, ``accuracy_ci``, ``macro_auc``, ``macro_auc_ci`` (NaN where the test
        set has fewer than two classes), ``chance`` (share of the majority class, what
        always answering it scores), ``n``, ``classes_present``.
    """
    y = np.asarray(labels)
    probs = [np.asarray(p, dtype=np.float64) for p in runs_probabilities]
    classes = sorted(set(y.tolist()))
    correct = np.stack([p.argmax(axis=1) == y for p in probs])  # (R, n)
    rng = np.random.default_rng(seed)
    n = len(y)
    draws = rng.integers(0, n, size=(resamples, n))
    acc = correct.mean()
    acc_boot = correct[:, draws].mean(axis=(0, 2))
    auc = float(np.mean([_auc_matrix(y, p, classes) for p in probs]))
    if np.isnan(auc):
        auc_ci = [float("nan")] * 2
    else:
        auc_boot = [np.nanmean([_auc_matrix(y[d], p[d], classes) for p in probs]) for d in draws]
        auc_ci = np.nanpercentile(auc_boot, [2.5, 97.5]).tolist()
    chance = max(np.bincount(y).tolist()) / n
    return {"n": n, "classes_present": classes, "accuracy": float(acc),
            "accuracy_ci": np.percentile(acc_boot, [2.5, 97.5]).tolist(),
            "macro_auc": auc, "macro_auc_ci": auc_ci, "chance": chance}


def _sensitivity(labels, runs_probabilities, classes) -> float:
    """Mean over runs of the macro sensitivity over ``classes``."""
    y = np.asarray(labels)
    values = []
    for p in runs_probabilities:
        pred = np.asarray(p).argmax(axis=1)
        values.append(np.mean([(pred[y == c] == c).mean() for c in classes if (y == c).any()]))
    return float(np.mean(values))


def above_chance(m: dict) -> bool:
    """Accuracy's interval wholly above chance + MARGIN, or macro AUC's above 0.5 + 2 MARGIN."""
    auc_low = m["macro_auc_ci"][0]
    return bool(m["accuracy_ci"][0] > m["chance"] + MARGIN
                or (auc_low == auc_low and auc_low > 0.5 + 2 * MARGIN))


def occluded_key(per: dict) -> str:
    """The occluded experiment of a result: ``lungs`` (lung masks) or ``center`` (a box)."""
    return "lungs" if "lungs" in per else "center"


def verdicts(results: dict, inputs, cramers_v: float) -> dict:
    """One computed verdict per input: ``{"flagged": bool, "findings": [...], "headline": str}``."""
    out = {}
    for what in inputs:
        per = results[what]
        findings = []
        center = per[occluded_key(per)]
        blacked = "the lungs (masks)" if "lungs" in per else "the central box (lungs and heart)"
        if above_chance(center):
            findings.append(("confounded", (
                f"with {blacked} blacked out the {what.upper()} model still "
                f"reaches {center['accuracy']:.2f} accuracy (95 % CI {center['accuracy_ci'][0]:.2f}-"
                f"{center['accuracy_ci'][1]:.2f}; chance {center['chance']:.2f}) and macro AUC "
                f"{center['macro_auc']:.2f} ({center['macro_auc_ci'][0]:.2f}-{center['macro_auc_ci'][1]:.2f}; "
                "chance 0.50): it can classify without looking at the lungs; treat class results on "
                "this store as confounded by source")))
        if "source" in per:
            probe = per["source"]
            if above_chance(probe):
                text = (f"the {what.upper()} model tells the image source apart at {probe['accuracy']:.2f} "
                        f"accuracy (chance {probe['chance']:.2f})")
                if cramers_v >= 0.5:
                    text += (f", and the source nearly decides the class (Cramér's V {cramers_v:.2f}): "
                             "class results can be source results")
                findings.append(("source", text))
        for key, ext in per.items():
            if not key.startswith("external:"):
                continue
            drop = ext["internal_sensitivity"] - ext["external_sensitivity"]
            if drop > MARGIN:
                findings.append(("transfer", (
                    f"on the unseen source {key.split(':', 1)[1]} the sensitivity for its classes "
                    f"({', '.join(ext['class_names_present'])}) falls from {ext['internal_sensitivity']:.2f} "
                    f"to {ext['external_sensitivity']:.2f}: the results do not transfer to a new source")))
        if findings:
            headline = findings[0][1]
        else:
            headline = (f"no shortcut found by these checks: with {blacked} blacked out the "
                        f"{what.upper()} model reaches {center['accuracy']:.2f} accuracy (95 % CI "
                        f"{center['accuracy_ci'][0]:.2f}-{center['accuracy_ci'][1]:.2f}; chance "
                        f"{center['chance']:.2f}) and macro AUC {center['macro_auc']:.2f} "
                        f"({center['macro_auc_ci'][0]:.2f}-{center['macro_auc_ci'][1]:.2f}), not clearly "
                        "above chance; this does not show that the model learned the disease")
        out[what] = {"flagged": any(kind == "confounded" for kind, _ in findings),
                     "findings": [{"kind": k, "text": t} for k, t in findings], "headline": headline}
    return out


def _dir_name(key: str, what: str, repeat: int) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', key)}-{what}-r{repeat}"


def run_audit(store_path, out, *, inputs=("cxr", "enh"), repeats: int = 3, seed: int = 0,
              base: RunConfig | None = None, occlude_fraction: float = 0.6, progress: bool = True,
              workers: int = 1, runner=None) -> dict:
    """Run (or reuse) every audit experiment and write ``audit.md`` and ``audit.json`` in ``out``.

    ``runner`` runs the runs (:func:`trainer.grid.run_grid` says which); the audit needs
    every one of them, so a failed run stops it after the others have finished.
    """
    from phasefeat.io.inspect_store import class_source_table, cramers_v

    base = base or RunConfig()
    runner = runner or SequentialRunner(progress=progress)
    if base.target != "class" or base.occlude != "none" or base.test_sources:
        raise GridError("the audit sets the target, occlusion and test sources itself; "
                        "leave --target, --occlude and --test-source at their defaults")
    out = Path(out)
    info = store_info(store_path, inputs[0])
    experiments = plan(info, occlude_fraction)
    splits = {}
    for exp in experiments:  # every split is checked before the first epoch
        splits[exp.key] = prepare_split(store_path, dataclasses.replace(base, input=inputs[0],
                                                                         **exp.overrides))
    runner.prepare(store_path, info["store_identity"])
    created = make_dirs(out)
    try:
        runner.check_out(out)
    except GridError:
        remove_dirs(created)
        raise
    keys = [(exp, what, k) for exp in experiments for what in inputs for k in range(repeats)]
    jobs = [Job(dataclasses.replace(base, input=what, seed=seed + k, **exp.overrides),
                out / "runs" / _dir_name(exp.key, what, k), splits[exp.key]) for exp, what, k in keys]
    results, failures = runner.run(store_path, jobs, info["store_identity"], workers=workers, desc="audit")
    if failures:
        named = "; ".join(f"{f['run']}: {f['reason']}" for f in failures)
        raise GridError(f"{len(failures)} audit run(s) failed ({named}); the audit needs every run: fix "
                        "the cause and run the same command again")
    finished = {}
    for (exp, what, _), job, result in zip(keys, jobs, results, strict=True):
        with np.load(job.run_dir / "predictions.npz") as pred:
            finished.setdefault((exp.key, what), []).append(
                (result, pred["labels"], pred["probabilities"]))
    table, source_names = class_source_table(info["labels"], info["sources"], len(info["class_names"]))
    v = cramers_v(table)
    results = {}
    for what in inputs:
        per = {}
        for exp in experiments:
            runs = finished[(exp.key, what)]
            labels = runs[0][1]
            names = runs[0][0]["class_names"]
            metrics = interval_metrics(labels, [r[2] for r in runs], seed=seed)
            metrics.update(question=exp.question, runs=[r[0]["run"] for r in runs],
                           class_names_present=[names[c] for c in metrics["classes_present"]],
                           target=exp.overrides.get("target", "class"))
            if exp.key.startswith("external:"):
                classes = metrics["classes_present"]
                full = finished[("full", what)]
                metrics["external_sensitivity"] = _sensitivity(labels, [r[2] for r in runs], classes)
                metrics["internal_sensitivity"] = _sensitivity(full[0][1], [r[2] for r in full], classes)
            per[exp.key] = metrics
        results[what] = per
    record = {"store": str(store_path), "store_identity": info["store_identity"], "inputs": list(inputs),
              "repeats": repeats, "seed": seed, "occlude_fraction": occlude_fraction, "margin": MARGIN,
              "bootstrap": BOOTSTRAP, "class_names": info["class_names"], "source_names": source_names,
              "class_source_table": table.tolist(), "cramers_v": v,
              "experiments": [dataclasses.asdict(e) for e in experiments], "results": results,
              "verdicts": verdicts(results, inputs, v)}
    (out / "audit.json").write_text(finite_json(record))
    (out / "audit.md").write_text("\n".join(["# Shortcut audit", "", *audit_markdown(record)]) + "\n")
    return record


def audit_markdown(record: dict) -> list[str]:
    """The audit as markdown lines (``audit.md``, and the section ``compare --audit`` appends)."""
    from phasefeat.io.inspect_store import format_class_source

    lines = [f"Store `{record['store']}`; inputs {', '.join(i.upper() for i in record['inputs'])}; "
             f"{record['repeats']} paired seed(s) from {record['seed']}; intervals: 95 % bootstrap over "
             f"the test images ({record['bootstrap']} resamples); an experiment counts as above chance when "
             f"its accuracy interval lies wholly more than {record['margin']:.2f} above chance or its AUC "
             f"interval wholly above {0.5 + 2 * record['margin']:.2f}. How to read it: "
             "`docs/shortcut-audit.md`.", "", "## Verdict", ""]
    for what, v in record["verdicts"].items():
        lines.append(f"* **{what.upper()}**: {v['headline']}.")
        for extra in v["findings"][1:]:
            lines.append(f"  Also: {extra['text']}.")
    table = np.asarray(record["class_source_table"])
    v = record["cramers_v"]
    lines += ["", "## Class x source", "", "```text",
              *format_class_source(table, record["class_names"], record["source_names"]), "```", "",
              f"Cramér's V between class and source: {v:.2f} (0: independent; 1: the source decides the "
              "class)." if v == v else "Cramér's V: not defined (one class or one source).", ""]
    lines += ["## Experiments", "", "| input | experiment | question | test images (classes) | "
              "accuracy (95 % CI) | chance | macro AUC (95 % CI) |", "|---|---|---|---|---|---:|---|"]
    for what, per in record["results"].items():
        for key, m in per.items():
            auc = ("n/a (one class)" if m["macro_auc"] != m["macro_auc"] else
                   f"{m['macro_auc']:.2f} ({m['macro_auc_ci'][0]:.2f}-{m['macro_auc_ci'][1]:.2f})")
            chance = f"{m['chance']:.2f}" if len(m["classes_present"]) > 1 else "n/a"
            lines.append(f"| {what.upper()} | {key} | {m['question']} | {m['n']} "
                         f"({', '.join(m['class_names_present'])}) | {m['accuracy']:.2f} "
                         f"({m['accuracy_ci'][0]:.2f}-{m['accuracy_ci'][1]:.2f}) | {chance} | {auc} |")
    external = [(w, k, m) for w, per in record["results"].items() for k, m in per.items()
                if k.startswith("external:")]
    if external:
        lines += ["", "External validation compares the sensitivity for the classes the held-out source "
                  "contains, on the internal test split (`full`) and on the held-out source:", ""]
        for what, key, m in external:
            lines.append(f"* {what.upper()} {key}: {m['internal_sensitivity']:.2f} internal, "
                         f"{m['external_sensitivity']:.2f} external ({', '.join(m['class_names_present'])}).")
    lines += ["", "A passed audit is no proof that a model learned the disease: it only rules out the "
              "shortcuts these experiments can see.", ""]
    return lines


def summary_line(record: dict) -> str:
    """The audit in one sentence, for the terminal summary."""
    parts = []
    for what, v in record["verdicts"].items():
        center = record["results"][what][occluded_key(record["results"][what])]
        state = "FLAGGED, confounded by source" if v["flagged"] else (
            "other findings" if v["findings"] else "not flagged")
        parts.append(f"{what.upper()} {center['accuracy']:.2f} ({state})")
    first = next(iter(record["results"].values()))
    chance = first[occluded_key(first)]["chance"]
    blacked = "the lungs" if "lungs" in first else "the central box"
    return (f"Shortcut audit: with {blacked} blacked out, accuracy {', '.join(parts)}; "
            f"chance {chance:.2f}. Verdicts in audit/audit.md.")
