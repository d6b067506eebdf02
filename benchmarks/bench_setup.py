"""What the README's commands cost on this machine: time, peak memory and disk.

Runs ``make install``, ``make test`` and ``make demo`` in a fresh virtual environment and a
fresh output folder (both temporary, deleted afterwards), one after another, and samples
the memory of each command's whole process tree every half second.

    python benchmarks/bench_setup.py                   # all three (about 25 min on 2 cores)
    python benchmarks/bench_setup.py --steps install,demo

Prints a table and writes ``benchmarks/results/setup-cpu.json``.
"""

from __future__ import annotations

import argparse
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


def timed(command: list[str], log: Path) -> dict:
    """Run ``command`` in the repository; its wall time, exit status and peak process-tree memory."""
    import psutil

    peak = [0]
    with open(log, "w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
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
    return {"command": " ".join(command[:2]), "exit_status": code, "seconds": round(seconds, 1),
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
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    steps = args.steps
    work = Path(tempfile.mkdtemp(prefix="phasefeat-setup-"))
    venv, out = work / "venv", work / "out"
    rows = {}
    try:
        for step in steps:
            target = {"install": "install", "test": "test", "demo": "demo"}[step]
            row = timed(["make", target, f"VENV={venv}", f"OUT={out}", "--no-print-directory"],
                        work / f"{step}.log")
            rows[step] = row
            print(f"{step:<8} {row['seconds']:>8.1f} s  peak {row['peak_tree_rss_gb']:>5.2f} GB  "
                  f"exit {row['exit_status']}", flush=True)
            if row["exit_status"] != 0:
                print((work / f"{step}.log").read_text()[-3000:], file=sys.stderr)
                return 1
        venv_gb = disk_gb(venv) if venv.exists() else None
        out_gb = disk_gb(out) if out.exists() else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'step':<8} {'wall':>10} {'peak memory':>12}")
    for step, row in rows.items():
        print(f"{step:<8} {row['seconds'] / 60:>8.1f} m {row['peak_tree_rss_gb']:>9.2f} GB")
    print(f".venv on disk: {venv_gb} GB; demo output: {out_gb} GB")
    if args.cpu is None:
        sys.path.insert(0, str(REPO))
        from phasefeat.backend import cpu_model

        args.cpu = f"{cpu_model()} VM (development machine)"
    write_record(args.out, "setup", args.cpu, steps=rows, venv_disk_gb=venv_gb, demo_out_disk_gb=out_gb,
                 note="fresh virtual environment and output folder; pip's download cache as found on the "
                      "machine; peak memory: the whole process tree, sampled every 0.5 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
