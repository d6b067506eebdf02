"""What the README's commands cost on this machine: time, peak memory and disk.

Runs ``make install``, ``make test`` and ``make demo`` in a fresh virtual environment and a
fresh output folder (both temporary, deleted afterwards), one after another, and samples
the memory of each command's whole process tree every half second.

    python benchmarks/bench_setup.py                   # all three (about 25 min on 2 cores)
    python benchmarks/bench_setup.py --steps install,demo
    python benchmarks/bench_setup.py --steps test --venv .venv --baseline bb4c44e

With ``--baseline REV`` the steps run first on that revision (checked out from git into a temporary
folder) and then on this working tree, one after the other in one run, in the environment ``--venv``
(installed once, used by both: each tree's code is imported from the tree itself, through PYTHONPATH).

Prints a table and writes ``benchmarks/results/setup-cpu.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import REPO, write_record

STEPS = ("install", "test", "demo")


def _tree_rss(process) -> int:
    """Resident bytes of ``process`` and all its descendants (0 for those that just ended)."""
    import psutil

    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def timed(command: list[str], log: Path, tree: Path = REPO, env: dict | None = None) -> dict:
    """Run ``command`` in ``tree``; its wall time, exit status and peak process-tree memory."""
    import psutil

    peak = [0]
    with open(log, "w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=tree, stdout=out, stderr=subprocess.STDOUT, env=env)
        root = psutil.Process(child.pid)

        def sample():
            while child.poll() is None:
                try:
                    peak[0] = max(peak[0], _tree_rss(root))
                except psutil.Error:
                    pass
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = child.wait()
        seconds = time.perf_counter() - started
        sampler.join()
    return {"exit_status": code, "seconds": round(seconds, 1),
            "peak_tree_rss_gb": round(peak[0] / 1e9, 2)}


def disk_gb(path: Path) -> float:
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return round(int(done.stdout.split()[0]) / 1e9, 2)


def parse_args(argv=None):
    """The command line; ``steps`` is checked and returned as a list."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated: install, test, demo")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "setup-cpu.json")
    parser.add_argument("--cpu", default=None,
                        help="how to name this machine's CPU in the record [default: its model, 2-core ...]")
    parser.add_argument("--venv", type=Path, default=None,
                        help="an installed environment to use instead of a fresh one (no install step)")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also run the steps on this git revision first, side by side (needs --venv)")
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    if args.venv is not None:
        args.venv = args.venv.resolve()
        if not (args.venv / "bin" / "python").exists():
            parser.error(f"--venv {args.venv} has no bin/python")
        if "install" in args.steps:
            parser.error("--venv uses an installed environment: leave install out of --steps")
    if args.baseline and args.venv is None:
        parser.error("--baseline needs --venv (both trees run in one installed environment)")
    return args


def checkout(rev: str, into: Path) -> Path:
    """The tree of git revision ``rev``, written under ``into`` (``git archive``: no .git, nothing ignored)."""
    tree = into / f"baseline-{rev}"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def link_venv(tree: Path, venv: Path) -> None:
    """Give a baseline checkout the ``.venv`` a checkout has after ``make`` (the shared environment):
    the docs' commands name ``--venv .venv``, and the tests read them from the checkout."""
    if tree != REPO and not (tree / ".venv").exists():
        (tree / ".venv").symlink_to(venv, target_is_directory=True)


def run_steps(label: str, steps, tree: Path, venv: Path, out: Path, logs: Path, reuse_venv: bool) -> dict:
    """Each step's row for the tree ``tree``; stops at the first failure (its log's end to stderr)."""
    env = None
    make = ["make"]
    if reuse_venv:
        # This tree's code first on the path; the environment's install stamps are taken as up to date.
        env = {**os.environ, "PYTHONPATH": str(tree)}
        shared = REPO.parent / "shared" / "data" / "cxr-real"
        if shared.is_dir():  # the tests find it beside the checkout; a baseline tree has none beside it
            env.setdefault("PHASEFEAT_CXR_REAL", str(shared))
        make += ["-o", str(venv / ".installed-test"), "-o", str(venv / ".installed-train"),
                 "-o", str(venv / ".installed")]
    rows = {}
    for step in steps:
        row = timed([*make, step, f"VENV={venv}", f"OUT={out}", "--no-print-directory"],
                    logs / f"{label}-{step}.log", tree, env)
        rows[step] = {"command": f"make {step}", **row}
        print(f"{label:<9} {step:<8} {row['seconds']:>8.1f} s  peak {row['peak_tree_rss_gb']:>5.2f} GB  "
              f"exit {row['exit_status']}", flush=True)
        if row["exit_status"] != 0:
            print((logs / f"{label}-{step}.log").read_text()[-3000:], file=sys.stderr)
            break
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    steps = args.steps
    work = Path(tempfile.mkdtemp(prefix="phasefeat-setup-"))
    venv, out = args.venv or work / "venv", work / "out"
    trees = {"this tree": REPO}
    if args.baseline:
        trees = {"baseline": checkout(args.baseline, work), "this tree": REPO}
    results = {}
    try:
        for label, tree in trees.items():
            if args.venv is not None:
                link_venv(tree, venv)
            results[label] = run_steps(label, steps, tree, venv, out / label.replace(" ", "-"), work,
                                       args.venv is not None)
            if any(r["exit_status"] != 0 for r in results[label].values()):
                if label != "baseline":
                    return 1
                # An older revision may fail a test on this machine (a test since fixed): its time is
                # still the time of the whole suite, recorded with its exit status.
                print("the baseline failed (its exit status is recorded); this tree runs next", flush=True)
        venv_gb = disk_gb(venv) if venv.exists() and args.venv is None else None
        out_gb = disk_gb(out) if out.exists() and args.venv is None else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'tree':<10} {'step':<8} {'wall':>10} {'peak memory':>12}")
    for label, rows in results.items():
        for step, row in rows.items():
            print(f"{label:<10} {step:<8} {row['seconds'] / 60:>8.1f} m {row['peak_tree_rss_gb']:>9.2f} GB")
    if args.baseline:
        for step in steps:
            print(f"{step}: {results['baseline'][step]['seconds'] / results['this tree'][step]['seconds']:.2f}x "
                  f"faster than {args.baseline}")
    else:
        print(f".venv on disk: {venv_gb} GB; demo output: {out_gb} GB")
    if args.cpu is None:
        sys.path.insert(0, str(REPO))
        from phasefeat.backend import cpu_model

        args.cpu = f"{cpu_model()} VM (development machine)"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                             capture_output=True, text=True).stdout.strip()
    extra = {"steps": results["this tree"], "revision": head or None, "uncommitted_changes": bool(changed)}
    note = ("fresh virtual environment and output folder; pip's download cache as found on the machine; "
            "peak memory: the whole process tree, sampled every 0.5 s")
    if args.venv is not None:
        note = ("an installed environment shared by the trees (each tree's code imported from the tree, "
                "PYTHONPATH), a fresh output folder; peak memory: the whole process tree, sampled every 0.5 s")
    if args.baseline:
        commit = subprocess.run(["git", "rev-parse", args.baseline], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        extra["baseline"] = {"revision": commit, "steps": results["baseline"]}
        extra["order"] = "baseline first, then this tree, one after the other"
    else:
        extra.update(venv_disk_gb=venv_gb, demo_out_disk_gb=out_gb)
    write_record(args.out, "setup", args.cpu, note=note, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
