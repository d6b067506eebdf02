"""HDF5 compression of a store: size per sample, write and random-read speed, per filter.

Converts 30 radiographs (the shared real ones where present, phantoms otherwise) at 299x299
once, then for each ``--compression`` writes their CXR and ENH one sample per chunk (as
``assemble`` does) and reads ``/enh`` back in a random order, warm cache, one process.
Medians of ``--repeats`` passes; every pass is in the record.

    python benchmarks/bench_store.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "store-cpu.json")
    return parser.parse_args(argv)


def source_folder(tmp: Path, n: int) -> tuple[Path, str]:
    real = REPO.parent / "shared" / "data" / "cxr-real"
    if real.is_dir():
        picked = tmp / "real"
        for k, path in enumerate(sorted(p for p in real.rglob("*") if p.suffix in (".png", ".jpg", ".jpeg"))):
            if k % max(1, 120 // n) == 0 and len(list(picked.rglob("*.*"))) < n:
                target = picked / path.parent.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path)
        return picked, f"{n} shared real radiographs"
    from phasefeat.tools.demo_data import write_demo_data

    write_demo_data(tmp / "phantoms", per_class=n // 3, seed=0)
    return tmp / "phantoms", f"{n} phantoms"


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import h5py
    import numpy as np

    from benchmarks._record import write_record
    from phasefeat.backend import cpu_model
    from phasefeat.io.convert import ConvertOptions, convert
    from phasefeat.io.store import open_store

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, source = source_folder(tmp, args.images)
        convert(folder, tmp / "plain.h5", options=ConvertOptions(size=299, features_at=299), backend="numpy",
                progress=False, workers=1)
        with open_store(tmp / "plain.h5") as store:
            n = len(store)
            cxr, enh = store.read_many(range(n), "cxr"), store.read_many(range(n), "enh")
        order = np.random.default_rng(0).permutation(n)
        for compression in ("none", "lzf", "gzip"):
            opts = {} if compression == "none" else {"compression": compression}
            writes, reads = [], []
            for k in range(args.repeats):
                path = tmp / f"{compression}-{k}.h5"
                start = time.perf_counter()
                with h5py.File(path, "w") as f:
                    for name, data in (("cxr", cxr), ("enh", enh)):
                        ds = f.create_dataset(name, data.shape, dtype=data.dtype, chunks=(1, *data.shape[1:]),
                                              **opts)
                        for i in range(n):
                            ds[i] = data[i]
                writes.append(time.perf_counter() - start)
                with h5py.File(path, "r") as f:
                    ds = f["enh"]
                    for i in order:  # warm the cache
                        ds[int(i)]
                    start = time.perf_counter()
                    for i in order:
                        ds[int(i)]
                    reads.append(time.perf_counter() - start)
            size = os.path.getsize(tmp / f"{compression}-0.h5") / n
            rows.append({"compression": compression, "bytes_per_sample": size,
                         "write_samples_s": n / statistics.median(writes), "write_seconds": writes,
                         "read_enh_samples_s": n / statistics.median(reads), "read_seconds": reads})
            print(f"{compression:6s} {size / 1e3:8.0f} kB/sample  write {rows[-1]['write_samples_s']:8.0f} "
                  f"samples/s  read /enh {rows[-1]['read_enh_samples_s']:8.0f} samples/s")
    write_record(args.json, "store", cpu_model(), settings={"images": n, "source": source,
                                                              "repeats": args.repeats}, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
