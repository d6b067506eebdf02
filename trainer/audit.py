"""``trainer audit``: does the classifier need the lungs, or does it read the image's source?

Public COVID-19 collections were assembled from different sources per class, and
models trained on them learn the source (markers, borders, processing) rather
than the disease (DeGrave et al. 2021; Maguolo and Nanni 2021). The audit trains
the same model, with paired seeds, in these experiments per input:

* ``full``: the class model on the whole image (the comparison's own setting, and the
  reference: an audit whose reference model did not learn is inconclusive);
* ``center-F``: the class model with the central box of side F (lungs and heart) blacked
  out, for every F of the occlusion curve (``--occlude-fractions``);
* ``lungs``: the class model with each image's lungs blacked out (stores with lung masks);
* ``source``: the same model trained to predict the source (when there are two or more);
* ``external:<s>``: trained without source ``s`` and tested on it alone (when
  another source shares its classes).

Each experiment's accuracy and macro AUC come with 95 % hierarchical bootstrap intervals
(seeds and test images), next to chance, and a verdict in plain words is computed from
documented thresholds (:data:`trainer.metrics.MARGIN`); ``docs/shortcut-audit.md`` explains them.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from phasefeat.io._atomic import make_dirs, remove_dirs

from .audit_report import audit_markdown, draw_occlusion_curve, occlusion_curve
from .experiment import GridError, RunConfig, check_values, prepare_split, run_name, store_info
from .grid import Job, SequentialRunner, finished_run
from .metrics import BOOTSTRAP, MARGIN, above_chance, interval_metrics
from .report import finite_json

__all__ = ["Experiment", "plan", "external_candidates", "run_audit", "verdicts", "DEFAULT_FRACTIONS",
           "LUNG_FREE_FRACTION", "parse_fractions"]

#: Box sides (shares of the image side) of the default occlusion curve: 3 experiments per input.
DEFAULT_FRACTIONS = (0.5, 0.7, 0.9)
#: From this box side up, what is left visible is a thin frame, the corners and burned-in markers:
#: no lung. A model that still classifies there reads something other than the lungs.
LUNG_FREE_FRACTION = 0.9


@dataclasses.dataclass(frozen=True)
class Experiment:
    key: str
    question: str
    overrides: dict


def parse_fractions(text: str) -> tuple[float, ...]:
    """``"0.5,0.7,0.9"`` -> sorted box sides, each in [0.05, 0.95]; ValueError says what is wrong."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"give box sides as numbers separated by commas, e.g. 0.5,0.7,0.9; got {text!r}") \
            from None
    if not values:
        raise ValueError("give at least one box side, e.g. 0.5,0.7,0.9")
    bad = [v for v in values if not 0.05 <= v <= 0.95]
    if bad:
        raise ValueError(f"box sides must lie in [0.05, 0.95] (shares of the image side); got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"a box side is given twice: {text!r}")
    return tuple(sorted(values))


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


def center_key(fraction: float) -> str:
    """The experiment key of the box of side ``fraction``: ``center-0.70``."""
    return f"center-{fraction:.2f}"


def plan(info: dict, fractions=DEFAULT_FRACTIONS) -> list[Experiment]:
    """The experiments this store allows: the reference, the occlusion curve, the lungs, the source."""
    exps = [Experiment("full", "class, whole image", {})]
    for f in fractions:
        exps.append(Experiment(center_key(f), f"class, central {f:.0%} box blacked out ({f * f:.0%} of the "
                               "image)", {"occlude": "center", "occlude_fraction": f}))
    if len(info["has_masks"]) and info["has_masks"].all():  # lung masks: black out the lungs themselves
        exps.append(Experiment("lungs", "class, lungs blacked out (each image's lung mask)",
                               {"occlude": "lungs"}))
    sources = info["sources"]
    named = sorted(set(sources) - {""})
    if len(named) >= 2 and all(sources):
        exps.append(Experiment("source", "source (hospital / collection), whole image",
                               {"target": "source"}))
    for s in external_candidates(info["labels"], sources):
        exps.append(Experiment(f"external:{s}", f"class, trained without source {s}, tested on it",
                               {"test_sources": (s,)}))
    return exps


def _sensitivity(labels, runs_probabilities, classes) -> float:
    """Mean over runs of the macro sensitivity over ``classes``."""
    y = np.asarray(labels)
    values = []
    for p in runs_probabilities:
        pred = np.asarray(p).argmax(axis=1)
        values.append(np.mean([(pred[y == c] == c).mean() for c in classes if (y == c).any()]))
    return float(np.mean(values))


def _numbers(m: dict) -> str:
    """``accuracy 0.62 (95 % CI 0.55-0.70; chance 0.33), macro AUC 0.80 (0.74-0.86)``."""
    auc = "n/a (one class)" if m["macro_auc"] != m["macro_auc"] else \
        f"{m['macro_auc']:.2f} ({m['macro_auc_ci'][0]:.2f}-{m['macro_auc_ci'][1]:.2f})"
    return (f"accuracy {m['accuracy']:.2f} (95 % CI {m['accuracy_ci'][0]:.2f}-{m['accuracy_ci'][1]:.2f}; "
            f"chance {m['chance']:.2f}), macro AUC {auc}")


def _curve_finding(what: str, per: dict, sources: int) -> tuple[str | None, str]:
    """What the occlusion experiments show: ``(kind, text)``; kind is None when nothing is found.

    ``confounded`` (the model classifies where no lung is visible, and the store has two or more
    sources) is the only kind that blames the source; with one source or none the same
    observation is ``outside_lungs``.
    """
    curve = occlusion_curve(per)
    lungs = per.get("lungs")
    largest_f, largest = curve[-1] if curve else (None, None)
    if lungs is not None and above_chance(lungs):
        seen = f"the {what.upper()} model still classifies with each image's lungs blacked out ({_numbers(lungs)})"
    elif largest is not None and largest_f >= LUNG_FREE_FRACTION and above_chance(largest):
        seen = (f"the {what.upper()} model still classifies with {largest_f * largest_f:.0%} of the image "
                f"blacked out (the central {largest_f:.0%} of each side), where no lung is visible "
                f"({_numbers(largest)})")
    else:
        learned = [f for f, m in curve if above_chance(m)]
        if not curve:
            return None, f"the {what.upper()} model was not asked with the lungs hidden"
        if not learned:
            return None, (f"with the central {curve[0][0]:.0%} box or more blacked out the {what.upper()} model "
                          f"is not clearly above chance ({_numbers(curve[0][1])}): it needs what the box hides")
        if learned[-1] == largest_f:
            return None, (f"the {what.upper()} model still classifies at the largest box tried "
                          f"({largest_f:.0%} of each side; {_numbers(largest)}), where the lung edges can "
                          f"still show; add {LUNG_FREE_FRACTION} to --occlude-fractions to see whether it "
                          "needs the lungs")
        after = next(f for f, _ in curve if f > learned[-1])
        return None, (f"the {what.upper()} model classifies only while the lung edges are visible (above "
                      f"chance up to the {learned[-1]:.0%} box, not from the {after:.0%} box on): not a "
                      "source finding")
    if sources >= 2:
        return "confounded", (f"{seen}: it reads the image's surroundings (markers, borders, processing); "
                              "treat class results on this store as confounded by source")
    recorded = "one source" if sources == 1 else "no sources"
    return "outside_lungs", (f"{seen}: it reads something outside the lungs (borders, markers, text); the "
                             f"store records {recorded}, so this experiment alone says nothing about sources")


def verdicts(results: dict, inputs, cramers_v: float, sources: int) -> dict:
    """One computed verdict per input.

    Returns ``{input: {"flagged", "inconclusive", "findings", "headline", "occlusion"}}``:
    ``flagged`` when the class results are confounded by source; ``inconclusive`` when the
    reference model (``full``) is not above chance, so that nothing else can be concluded.
    """
    out = {}
    for what in inputs:
        per = results[what]
        full = per.get("full")
        if full is not None and not above_chance(full):
            headline = (f"inconclusive: the reference model did not learn (the {what.upper()} model on the "
                        f"whole image: {_numbers(full)}), so the occluded, source and held-out experiments "
                        "cannot tell a shortcut from no learning at all; train longer, on more images or with "
                        "another learning rate first")
            out[what] = {"flagged": False, "inconclusive": True, "findings": [], "headline": headline,
                         "occlusion": headline}
            continue
        findings = []
        kind, occlusion = _curve_finding(what, per, sources)
        if kind is not None:
            findings.append((kind, occlusion))
        if "source" in per:
            probe = per["source"]
            if above_chance(probe):
                text = (f"the {what.upper()} model tells the image source apart at {probe['accuracy']:.2f} "
                        f"accuracy (chance {probe['chance']:.2f})")
                if cramers_v >= 0.5:  # NaN (one source) is never
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
        headline = findings[0][1] if findings else (
            f"no shortcut found by these checks: {occlusion}; this does not show that the model learned the "
            "disease")
        out[what] = {"flagged": any(k == "confounded" for k, _ in findings), "inconclusive": False,
                     "findings": [{"kind": k, "text": t} for k, t in findings], "headline": headline,
                     "occlusion": occlusion}
    return out


def _dir_name(key: str, what: str, repeat: int) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', key)}-{what}-r{repeat}"


def _reusable(job: Job, repeat: int, runs_dir: Path | None, identity: dict) -> Job:
    """``job``, or the same run finished in ``runs_dir`` (the grid's runs of ``compare --audit``).

    The audit's reference experiment is the grid's CCE arm when the settings agree: its
    finished runs are reused (same config digest, same store) instead of trained again.
    """
    if runs_dir is None:
        return job
    grid_job = dataclasses.replace(job, run_dir=runs_dir / run_name(job.config, repeat))
    try:
        done = finished_run(grid_job, identity)
    except GridError:  # a grid run of other settings: the audit trains its own
        return job
    return grid_job if done is not None and (grid_job.run_dir / "predictions.npz").exists() else job


def run_audit(store_path, out, *, inputs=("cxr", "enh"), repeats: int = 3, seed: int = 0,
              base: RunConfig | None = None, occlude_fractions=DEFAULT_FRACTIONS, progress: bool = True,
              workers: int = 1, runner=None, reuse_runs=None) -> dict:
    """Run (or reuse) every audit experiment and write ``audit.md``, ``audit.json`` and the
    occlusion curve's figure in ``out``.

    ``runner`` runs the runs (:func:`trainer.grid.run_grid` says which); the audit needs
    every one of them, so a failed run stops it after the others have finished.
    ``reuse_runs``: a grid's ``runs`` folder whose finished runs of the same settings stand
    in for the reference experiment (``compare --audit``).
    """
    from phasefeat.io.inspect_store import class_source_table, cramers_v

    base = base or RunConfig()
    runner = runner or SequentialRunner(progress=progress)
    if base.target != "class" or base.occlude != "none" or base.test_sources:
        raise GridError("the audit sets the target, occlusion and test sources itself; "
                        "leave --target, --occlude and --test-source at their defaults")
    out = Path(out)
    info = store_info(store_path, inputs[0])
    for what in inputs:
        check_values(store_path, what)
    experiments = plan(info, tuple(occlude_fractions))
    splits = {}
    for exp in experiments:  # every split is checked before the first epoch
        splits[exp.key] = prepare_split(store_path, dataclasses.replace(base, input=inputs[0],
                                                                         **exp.overrides))
    identity = runner.prepare(store_path, info["store_identity"])
    created = make_dirs(out)
    try:
        runner.check_out(out)
    except GridError:
        remove_dirs(created)
        raise
    keys = [(exp, what, k) for exp in experiments for what in inputs for k in range(repeats)]
    jobs = [Job(dataclasses.replace(base, input=what, seed=seed + k, **exp.overrides),
                out / "runs" / _dir_name(exp.key, what, k), splits[exp.key]) for exp, what, k in keys]
    reuse = Path(reuse_runs) if reuse_runs is not None else None
    jobs = [_reusable(job, k, reuse, identity) if exp.key == "full" else job
            for (exp, _, k), job in zip(keys, jobs, strict=True)]
    results, failures = runner.run(store_path, jobs, identity, workers=workers, desc="audit")
    if failures:
        named = "; ".join(f"{f['run']}: {f['reason']}" for f in failures)
        raise GridError(f"{len(failures)} audit run(s) failed ({named}); the audit needs every run: fix "
                        "the cause and run the same command again")
    finished = {}
    for (exp, what, _), job, result in zip(keys, jobs, results, strict=True):
        with np.load(job.run_dir / "predictions.npz") as pred:
            finished.setdefault((exp.key, what), []).append(
                (result, pred["labels"], pred["probabilities"], job.run_dir))
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
            metrics.update(question=exp.question, runs=[_relative(r[3], out) for r in runs],
                           class_names_present=[names[c] for c in metrics["classes_present"]],
                           target=exp.overrides.get("target", "class"))
            if "occlude_fraction" in exp.overrides:
                metrics["box_fraction"] = exp.overrides["occlude_fraction"]
            if exp.key.startswith("external:"):
                classes = metrics["classes_present"]
                full = finished[("full", what)]
                metrics["external_sensitivity"] = _sensitivity(labels, [r[2] for r in runs], classes)
                metrics["internal_sensitivity"] = _sensitivity(full[0][1], [r[2] for r in full], classes)
            per[exp.key] = metrics
        results[what] = per
    n_sources = len(set(info["sources"]) - {""})
    record = {"store": str(store_path), "store_identity": info["store_identity"], "inputs": list(inputs),
              "repeats": repeats, "seed": seed, "occlude_fractions": list(occlude_fractions),
              "margin": MARGIN, "bootstrap": BOOTSTRAP, "class_names": info["class_names"],
              "source_names": source_names, "sources_recorded": n_sources,
              "class_source_table": table.tolist(), "cramers_v": v,
              "experiments": [dataclasses.asdict(e) for e in experiments], "results": results,
              "verdicts": verdicts(results, inputs, v, n_sources),
              "figure": draw_occlusion_curve(results, out)}
    (out / "audit.json").write_text(finite_json(record))
    (out / "audit.md").write_text("\n".join(["# Shortcut audit", "", *audit_markdown(record)]) + "\n")
    return record


def _relative(run_dir: Path, out: Path) -> str:
    """A run folder as the audit names it: ``runs/full-cxr-r0``, or ``../runs/cxr-cce-r0`` (reused)."""
    import os

    return Path(os.path.relpath(run_dir, out)).as_posix()


