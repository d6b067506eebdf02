"""Every time estimate the tools print, beside the time it estimated: phantoms and the shared radiographs.

    python benchmarks/bench_estimates.py [--real PATH] [--json PATH]

* Conversion (``phasefeat convert`` at the default: ENH at each image's native resolution): the bar's
  estimate of the images' whole time (elapsed + time left) when a quarter of them are done, against the
  time they took.
* Grid (``trainer compare`` on a 64 px store, the demo's settings): the estimate printed after the first
  run's second epoch (as if every run trained to its last epoch) and the one printed after the first run
  (the runs left at that run's time), each against the time the runs it speaks of took.

A ratio estimate / measured inside 0.5-2 passes. Prints a table and writes a JSON record.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = ["--width", "0.125", "--epochs", "15", "--patience", "5", "--learning-rate", "0.0003", "--batch-size", "8",
        "--repeats", "2"]


def seconds_of(text: str) -> float:
    """``"42 s"``, ``"7 min"``, ``"1.9 h"`` (the tools' durations) in seconds."""
    value, unit = text.split()
    return float(value) * {"s": 1, "min": 60, "h": 3600}[unit]


def conversion_estimate(raw: Path, out: Path) -> dict:
    """Convert ``raw`` at the defaults, recording the bar; the estimate at a quarter against the time taken."""
    from phasefeat.io import convert as convert_module
    from phasefeat.io.progress import SteadyRateBar

    snapshots = []

    class RecordingBar(SteadyRateBar):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.created = time.perf_counter()
            snapshots.append(("start", self.total, self.created, None))

        def update(self, n=1):
            done = super().update(n)
            snapshots.append((self.n, self.total, time.perf_counter(), self.steady_rate()))
            return done

    real_bar = convert_module.SteadyRateBar
    convert_module.SteadyRateBar = RecordingBar
    try:
        convert_module.convert(raw, out, workers=os.cpu_count() or 1, progress=True)
    finally:
        convert_module.SteadyRateBar = real_bar
    _, total, start, _ = snapshots[0]
    finished = next(t for n, _, t, _ in snapshots[1:] if n >= total)
    at = next((n, t, rate) for n, _, t, rate in snapshots[1:] if n >= total / 4 and rate)
    n, t, rate = at
    estimate = (t - start) + (total - n) / rate
    return {"what": f"convert {total} images: the bar at {n} done", "estimate_s": estimate,
            "measured_s": finished - start}


def grid_estimates(store: Path, out: Path) -> list[dict]:
    """Run the demo's grid on ``store``; each printed estimate against the time its runs then took."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "trainer", "compare", "--store", str(store), "--out", str(out), *GRID]
    lines, started = [], time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as proc:
        for line in proc.stdout:
            lines.append((time.perf_counter(), line.rstrip()))
    if proc.returncode != 0:
        raise SystemExit(f"trainer compare failed: {lines[-5:]}")
    # The runs end where the report begins: the last run's folder is written before it.
    runs = sorted(out.glob("runs/*/result.json"), key=lambda p: p.stat().st_mtime)
    ended = runs[-1].stat().st_mtime - time.time() + time.perf_counter()
    rows = []
    for at, line in lines:
        upper = re.search(r"first epoch .* \(about (\S+ \S+) in all", line)
        left = re.search(r" took .* left need about (\S+ \S+)", line)
        if upper:
            rows.append({"what": "grid: after the first run's second epoch (every run to its last epoch)",
                         "estimate_s": seconds_of(upper.group(1)), "measured_s": ended - at})
        if left:
            rows.append({"what": "grid: after the first run (the runs left at its time)",
                         "estimate_s": seconds_of(left.group(1)), "measured_s": ended - at})
    rows.append({"what": "grid: whole command", "measured_s": ended - started, "estimate_s": None})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "cxr-real",
                        help="class folders of real radiographs [default: ../shared/data/cxr-real]")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "estimates-cpu.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks._record import write_record
    from phasefeat.backend import cpu_model
    from phasefeat.io.convert import ConvertOptions, convert
    from phasefeat.tools.demo_data import write_demo_data

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = {"phantoms": tmp / "phantoms"}
        write_demo_data(inputs["phantoms"], per_class=60, seed=0, shortcut=True)
        if args.real.is_dir():
            inputs["shared radiographs"] = args.real
        for name, raw in inputs.items():
            row = conversion_estimate(raw, tmp / f"{name}-native.h5")
            rows.append({"data": name, **row})
            small = tmp / f"{name}-64.h5"
            convert(raw, small, options=ConvertOptions(size=64, features_at=64), progress=False)
            rows += [{"data": name, **r} for r in grid_estimates(small, tmp / f"{name}-grid")]
    print(f"{'data':<20}{'estimate':<92}{'estimated s':>12}{'measured s':>12}{'ratio':>8}")
    for r in rows:
        r["ratio"] = r["estimate_s"] / r["measured_s"] if r["estimate_s"] else None
        r["within_2x"] = None if r["ratio"] is None else 0.5 <= r["ratio"] <= 2.0
        shown = "" if r["estimate_s"] is None else f"{r['estimate_s']:.0f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['data']:<20}{r['what']:<92}{shown:>12}{r['measured_s']:>12.0f}{ratio:>8}")
    write_record(args.json, "estimates", cpu_model(), machine={"cores": os.cpu_count()}, rows=rows,
                 grid=" ".join(GRID),
                 note="estimates as the tools print them, against the time the work they estimate took; "
                      "conversion at the defaults, grid on a 64 px store with features at 64")
    return 0 if all(r["within_2x"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
