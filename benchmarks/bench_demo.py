"""How long `make demo` takes here: wall time, CPU time and peak memory of the whole recipe.

Runs the README's first command into a fresh output folder (the virtual environment must
already exist; installing it is not timed) and writes a JSON record.

    python benchmarks/bench_demo.py
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "demo-cpu.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks._record import write_record
    from phasefeat.backend import cpu_model

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        done = subprocess.run(["make", "--no-print-directory", "demo", f"OUT={out}"], cwd=REPO,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:])
            return 1
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")][:3]
    row = {"wall_s": wall, "user_s": usage.ru_utime, "system_s": usage.ru_stime,
           "peak_rss_mb": usage.ru_maxrss / 1024, "summary": summary}
    print(f"make demo: {wall:.0f} s wall, {usage.ru_utime + usage.ru_stime:.0f} s CPU, "
          f"peak RSS {usage.ru_maxrss / 1024:.0f} MB (largest process)")
    write_record(args.json, "demo", cpu_model(), machine={"cores": os.cpu_count()}, rows=[row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
