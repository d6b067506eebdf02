"""Wall time of one small grid run one after another, and on a local Dask cluster of 1 and 2 workers.

The grid: CXR/ENH x CCE/SCCE x 2 repeats (8 runs), VGG16 at 1/8 width on 64 px phantoms,
5 epochs. Modes, each timed end to end as the `trainer compare` command a user types:

* ``sequential-1t``: no --scheduler (one process), pinned to one thread per run through the
  environment (TF_NUM_INTRAOP_THREADS=1 ...), so that it differs from ``local:1`` only by the
  Dask path: the baseline of the per-run overhead;
* ``sequential``: no --scheduler, TensorFlow's default threads (what a user gets);
* ``local:1`` and ``local:2``: --scheduler local:N --threads-per-run 1.

Every mode runs ``--repeat`` times, interleaved; the table shows medians. The record says
whether local:1 and local:2 gave identical runs.csv rows (they must).

    python benchmarks/bench_grid.py            # ~6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = ["--inputs", "cxr,enh", "--losses", "cce,scce", "--repeats", "2", "--epochs", "5", "--patience", "5",
        "--width", "0.125", "--batch-size", "8"]
MODES = {"sequential-1t": [], "sequential": [], "local:1": ["--scheduler", "local:1", "--threads-per-run", "1"],
         "local:2": ["--scheduler", "local:2", "--threads-per-run", "1"]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of every mode (median)")
    parser.add_argument("--per-class", type=int, default=40, help="phantoms per class (3 classes)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "grid-cpu.json")
    return parser.parse_args(argv)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _store(tmp: Path, per_class: int) -> Path:
    raw, store = tmp / "raw", tmp / "enh.h5"
    subprocess.run([_bin("phasefeat"), "demo-data", str(raw), "--per-class", str(per_class), "--seed", "0"],
                   check=True, capture_output=True)
    subprocess.run([_bin("phasefeat"), "convert", str(raw), str(store), "--size", "64", "-q"], check=True,
                   capture_output=True)
    return store


def _compare(store: Path, out: Path, mode: str) -> tuple[float, list[dict]]:
    from trainer.worker import thread_environment

    env = dict(os.environ)
    if mode == "sequential-1t":
        env.update(thread_environment(1))
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([_bin("trainer"), "compare", "--store", str(store), "--out", str(out), *GRID,
                           *MODES[mode]], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed: {done.stderr.strip().splitlines()[-1]}")
    with open(out / "runs.csv") as handle:
        return seconds, list(csv.DictReader(handle))


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import json

    from benchmarks._record import write_record
    from phasefeat.backend import cpu_model

    walls = {mode: [] for mode in MODES}
    fits = {mode: [] for mode in MODES}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = _store(tmp, args.per_class)
        for k in range(args.repeat):
            for mode in MODES:
                seconds, rows = _compare(store, tmp / "out", mode)
                walls[mode].append(seconds)
                train = sum(json.loads((tmp / "out" / "runs" / r["run"] / "result.json").read_text())
                            ["train_seconds"] for r in rows)
                fits[mode].append(train)
                runs.setdefault(mode, rows)
                print(f"{mode:14s} repeat {k}: {seconds:6.1f} s wall, {train:6.1f} s in fit() over "
                      f"{len(rows)} runs", flush=True)
    n = len(runs["local:1"])
    median = {mode: statistics.median(v) for mode, v in walls.items()}
    identical = runs["local:1"] == runs["local:2"]
    same_weights = [r["weights_sha256"] for r in runs["sequential-1t"]] == \
        [r["weights_sha256"] for r in runs["local:1"]]
    overhead = (median["local:1"] - median["sequential-1t"]) / n
    print(f"\n{'mode':14s} {'wall s (median)':>16s} {'per run s':>10s} {'vs local:1':>11s}")
    for mode in MODES:
        print(f"{mode:14s} {median[mode]:16.1f} {median[mode] / n:10.1f} {median[mode] / median['local:1']:11.2f}")
    print(f"\nlocal:2 / local:1 = {median['local:2'] / median['local:1']:.2f} (target <= 0.75); "
          f"Dask-path overhead {overhead:.1f} s per run (local:1 - sequential at 1 thread, / {n}); "
          f"identical runs.csv between local:1 and local:2: {identical}; sequential at 1 thread trains "
          f"the same weights as local:1: {same_weights}")
    write_record(args.json, "grid", cpu_model(), machine={"cores": os.cpu_count()},
                 grid=GRID, runs=n, repeat=args.repeat, wall_seconds=walls, median_seconds=median,
                 fit_seconds=fits,
                 ratio_local2_local1=median["local:2"] / median["local:1"], overhead_per_run_s=overhead,
                 identical_local1_local2=identical, same_weights_sequential_1t_local1=same_weights)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
