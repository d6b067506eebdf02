"""docs/testing.md's mutation counts are those of the records in benchmarks/results/mutation/.

Each module's count is its last full run (or ``--resume`` run) less what the reruns after it killed; the
rows of its table of equivalent mutants add up to what is left.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "benchmarks" / "results" / "mutation"

#: Per module: its last full run, then the reruns of its survivors, in order.
CHAINS = {
    "trainer/splits.py": ["splits-run", "splits-rerun", "splits-rerun2"],
    "trainer/experiment.py": ["experiment-run", "experiment-rerun-targeted", "experiment-rerun2",
                              "experiment-rerun3", "experiment-rerun4"],
    "phasefeat/io/store.py": ["store-run4"],
    "trainer/audit.py": ["audit-run3"],
    "trainer/metrics.py": ["metrics-run2"],
    "trainer/losses.py": ["losses-run", "losses-rerun"],
    "phasefeat/maths/scaling.py": ["scaling-run", "scaling-rerun", "scaling-rerun2"],
    "phasefeat/maths/elea.py": ["elea-run", "elea-rerun", "elea-rerun2"],
    "trainer/data.py": ["data-run2", "data-rerun"],
    "phasefeat/io/progress.py": ["progress-io-run", "progress-io-rerun", "progress-io-rerun2"],
    "trainer/report_html.py": ["report-html-run", "report-html-rerun"],
    "phasefeat/io/discover.py": ["discover-run3", "discover-rerun"],
    "trainer/progress.py": ["progress-trainer-run", "progress-trainer-rerun", "progress-trainer-rerun2"],
    "trainer/checkpoint.py": ["checkpoint-run", "checkpoint-rerun"],
    "trainer/report_figures.py": ["report-figures-run", "report-figures-rerun", "report-figures-rerun2"],
    "trainer/saved.py": ["saved-run", "saved-rerun", "saved-rerun2"],
    "trainer/report_summary.py": ["report-summary-run", "report-summary-rerun", "report-summary-rerun2"],
    "phasefeat/io/assemble.py": ["assemble-run", "assemble-rerun", "assemble-rerun2"],
    "trainer/worker.py": ["worker-run", "worker-rerun", "worker-rerun2"],
    "phasefeat/io/pieces.py": ["pieces-run", "pieces-rerun"],
    "trainer/grid.py": ["grid-run", "grid-rerun", "grid-rerun3", "grid-rerun4"],
    "trainer/cluster.py": ["cluster-run", "cluster-rerun", "cluster-rerun2"],
    "phasefeat/io/convert.py": ["convert-run", "convert-rerun", "convert-rerun2", "convert-rerun3"],
}


def _record(name: str, module: str) -> dict:
    entries = json.loads((RECORDS / f"{name}.json").read_text())
    return next(entry for entry in entries if entry["module"] == module)


def _section(module: str) -> str:
    text = (ROOT / "docs" / "testing.md").read_text()
    start = text.index(f"### `{module}`")
    end = text.find("\n### ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.mark.parametrize("module", CHAINS)
def test_the_documented_count_is_the_records(module):
    run, *reruns = (_record(name, module) for name in CHAINS[module])
    assert "rerun_of" not in run and all("rerun_of" in r for r in reruns)
    left = run["survived"] - sum(r["rerun_of"] - r["survived"] for r in reruns)
    assert len(run["survivors"]) == run["survived"] and all(len(r["survivors"]) == r["survived"] for r in reruns)
    count = re.search(r"Count: (\d+) mutants, (\d+) killed, (\d+) equivalent", _section(module))
    assert count, f"no count line for {module}"
    assert tuple(map(int, count.groups())) == (run["mutants"], run["mutants"] - left, left)


@pytest.mark.parametrize("module", CHAINS)
def test_the_table_of_equivalent_mutants_adds_up(module):
    section = _section(module)
    equivalent = int(re.search(r"Count: \d+ mutants, \d+ killed, (\d+) equivalent", section).group(1))
    rows = re.findall(r"^\|(?:[^|\\]|\\\|)*\|\s*(\d+)\s*\|", section, flags=re.MULTILINE)
    assert sum(map(int, rows)) == equivalent
