"""The report's verdict sentences (trainer.report_summary) on hand-made summaries: no training, no figures.

Each sentence a reader takes away is checked word for word against numbers chosen here: which arm is
ranked first, when loss and accuracy disagree, which pairs differ beyond their interval, which arms
are left out for not learning, and what the terminal summary's three lines say.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trainer.report_summary import (
    NO_LEARNING,
    differing_pairs,
    headline,
    learned_arms,
    summary_lines,
)

NAN = float("nan")


def arm(loss, accuracy, learned=None, loss_std=0.01, accuracy_std=0.02):
    return {"test_loss": {"mean": loss, "std": loss_std}, "test_accuracy": {"mean": accuracy, "std": accuracy_std},
            "learned": learned}


def comparison(a, b, loss_ci=(NAN, NAN), accuracy_ci=(NAN, NAN), mean_diff=0.0, n=3, identical=(), seeds=(0, 1, 2)):
    return {"a": a, "b": b, "seeds": list(seeds), "bit_identical_seeds": list(identical),
            "test_loss": {"ci95": list(loss_ci), "mean_diff": mean_diff, "n": n},
            "test_accuracy": {"ci95": list(accuracy_ci)}}


AUDIT = {"verdicts": {
    "cxr": {"flagged": True, "inconclusive": False, "headline": "blacked out", "findings": [{"kind": "confounded"}]},
    "enh": {"flagged": False, "inconclusive": False, "headline": "fine", "findings": []}}}
AUDIT_LINES = ["* **Shortcut audit, CXR**: FLAGGED: confounded by source: blacked out (section Shortcut audit below).",
               "* **Shortcut audit, ENH**: not flagged: fine (section Shortcut audit below)."]


# -- the headline ---------------------------------------------------------------------------------------

def test_the_headline_ranks_by_the_lowest_mean_loss_with_its_numbers():
    lines = headline({"cxr+cce": arm(0.5, 0.8), "enh+cce": arm(0.4123, 0.9, loss_std=0.0156, accuracy_std=0.25),
                      "enh+scce": arm(0.45, 0.85)})
    assert lines[0] == "* Lowest mean test loss: ENH+CCE: test loss 41.23 ± 1.56, accuracy 90.0 ± 25.0 %."
    assert lines[1] == "* It also has the highest mean test accuracy."


def test_loss_and_accuracy_disagree_when_another_arm_is_strictly_more_accurate():
    lines = headline({"cxr+cce": arm(0.5, 0.91), "enh+cce": arm(0.4, 0.9)})
    assert lines[1] == ("* Highest mean test accuracy: CXR+CCE: test loss 50.00 ± 1.00, accuracy 91.0 ± 2.0 %. "
                        "**Loss and accuracy disagree** on which arm is best; a lower cross-entropy means better "
                        "calibrated probabilities, not necessarily more correct answers.")


def test_an_arm_as_accurate_as_the_first_is_named_as_tied():
    # as results.json gives them: equal numbers, not the same objects
    lines = headline(json.loads(json.dumps({"cxr+cce": arm(0.5, 0.7), "enh+cce": arm(0.4, 0.9),
                                            "enh+scce": arm(0.45, 0.9)})))
    assert lines[1] == "* It also has the highest mean test accuracy (tied with ENH+SCCE)."


def test_an_arm_as_accurate_that_comes_first_in_the_table_is_tied_not_disagreeing():
    """The most accurate arm found first is CXR+CCE, as accurate as ENH+CCE, which has the lowest loss."""
    summary = json.loads(json.dumps({"cxr+cce": arm(0.5, 0.9), "enh+cce": arm(0.4, 0.9), "enh+scce": arm(0.45, 0.8)}))
    assert headline(summary)[1] == "* It also has the highest mean test accuracy (tied with CXR+CCE)."


@pytest.mark.parametrize("count", [2, 3, 300])
def test_all_arms_equally_accurate_is_said(count):
    summary = {f"a{k}+cce": arm(0.5 - k / 10, 0.75) for k in range(count)}
    assert headline(summary)[1] == (f"* All {count} arms reach the same mean test accuracy, 75.0 %: "
                                    "accuracy does not tell them apart.")


def test_one_arm_is_ranked_alone_without_a_spread_line():
    assert headline({"cxr+cce": arm(0.5, 0.8)}) == [
        "* Lowest mean test loss: CXR+CCE: test loss 50.00 ± 1.00, accuracy 80.0 ± 2.0 %.",
        "* It also has the highest mean test accuracy."]


def test_the_spread_line_names_the_pairs_beyond_their_interval():
    summary = {"cxr+cce": arm(0.5, 0.8), "enh+cce": arm(0.4, 0.9)}
    lines = headline(summary, [comparison("cxr+cce", "enh+cce", (0.01, 0.2), (-0.3, -0.01))])
    assert lines[2] == ("* **Beyond the seed-to-seed spread** (paired 95 % interval excludes 0): CXR+CCE vs ENH+CCE "
                        "(test loss and accuracy). Other differences lie within it (± is the standard deviation "
                        "over seeds).")


def test_the_spread_line_says_plainly_when_no_pair_differs():
    summary = {"cxr+cce": arm(0.5, 0.8), "enh+cce": arm(0.4, 0.9)}
    lines = headline(summary, [comparison("cxr+cce", "enh+cce", (-0.1, 0.2), (-0.3, 0.1))])
    assert lines[2] == ("* **No pair of arms differs beyond its 95 % interval** (paired over seeds, test loss and "
                        "accuracy): the ranking above lies within the seed-to-seed spread and does not say which "
                        "arm is better.")


def test_with_one_seed_the_spread_line_says_there_is_no_interval():
    summary = {"cxr+cce": arm(0.5, 0.8), "enh+cce": arm(0.4, 0.9)}
    for comparisons in ([], [comparison("cxr+cce", "enh+cce")]):
        assert headline(summary, comparisons)[2] == (
            "* With one seed per arm there is no interval: the ranking above may be seed-to-seed noise "
            "(use --repeats 3 or more).")


def test_arms_that_did_not_learn_are_left_out_of_the_ranking_and_named():
    summary = {"cxr+cce": arm(0.1, 0.99, learned=False), "enh+cce": arm(0.4, 0.9, learned=True),
               "enh+scce": arm(0.45, 0.85), "cxr+scce": arm(0.2, 0.95, learned=False)}
    lines = headline(summary, [comparison("cxr+cce", "enh+cce", (0.1, 0.2), (0.1, 0.2)),
                               comparison("enh+cce", "enh+scce", (-0.1, 0.2), (-0.1, 0.2))])
    assert lines[0].startswith("* Lowest mean test loss: ENH+CCE:")
    assert lines[1] == "* It also has the highest mean test accuracy."
    assert lines[2].startswith("* **No pair of arms differs")  # CXR+CCE vs ENH+CCE is not ranked
    assert lines[3] == ("* **Not above chance** (the audit's rule), so left out of the lines above: CXR+CCE, "
                        "CXR+SCCE: these arms did not learn.")
    assert len(lines) == 4


def test_when_none_of_hundreds_of_arms_learned_nothing_is_ranked():
    summary = {f"m{k}+cxr+cce": arm(0.5, 0.8, learned=False) for k in range(300)}
    assert headline(summary) == [f"* **The arms did not learn**: {NO_LEARNING}."]


def test_when_no_arm_learned_nothing_is_ranked():
    summary = {"cxr+cce": arm(0.5, 0.8, learned=False), "enh+cce": arm(0.4, 0.9, learned=False)}
    assert headline(summary) == [f"* **The arms did not learn**: {NO_LEARNING}."]
    assert headline(summary, audit=AUDIT) == [f"* **The arms did not learn**: {NO_LEARNING}.", *AUDIT_LINES]


def test_the_audit_verdict_per_input_closes_the_headline():
    summary = {"cxr+cce": arm(0.5, 0.8), "enh+cce": arm(0.4, 0.9)}
    assert headline(summary, audit=AUDIT)[-2:] == AUDIT_LINES
    assert not any("Shortcut audit" in line for line in headline(summary))


# -- the pairs beyond their interval ------------------------------------------------------------------

@pytest.mark.parametrize(("loss_ci", "accuracy_ci", "named"), [
    ((0.01, 0.2), (-0.1, 0.1), "(test loss)"),
    ((-0.2, -0.01), (-0.1, 0.1), "(test loss)"),
    ((-0.1, 0.1), (0.02, 0.1), "(accuracy)"),
    ((0.0, 0.1), (-0.1, 0.0), None),  # an interval that reaches 0 does not exclude it
    ((NAN, 0.1), (-0.1, NAN), None),
    ((NAN, -0.1), (0.1, NAN), None),  # half an interval is none
])
def test_a_pair_differs_where_its_interval_excludes_zero(loss_ci, accuracy_ci, named):
    summary = {"cxr+cce": arm(0.5, 0.8), "enh+cce": arm(0.4, 0.9)}
    found, with_interval = differing_pairs(summary, [comparison("cxr+cce", "enh+cce", loss_ci, accuracy_ci)])
    assert found == ([f"CXR+CCE vs ENH+CCE {named}"] if named else [])
    assert with_interval == int(not any(math.isnan(v) for v in (*loss_ci, *accuracy_ci)))


@pytest.mark.parametrize("silent", ["a", "b"])
def test_a_pair_with_an_arm_that_did_not_learn_is_not_counted(silent):
    summary = {"cxr+cce": arm(0.5, 0.8, learned=silent != "a"), "enh+cce": arm(0.4, 0.9, learned=silent != "b")}
    assert differing_pairs(summary, [comparison("cxr+cce", "enh+cce", (0.1, 0.2), (0.1, 0.2))]) == ([], 0)


def test_every_differing_pair_is_named_and_every_interval_counted():
    summary = {k: arm(0.5, 0.8) for k in ("a+cce", "b+cce", "c+cce")}
    found, with_interval = differing_pairs(summary, [
        comparison("a+cce", "b+cce", (0.1, 0.2), (-1, 1)), comparison("a+cce", "c+cce", (-1, 1), (-1, 1)),
        comparison("b+cce", "c+cce", (-1, 1), (0.1, 0.3))])
    assert found == ["A+CCE vs B+CCE (test loss)", "B+CCE vs C+CCE (accuracy)"] and with_interval == 3


# -- which arms learned ---------------------------------------------------------------------------------

def _predict(out, run, right):
    y = np.array([0, 1, 2] * 10)
    p = np.eye(3)[y] * 0.9 + 0.1 / 3 if right else np.full((30, 3), 1 / 3)
    (out / "runs" / run).mkdir(parents=True)
    np.savez(out / "runs" / run / "predictions.npz", labels=y, probabilities=p)


def test_learned_arms_by_the_audits_rule_over_every_seed(tmp_path):
    runs = [{"run": f"{what}-{k}", "input": what, "loss": "cce"} for what in ("cxr", "enh") for k in range(2)]
    runs.append({"run": "r50", "model": "resnet50", "input": "cxr", "loss": "cce"})
    for r in runs:
        _predict(tmp_path, r["run"], right=r["input"] == "enh" or r["run"] == "r50")
    arms = [("vgg16", "cxr", "cce"), ("vgg16", "enh", "cce"), ("resnet50", "cxr", "cce")]
    assert learned_arms(tmp_path, runs, arms) == {"cxr+cce": False, "enh+cce": True, "resnet50+cxr+cce": True}


@pytest.mark.parametrize("missing", ["cxr", "enh"])
def test_an_arm_is_judged_on_its_own_runs_only(tmp_path, missing):
    runs = [{"run": f"{what}-{k}", "input": what, "loss": "cce"} for what in ("cxr", "enh") for k in range(2)]
    for r in runs:
        if r["input"] != missing:
            _predict(tmp_path, r["run"], right=True)
    arms = [("vgg16", "cxr", "cce"), ("vgg16", "enh", "cce")]
    assert learned_arms(tmp_path, runs, arms) == {f"{what}+cce": None if what == missing else True
                                                  for what in ("cxr", "enh")}


def test_learned_is_unknown_where_any_run_has_no_predictions(tmp_path):
    runs = [{"run": f"enh-{k}", "input": "enh", "loss": "cce"} for k in range(3)]
    _predict(tmp_path, "enh-0", right=True)
    _predict(tmp_path, "enh-2", right=True)
    assert learned_arms(tmp_path, runs, [("vgg16", "enh", "cce")]) == {"enh+cce": None}


def test_an_arm_that_learned_on_one_seed_only_is_not_above_chance(tmp_path):
    runs = [{"run": f"enh-{k}", "input": "enh", "loss": "cce"} for k in range(3)]
    for k, r in enumerate(runs):
        _predict(tmp_path, r["run"], right=k == 0)
    assert learned_arms(tmp_path, runs, [("vgg16", "enh", "cce")]) == {"enh+cce": False}


# -- the terminal summary --------------------------------------------------------------------------------

def _grid(tmp_path, summary, comparisons):
    (tmp_path / "results.json").write_text(json.dumps({"summary": summary, "comparisons": comparisons}))
    return tmp_path


def test_the_terminal_summary_names_the_first_arm_the_inputs_difference_and_the_twins(tmp_path):
    summary = {"cxr+cce": arm(0.5, 0.8), "cxr+scce": arm(0.5, 0.8), "enh+cce": arm(0.4123, 0.9)}
    comparisons = [comparison("cxr+cce", "cxr+scce", (0, 0), (0, 0), identical=(0, 2)),
                   comparison("enh+cce", "enh+scce", (0, 0), (0, 0), identical=(0, 1, 2)),
                   comparison("cxr+scce", "enh+cce", (0.01, 0.2), (-0.2, 0.1), mean_diff=0.0877),
                   comparison("cxr+cce", "enh+cce", (0.01, 0.2), (-0.2, 0.1), mean_diff=0.0877, n=2),
                   comparison("cxr+scce", "enh+scce", (0.5, 0.6), (-0.2, 0.1), mean_diff=0.55)]
    assert summary_lines(_grid(tmp_path, summary, comparisons)) == [
        "Lowest mean test loss: ENH+CCE at 41.23 (loss x 100) with accuracy 90.0 %.",
        "CXR+CCE - ENH+CCE: test loss +8.77 points (x 100; 95 % CI +1.00 to +20.00, paired over 2 seeds).",
        "CXR+CCE and CXR+SCCE trained bit-identical weights on 2 of 3 paired seeds: the losses coincide."]


def test_the_terminal_summary_of_equally_accurate_arms_claims_no_disagreement(tmp_path):
    summary = {"cxr+cce": arm(0.5, 0.9), "enh+cce": arm(0.4, 0.9)}
    first = summary_lines(_grid(tmp_path, summary, []))[0]
    assert first == "Lowest mean test loss: ENH+CCE at 40.00 (loss x 100) with accuracy 90.0 %."


def test_the_terminal_summary_says_when_loss_and_accuracy_disagree_and_nothing_differs(tmp_path):
    summary = {"cxr+cce": arm(0.5, 0.91), "enh+cce": arm(0.4, 0.9)}
    lines = summary_lines(_grid(tmp_path, summary, [comparison("cxr+cce", "enh+cce", (-1, 1), (-1, 1))]))
    assert lines[0] == ("Lowest mean test loss: ENH+CCE at 40.00 (loss x 100) with accuracy 90.0 %; highest "
                        "accuracy: CXR+CCE (91.0 %): loss and accuracy disagree. No two arms differ beyond the "
                        "seed-to-seed spread.")
    assert lines[-1] == "No two arms trained bit-identical weights."


@pytest.mark.parametrize("comparisons", [
    [comparison("cxr+cce", "enh+cce")],  # one seed: no interval, no claim
    [comparison("cxr+cce", "enh+cce", (0.1, 0.2), (-1, 1))],  # a pair differs
])
def test_the_terminal_summary_claims_no_spread_without_grounds(tmp_path, comparisons):
    summary = {"cxr+cce": arm(0.5, 0.8), "enh+cce": arm(0.4, 0.9)}
    assert "No two arms differ" not in summary_lines(_grid(tmp_path, summary, comparisons))[0]


def test_one_ranked_arm_makes_no_claim_about_the_spread(tmp_path):
    summary = {"cxr+cce": arm(0.5, 0.8, learned=False), "enh+cce": arm(0.4, 0.9)}
    first = summary_lines(_grid(tmp_path, summary, [comparison("cxr+cce", "enh+cce", (-1, 1), (-1, 1))]))[0]
    assert first == "Lowest mean test loss: ENH+CCE at 40.00 (loss x 100) with accuracy 90.0 %. Not above chance: CXR+CCE."


def test_the_terminal_summary_when_no_arm_learned(tmp_path):
    summary = {"cxr+cce": arm(0.5, 0.8, learned=False)}
    assert summary_lines(_grid(tmp_path, summary, []))[0] == (
        "The arms did not learn: no arm is above chance by the audit's rule (accuracy interval wholly more than "
        "0.10 above chance, or macro AUC interval wholly above 0.70, over seeds and test images); report.md says "
        "more.")


def test_with_an_audit_the_third_line_is_its_verdict(tmp_path):
    summary = {"cxr+cce": arm(0.5, 0.8), "enh+cce": arm(0.4, 0.9)}
    comparisons = [comparison("cxr+cce", "enh+cce", (0.01, 0.2), (-0.2, 0.1), mean_diff=0.1)]
    lines = summary_lines(_grid(tmp_path, summary, comparisons), audit=AUDIT)
    assert lines == ["Lowest mean test loss: ENH+CCE at 40.00 (loss x 100) with accuracy 90.0 %.",
                     "No two arms trained bit-identical weights.",
                     "Shortcut audit: CXR FLAGGED: confounded by source; ENH not flagged. Verdicts and the "
                     "occlusion curve in audit/audit.md."]


@pytest.mark.parametrize("first", ["enh+cce", "cxr+cce"])
def test_the_terminal_summary_compares_the_inputs_under_one_loss_in_either_order(tmp_path, first):
    second = "cxr+cce" if first == "enh+cce" else "enh+cce"
    summary = {"cxr+cce": arm(0.5, 0.8), "enh+cce": arm(0.4, 0.9), "enh+scce": arm(0.45, 0.9)}
    comparisons = [comparison("cxr+cce", "enh+scce", (0.5, 0.6), (-1, 1), mean_diff=0.05),
                   comparison(first, second, (0.01, 0.2), (-1, 1), mean_diff=0.1)]
    assert summary_lines(_grid(tmp_path, summary, comparisons))[1].startswith(
        f"{first.upper()} - {second.upper()}: test loss +10.00 points")


def test_the_terminal_summary_of_two_models_compares_inputs_within_a_model(tmp_path):
    summary = {"resnet50+cxr+cce": arm(0.5, 0.8), "resnet50+enh+cce": arm(0.4, 0.9), "cxr+cce": arm(0.45, 0.85)}
    comparisons = [comparison("cxr+cce", "resnet50+cxr+cce", (-1, 1), (-1, 1)),
                   comparison("resnet50+cxr+cce", "resnet50+enh+cce", (0.01, 0.2), (-1, 1), mean_diff=0.1)]
    assert summary_lines(_grid(tmp_path, summary, comparisons))[1] == (
        "RESNET50+CXR+CCE - RESNET50+ENH+CCE: test loss +10.00 points (x 100; 95 % CI +1.00 to +20.00, paired "
        "over 3 seeds).")
