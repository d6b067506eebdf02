"""Streaming throughput: the store -> Keras data pipeline alone, and VGG16 training speed.

* Pipeline: images/s that ``trainer.data.StoreBatches`` delivers (ENH uint8
  299x299, batch 32, shuffled, one epoch), read directly and through
  ``model.fit`` of a trivial model with Keras' own worker threads (1 and 2).
* Training: images/s of ``vgg16_classifier`` at a few input sizes and widths
  (a few steps after warm-up).

The store is synthetic (random uint8, made once under ``benchmarks/data/``):
with no compression the pipeline's speed does not depend on the pixel values.
Prints a table and writes JSON.

    python benchmarks/bench_stream.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
TARGET = 2000.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2048, help="samples in the synthetic store")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "data")
    parser.add_argument("--skip-training", action="store_true", help="pipeline rows only")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "stream-cpu.json")
    return parser.parse_args(argv)


def synthetic_store(folder: Path, n: int, size: int = 299) -> Path:
    from phasefeat.io.assemble import random_store

    path = folder / f"stream-{n}-{size}.h5"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        random_store(path, n, size)
    return path


def pipeline_rows(store: Path, batch_size: int) -> list[dict]:
    import keras
    import numpy as np

    from phasefeat.io.store import open_store
    from trainer.data import StoreBatches

    with open_store(store) as s:
        labels = s.labels.copy()
    n = len(labels)
    rows = []

    def direct(threads):
        ds = StoreBatches(store, np.arange(n), "enh", labels, 3, "onehot", batch_size, shuffle=True, seed=1)
        ds[0]
        start = time.perf_counter()
        if threads == 1:
            for i in range(len(ds)):
                ds[i]
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(ds.__getitem__, range(len(ds))))
        seconds = time.perf_counter() - start
        ds.close()
        return seconds

    for threads in (1, 2):
        seconds = direct(threads)
        rows.append({"what": f"pipeline, direct, {threads} thread(s)", "img_s": n / seconds,
                     "seconds": seconds, "images": n})
    inputs = keras.Input((299, 299, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    tiny = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    tiny.compile("sgd", "categorical_crossentropy", jit_compile=False)
    for workers in (1, 2):
        ds = StoreBatches(store, np.arange(n), "enh", labels, 3, "onehot", batch_size, shuffle=True,
                          seed=1, workers=workers, use_multiprocessing=False)
        tiny.fit(ds, epochs=1, steps_per_epoch=4, verbose=0, shuffle=False)
        start = time.perf_counter()
        tiny.fit(ds, epochs=1, verbose=0, shuffle=False)
        seconds = time.perf_counter() - start
        ds.close()
        rows.append({"what": f"pipeline through fit (tiny model), {workers} worker thread(s)",
                     "img_s": n / seconds, "seconds": seconds, "images": n})
    return rows


def training_rows(batch_size: int) -> list[dict]:
    import keras
    import numpy as np

    from trainer.model import vgg16_classifier

    rows = []
    for size, width, steps in ((64, 0.125, 20), (128, 0.125, 10), (299, 0.125, 5), (64, 1.0, 3)):
        model = vgg16_classifier((size, size, 3), 3, width=width,
                                 preprocessing={"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.25] * 3})
        model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy", jit_compile=False)
        x = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
        y = np.eye(3, dtype=np.float32)[np.arange(batch_size) % 3]
        model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        seconds = time.perf_counter() - start
        rows.append({"what": f"VGG16 train step, {size}x{size}, width {width:g}", "img_s":
                     steps * batch_size / seconds, "seconds": seconds, "images": steps * batch_size})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import keras

    from phasefeat.backend import cpu_model

    store = synthetic_store(args.data, args.samples)
    rows = pipeline_rows(store, args.batch_size)
    if not args.skip_training:
        rows += training_rows(args.batch_size)
    best = max(r["img_s"] for r in rows if r["what"].startswith("pipeline through fit"))
    print(f"\n{args.samples} samples ENH uint8 299x299, batch {args.batch_size}; CPU {cpu_model()}, "
          f"{os.cpu_count()} cores; Keras {keras.__version__} ({keras.backend.backend()})\n")
    print(f"{'measurement':58s} {'images/s':>10s}")
    for r in rows:
        print(f"{r['what']:58s} {r['img_s']:10.1f}")
    print(f"\ntarget: pipeline >= {TARGET:g} images/s through fit: {best:.0f} "
          f"({'MET' if best >= TARGET else 'MISSED'})")
    from benchmarks._record import write_record

    write_record(args.json, "stream", cpu_model(), keras=keras.__version__, backend=keras.backend.backend(),
                 settings={"samples": args.samples, "batch_size": args.batch_size}, rows=rows,
                 target_img_s=TARGET, best_pipeline_through_fit_img_s=best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
