"""The shortcut audit as people read it: audit.md's text and tables, the occlusion curve's figure,
and the one-line summary of the terminal.

Everything here reads an audit record (:func:`trainer.audit.run_audit`); nothing trains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["occlusion_curve", "draw_occlusion_curve", "audit_markdown", "summary_line", "verdict_state",
           "FIGURE", "READING_GUIDE"]

FIGURE = "occlusion_curve.png"


def occlusion_curve(per: dict) -> list[tuple[float, dict]]:
    """The box experiments of one input's results, ``(box side, metrics)``, smallest box first."""
    return sorted((m["box_fraction"], m) for k, m in per.items() if k.startswith("center-"))


def draw_occlusion_curve(results: dict, out) -> str | None:
    """Accuracy and macro AUC against the share of the image blacked out, one curve per input.

    Returns the figure's file name in ``out`` (None when no input has a curve).
    """
    from phasefeat.tools.figures import atomic_savefig

    from .report_figures import _pyplot

    curves = {what: occlusion_curve(per) for what, per in results.items()}
    if not any(curves.values()):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, metric, chance_key in ((axes[0], "accuracy", "chance"), (axes[1], "macro_auc", None)):
        for k, (what, curve) in enumerate(curves.items()):
            full = results[what].get("full")
            points = ([(0.0, full)] if full else []) + [(f * f, m) for f, m in curve]
            x = np.array([p[0] for p in points])
            y = np.array([p[1][metric] for p in points], dtype=np.float64)
            low = np.array([p[1][f"{metric}_ci"][0] for p in points], dtype=np.float64)
            high = np.array([p[1][f"{metric}_ci"][1] for p in points], dtype=np.float64)
            ax.plot(x, y, "o-", color=f"C{k}", label=what.upper())
            ax.fill_between(x, low, high, color=f"C{k}", alpha=0.2, linewidth=0)
        chance = (next(iter(results.values())).get("full") or {}).get(chance_key, 0.5) if chance_key else 0.5
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xlabel("share of the image blacked out (0: whole image)")
        ax.set_ylabel("accuracy" if metric == "accuracy" else "macro AUC (one vs rest)")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(-0.02, 1)
        ax.legend(fontsize=7)
    fig.suptitle("Can the class still be told with the centre blacked out? Bands: 95 % intervals "
                 "(seeds and test images)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, Path(out) / FIGURE)
    plt.close(fig)
    return FIGURE


def _interval(value, ci) -> str:
    if value is None or value != value:
        return "n/a (one class)"
    return f"{value:.2f} ({ci[0]:.2f}-{ci[1]:.2f})"


def _seeds(m: dict) -> str:
    return ", ".join(f"{a:.2f}" for a in m.get("seed_accuracy", []))


#: How to read the audit, in the report itself (a path into the project's docs means nothing beside
#: a report in a results folder).
READING_GUIDE = [
    "How to read it: each experiment trains the same model with something hidden or asked otherwise. If "
    "it still classifies with the centre of the image blacked out (a box of 90 % of each side leaves no "
    "lung), or with the lungs blacked out, it reads something else: markers, text, borders, processing. "
    "The source probe asks whether the pixels tell which hospital or archive an image came from; the "
    "held-out source asks whether the results hold on a source the model never saw. \"Flagged\" means the "
    "class results are confounded by source; \"inconclusive\" means the model on the whole image did not "
    "learn, so nothing can be concluded. The phasefeat documentation explains each experiment and its "
    "limits (docs/shortcut-audit.md in the phasefeat source)."]


def audit_markdown(record: dict, figure_prefix: str = "") -> list[str]:
    """The audit as markdown lines (``audit.md``, and the section ``compare --audit`` adds to the
    report; ``figure_prefix`` is the audit folder as seen from the report's folder)."""
    from phasefeat.io.inspect_store import format_class_source

    fractions = record.get("occlude_fractions") or [record.get("occlude_fraction")]
    lines = [f"Store `{record['store']}`; inputs {', '.join(i.upper() for i in record['inputs'])}; "
             f"{record['repeats']} paired seed(s) from {record['seed']}; occlusion curve: central boxes of "
             f"{', '.join(f'{f:.0%}' for f in fractions if f is not None)} of each side; intervals: 95 % "
             f"hierarchical bootstrap over the seeds and the test images ({record['bootstrap']} resamples); "
             f"an experiment counts as above chance when its accuracy interval lies wholly more than "
             f"{record['margin']:.2f} above chance or its AUC interval wholly above "
             f"{0.5 + 2 * record['margin']:.2f}.", "", *READING_GUIDE, "", "## Verdict", ""]
    for what, v in record["verdicts"].items():
        lines.append(f"* **{what.upper()}**: {v['headline']}.")
        for extra in v["findings"][1:]:
            lines.append(f"  Also: {extra['text']}.")
        if v["findings"] and v.get("occlusion") and v["findings"][0]["text"] != v["occlusion"]:
            lines.append(f"  Occlusion: {v['occlusion']}.")
    if record.get("figure"):
        lines += ["", f"![Accuracy and macro AUC against the share of the image blacked out]"
                      f"({figure_prefix}{record['figure']})"]
    table = np.asarray(record["class_source_table"])
    v = record["cramers_v"]
    defined = v is not None and v == v
    lines += ["", "## Class x source", "", "```text",
              *format_class_source(table, record["class_names"], record["source_names"]), "```", "",
              f"Cramér's V between class and source: {v:.2f} (0: independent; 1: the source decides the "
              "class)." if defined else "Cramér's V: not defined (one class or one source).", ""]
    lines += ["## Experiments", "", "| input | experiment | question | test images (classes) | "
              "accuracy (95 % CI) | accuracy per seed | chance | macro AUC (95 % CI) |",
              "|---|---|---|---|---|---|---:|---|"]
    for what, per in record["results"].items():
        for key, m in per.items():
            chance = f"{m['chance']:.2f}" if len(m["classes_present"]) > 1 else "n/a"
            lines.append(f"| {what.upper()} | {key} | {m['question']} | {m['n']} "
                         f"({', '.join(m['class_names_present'])}) | {_interval(m['accuracy'], m['accuracy_ci'])} "
                         f"| {_seeds(m)} | {chance} | {_interval(m['macro_auc'], m['macro_auc_ci'])} |")
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


#: Each kind of finding in a few words (:func:`trainer.audit.verdicts`).
FINDING_WORDS = {"confounded": "confounded by source",
                 "outside_lungs": "classifies without the lungs (not a source finding: one source or none "
                                  "recorded)",
                 "source": "tells the image's source apart", "transfer": "falls on an unseen source"}


def verdict_state(v: dict) -> str:
    """One input's verdict in a few words: ``"FLAGGED: confounded by source"``, ``"not flagged"``, ..."""
    if v.get("inconclusive"):
        return "inconclusive: the reference model did not learn"
    words = [FINDING_WORDS.get(f["kind"], f["kind"]) for f in v["findings"]]
    if v["flagged"]:
        others = [w for w in words if w != FINDING_WORDS["confounded"]]
        return "FLAGGED: confounded by source" + (f"; also {' and '.join(others)}" if others else "")
    return "not flagged" + (f", but {' and '.join(words)}" if words else "")


def summary_line(record: dict) -> str:
    """The audit in one sentence, for the terminal summary."""
    parts = [f"{what.upper()} {verdict_state(v)}" for what, v in record["verdicts"].items()]
    return f"Shortcut audit: {'; '.join(parts)}. Verdicts and the occlusion curve in audit/audit.md."
