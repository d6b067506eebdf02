"""Training images/s of every backbone at 64x64 and 299x299 (ENH input, batch 16).

On whatever Keras runs on here (the CPU; a GPU where the backend has one). Each row times
a few training steps after one warm-up step that traces and compiles; the record keeps
every step's time.

    python benchmarks/bench_backbones.py
    KERAS_BACKEND=torch python benchmarks/bench_backbones.py --json benchmarks/results/backbones-gpu.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (median)")
    parser.add_argument("--sizes", default="64,299")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "backbones-cpu.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import keras
    import numpy as np

    from benchmarks._record import write_record
    from phasefeat.backend import cpu_model
    from trainer.backbones import MODEL_NAMES
    from trainer.model import classifier

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for name in MODEL_NAMES:
            model = classifier(name, (size, size, 3), 3,
                               preprocessing={"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.25] * 3})
            model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy", jit_compile=False)
            x = np.random.default_rng(0).integers(0, 256, (args.batch_size, size, size, 3), dtype=np.uint8)
            y = np.eye(3, dtype=np.float32)[np.arange(args.batch_size) % 3]
            model.train_on_batch(x, y)
            seconds = []
            for _ in range(args.steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                seconds.append(time.perf_counter() - start)
            step = statistics.median(seconds)
            rows.append({"model": name, "size": size, "batch": args.batch_size, "seconds": seconds,
                         "img_s": args.batch_size / step, "params": model.count_params()})
            print(f"{name:18s} {size:4d} px  {args.batch_size / step:8.1f} images/s  "
                  f"({step:.2f} s per step, {model.count_params() / 1e6:.1f} M parameters)", flush=True)
            keras.backend.clear_session()
    write_record(args.json, "backbones", cpu_model(), machine={"cores": os.cpu_count()},
                 keras=keras.__version__, backend=keras.backend.backend(), rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
