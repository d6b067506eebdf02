"""The report's verdict in sentences: did the arms learn, which is best, and the terminal summary.

Kept apart from :mod:`trainer.report` (the tables and files) because these lines are the
claim a reader takes away: they rank arms only when the arms learned something.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .metrics import above_chance, interval_metrics
from .report_figures import arm_key, arm_of

__all__ = ["learned_arms", "headline", "summary_lines", "differing_pairs", "NO_LEARNING"]


def _disagree(summary, by_loss, by_acc) -> bool:
    """Whether the arm with the best accuracy is strictly more accurate than the one with the lowest loss."""
    return summary[by_acc]["test_accuracy"]["mean"] > summary[by_loss]["test_accuracy"]["mean"]


def learned_arms(out: Path, results, arms) -> dict:
    """Per arm: are its runs above chance by the audit's rule (:func:`trainer.metrics.above_chance`,
    over its seeds and test images)? None where the runs' predictions are not at hand."""
    learned = {}
    for arm in arms:
        labels, probabilities = None, []
        for r in (r for r in results if arm_of(r) == arm):
            path = out / "runs" / r["run"] / "predictions.npz"
            if not path.exists():
                probabilities = []
                break
            with np.load(path) as pred:
                labels = pred["labels"]
                probabilities.append(pred["probabilities"])
        learned[arm_key(arm)] = above_chance(interval_metrics(labels, probabilities)) if probabilities else None
    return learned


def _not_learned(summary) -> list[str]:
    return [a for a, s in summary.items() if s.get("learned") is False]


NO_LEARNING = ("no arm is above chance by the audit's rule (accuracy interval wholly more than 0.10 above "
               "chance, or macro AUC interval wholly above 0.70, over seeds and test images): the arms did not "
               "learn, their losses are those of guessing, and ranking them would rank noise. Train longer, on "
               "more images or with another learning rate before comparing")


def _excludes_zero(interval) -> bool:
    low, high = interval
    return low == low and high == high and (low > 0 or high < 0)  # NaN (one seed) excludes nothing


def differing_pairs(summary, comparisons) -> tuple[list[str], int]:
    """Pairs of arms that learned whose paired test loss or accuracy differs beyond its 95 % interval,
    as ``"A vs B (test loss)"``; and the number of pairs that have an interval (two seeds or more)."""
    ranked = {a for a, s in summary.items() if s.get("learned") is not False}
    found, with_interval = [], 0
    for c in comparisons:
        if c["a"] not in ranked or c["b"] not in ranked:
            continue
        loss, accuracy = c["test_loss"]["ci95"], c["test_accuracy"]["ci95"]
        if all(v == v for v in (*loss, *accuracy)):
            with_interval += 1
        which = [name for name, ci in (("test loss", loss), ("accuracy", accuracy)) if _excludes_zero(ci)]
        if which:
            found.append(f"{c['a'].upper()} vs {c['b'].upper()} ({' and '.join(which)})")
    return found, with_interval


def _spread_line(summary, comparisons) -> str:
    """Whether the ranking means anything: do any two arms differ beyond their paired interval?"""
    found, with_interval = differing_pairs(summary, comparisons)
    if found:
        return (f"* **Beyond the seed-to-seed spread** (paired 95 % interval excludes 0): {'; '.join(found)}. "
                "Other differences lie within it (± is the standard deviation over seeds).")
    if not with_interval:
        return ("* With one seed per arm there is no interval: the ranking above may be seed-to-seed noise "
                "(use --repeats 3 or more).")
    return ("* **No pair of arms differs beyond its 95 % interval** (paired over seeds, test loss and accuracy): "
            "the ranking above lies within the seed-to-seed spread and does not say which arm is better.")


def _audit_lines(audit: dict | None) -> list[str]:
    if audit is None:
        return []
    from .audit_report import verdict_state

    return [f"* **Shortcut audit, {what.upper()}**: {verdict_state(v)}: {v['headline']} (section Shortcut audit "
            "below)." for what, v in audit["verdicts"].items()]


def headline(summary, comparisons=(), audit: dict | None = None) -> list[str]:
    """The report's first claims: the ranking of the arms that learned, whether any difference lies
    beyond the seed-to-seed spread (``comparisons``: the distinct paired comparisons), and the shortcut
    audit's verdict per input (``audit``: its record)."""
    silent = _not_learned(summary)
    if silent and len(silent) == len(summary):
        return [f"* **The arms did not learn**: {NO_LEARNING}.", *_audit_lines(audit)]
    summary = {a: s for a, s in summary.items() if a not in silent}
    by_loss = min(summary, key=lambda a: summary[a]["test_loss"]["mean"])
    by_acc = max(summary, key=lambda a: summary[a]["test_accuracy"]["mean"])

    def fmt(a):
        s = summary[a]
        return (f"{a.upper()}: test loss {100 * s['test_loss']['mean']:.2f} ± {100 * s['test_loss']['std']:.2f}, "
                f"accuracy {100 * s['test_accuracy']['mean']:.1f} ± {100 * s['test_accuracy']['std']:.1f} %")

    lines = [f"* Lowest mean test loss: {fmt(by_loss)}."]
    accuracy = {a: summary[a]["test_accuracy"]["mean"] for a in summary}
    tied = [a.upper() for a in sorted(summary) if accuracy[a] == accuracy[by_acc]]
    if len(summary) > 1 and len(tied) == len(summary):
        lines.append(f"* All {len(summary)} arms reach the same mean test accuracy, "
                     f"{100 * accuracy[by_acc]:.1f} %: accuracy does not tell them apart.")
    elif not _disagree(summary, by_loss, by_acc):
        others = [a for a in tied if a != by_loss.upper()]
        lines.append("* It also has the highest mean test accuracy"
                     + (f" (tied with {', '.join(others)})." if others else "."))
    else:
        lines.append(f"* Highest mean test accuracy: {fmt(by_acc)}. **Loss and accuracy disagree** on "
                     "which arm is best; a lower cross-entropy means better calibrated probabilities, "
                     "not necessarily more correct answers.")
    if len(summary) > 1:
        lines.append(_spread_line(summary, comparisons))
    if silent:
        lines.append(f"* **Not above chance** (the audit's rule), so left out of the lines above: "
                     f"{', '.join(a.upper() for a in silent)}: these arms did not learn.")
    return lines + _audit_lines(audit)


def summary_lines(out, audit: dict | None = None) -> list[str]:
    """Three plain sentences about a finished grid, from its results.json.

    With an ``audit`` record (:func:`trainer.audit.run_audit`) the third sentence is its verdict.
    """
    results = json.loads((Path(out) / "results.json").read_text())
    summary, comparisons = results["summary"], results["comparisons"]
    silent = _not_learned(summary)
    ranked = {a: s for a, s in summary.items() if a not in silent}
    if not ranked:
        first = f"The arms did not learn: {NO_LEARNING.split(': ', 1)[0]}; report.md says more."
    else:
        by_loss = min(ranked, key=lambda a: ranked[a]["test_loss"]["mean"])
        by_acc = max(ranked, key=lambda a: ranked[a]["test_accuracy"]["mean"])
        s = ranked[by_loss]
        first = (f"Lowest mean test loss: {by_loss.upper()} at {100 * s['test_loss']['mean']:.2f} (loss x 100) "
                 f"with accuracy {100 * s['test_accuracy']['mean']:.1f} %")
        first += "." if not _disagree(ranked, by_loss, by_acc) else (
            f"; highest accuracy: {by_acc.upper()} ({100 * ranked[by_acc]['test_accuracy']['mean']:.1f} %): "
            "loss and accuracy disagree.")
        found, with_interval = differing_pairs(summary, comparisons)
        if len(ranked) > 1 and with_interval and not found:
            first += " No two arms differ beyond the seed-to-seed spread."
        if silent:
            first += f" Not above chance: {', '.join(a.upper() for a in silent)}."
    lines = [first]
    for c in comparisons:
        (ia, la), (ib, lb) = c["a"].split("+")[-2:], c["b"].split("+")[-2:]
        if la == lb and ia != ib:
            t = c["test_loss"]
            lines.append(f"{c['a'].upper()} - {c['b'].upper()}: test loss {100 * t['mean_diff']:+.2f} points "
                         f"(x 100; 95 % CI {100 * t['ci95'][0]:+.2f} to {100 * t['ci95'][1]:+.2f}, paired over "
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
        from .audit_report import summary_line

        lines = [lines[0], lines[-1], summary_line(audit)]
    return lines[:3]
