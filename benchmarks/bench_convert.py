"""End-to-end conversion throughput with a per-stage breakdown and peak memory.

Generates (once, cached under ``benchmarks/data/``) a labelled set of synthetic
radiograph-like 8-bit PNGs at 1024x1024, then measures on this machine, with
``--workers`` processes:

* decode + resize alone (the workers' image stage, no features);
* features alone (``enhance`` on already-fitted 299x299 images, same processes);
* write alone (pieces + final HDF5 assembly of random arrays, one process);
* everything together: ``phasefeat.io.convert.convert``;
* peak RSS of the main and worker processes for a quarter of the set and the
  whole set (memory must not grow with the number of images).

These rows compute the features on the stored 299 px image (``--features-at 299``).
A second table (``--sweep-images``) converts a smaller set with the features at
working sizes 299, 512 and 1024 (on 1024 px inputs), and at native resolution on
2048 px inputs for two set sizes, with the peak RSS of each.

Prints a table and writes JSON. Each measurement runs in a fresh child process
so its peak RSS is its own.

    python benchmarks/bench_convert.py                  # 2,000 images, 2 workers
    python benchmarks/bench_convert.py --images 300     # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("covid", "normal", "pneumonia")
STUDY_IMAGES = 18_685


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images in the set (default 2000)")
    parser.add_argument("--source-size", type=int, default=1024, help="PNG side in pixels (1024)")
    parser.add_argument("--size", type=int, default=299, help="working size (299)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: all cores)")
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "data",
                        help="where the generated set is cached")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask LocalCluster rows")
    parser.add_argument("--sweep-images", type=int, default=96,
                        help="images per row of the working-size / native table (0: skip it)")
    parser.add_argument("--skip-main", action="store_true", help="only the working-size table")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "convert-cpu.json")
    return parser.parse_args(argv)


# ---- the generated set ----------------------------------------------------------------------

def _write_one(job):
    import numpy as np
    from PIL import Image

    from phasefeat.tools.phantom import chest_phantom

    path, size, seed = job
    if not Path(path).exists():
        image = chest_phantom(size, seed=seed, dtype="uint8")
        tmp = f"{path}.tmp"
        Image.fromarray(np.asarray(image)).save(tmp, format="PNG")
        os.replace(tmp, path)
    return path


def generated_set(folder: Path, n: int, size: int, workers: int) -> Path:
    import multiprocessing

    root = folder / f"phantoms-{size}-{n}"
    done = root / ".complete"
    if done.exists():
        return root
    jobs = []
    for i in range(n):
        cls = CLASSES[i % 3]
        (root / cls).mkdir(parents=True, exist_ok=True)
        jobs.append((str(root / cls / f"{i:06d}.png"), size, i))
    print(f"generating {n} synthetic {size}x{size} PNGs in {root} (once) ...", flush=True)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_one, jobs, chunksize=8):
            pass
    done.write_text("ok\n")
    return root


# ---- measurements, each in a fresh child process --------------------------------------------

CHILD = r'''
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
args = json.loads(sys.argv[1])
stage = args["stage"]
start = time.perf_counter()
count = 0
if stage == "convert":
    from phasefeat.io.convert import convert, ConvertOptions
    s = convert(args["root"], args["out"],
                options=ConvertOptions(size=args["size"], features_at=args.get("features_at", args["size"]),
                                       piece_size=args.get("piece_size", 64)),
                workers=args["workers"], backend="numpy", progress=False, overwrite=True,
                scheduler=args.get("scheduler"))
    count = s.converted
elif stage in ("decode", "features"):
    import multiprocessing, numpy as np
    from benchmarks.bench_convert import decode_files, enhance_images
    paths = [str(p) for p in sorted(__import__("pathlib").Path(args["root"]).rglob("*.png"))]
    chunks = [paths[k:k + 64] for k in range(0, len(paths), 64)]
    with multiprocessing.get_context("spawn").Pool(args["workers"]) as pool:
        if stage == "features":
            # Fitted inputs are prepared outside the timed part.
            fitted = pool.map(decode_files, [(c, args["size"]) for c in chunks])
            # Warm every worker (Numba cache load, filter banks) outside the timed part.
            pool.map(enhance_images, [fitted[0][:1]] * (4 * args["workers"]), chunksize=1)
            start = time.perf_counter()
            count = sum(pool.map(enhance_images, fitted))
        else:
            count = sum(len(x) for x in pool.imap_unordered(decode_files, [(c, args["size"]) for c in chunks]))
elif stage == "write":
    from phasefeat.io.assemble import random_store
    count = args["n"]
    random_store(args["out"], count, args["size"])
seconds = time.perf_counter() - start
print(json.dumps({{"stage": stage, "images": count, "seconds": seconds,
                  "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
'''


def decode_files(job):
    """Worker: read and fit a list of files (the convert image stage, no features)."""
    from phasefeat.io.imageio import fit, read_image

    paths, size = job
    return [fit(read_image(p).pixels, size) for p in paths]


def enhance_images(images):
    """Worker: ENH of a list of fitted images (the convert feature stage)."""
    import numpy as np

    from phasefeat.maths.features import enhance

    enhance(np.stack(images), backend="numpy", out="uint8")
    return len(images)


def measure(stage: str, **args) -> dict:
    code = CHILD.format(repo=str(REPO))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code, json.dumps({"stage": stage, **args})],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["img_s"] = row["images"] / row["seconds"]
    return row


def sweep(args, tmp) -> list[dict]:
    """Features at working sizes 299/512/1024 on 1024 px inputs, and native on 2048 px inputs.

    Pieces of 8 images, so even the smaller set runs in worker processes and the peak RSS
    of the two 2048 px rows compare like with like.
    """
    rows = []
    n = args.sweep_images
    inputs = generated_set(args.data, n, 1024, args.workers)
    for working in (299, 512, 1024):
        rows.append({"what": f"features at {working}, 1024 px inputs", "input_size": 1024,
                     "features_at": working,
                     **measure("convert", root=str(inputs), out=f"{tmp}/s{working}.h5", size=args.size,
                               workers=args.workers, features_at=working, piece_size=8)})
    for count in (max(n // 4, 3), n):
        big = generated_set(args.data, count, 2048, args.workers)
        rows.append({"what": f"native, {count} x 2048 px inputs", "input_size": 2048,
                     "features_at": "native",
                     **measure("convert", root=str(big), out=f"{tmp}/n{count}.h5", size=args.size,
                               workers=args.workers, features_at="native", piece_size=8)})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks._record import portable, write_record
    from phasefeat.backend import cpu_model

    settings = {k: portable(v) for k, v in vars(args).items()}
    Path(args.data).mkdir(parents=True, exist_ok=True)
    if args.skip_main:
        with tempfile.TemporaryDirectory(dir=args.data) as tmp:
            sweep_rows = sweep(args, tmp)
        print_sweep(sweep_rows, args)
        write_record(args.json.with_name(args.json.stem + "-features-at.json"), "convert-features-at",
                     cpu_model(), settings=settings, rows=sweep_rows)
        return 0

    root = generated_set(args.data, args.images, args.source_size, args.workers)
    # The main table: features on the stored image, comparable with earlier records.
    quarter = generated_set(args.data, max(args.images // 4, 3), args.source_size, args.workers)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        common = {"size": args.size, "workers": args.workers, "features_at": args.size}
        rows.append({"what": "decode + resize alone", **measure("decode", root=str(root), **common)})
        rows.append({"what": "features alone", **measure("features", root=str(root), **common)})
        rows.append({"what": "write alone", **measure("write", out=f"{tmp}/w.h5", n=args.images,
                                                      **common)})
        rows.append({"what": f"convert, {len(list(quarter.rglob('*.png')))} images",
                     **measure("convert", root=str(quarter), out=f"{tmp}/q.h5", **common)})
        rows.append({"what": f"convert, {args.images} images (all together)",
                     **measure("convert", root=str(root), out=f"{tmp}/all.h5", **common)})
        dask_rows = []
        if not args.no_dask:
            for n in (1, args.workers):
                dask_rows.append({"what": f"convert via Dask local:{n}, {args.images} images",
                                  **measure("convert", root=str(root), out=f"{tmp}/dask{n}.h5",
                                            scheduler=f"local:{n}", **common)})
    stages = rows[:3]
    slowest = min(stages, key=lambda r: r["img_s"])
    total = rows[-1]
    # If every stage shares the same cores, the best possible end-to-end rate is the
    # harmonic combination of the standalone rates, not the slowest one.
    harmonic = 1 / sum(1 / r["img_s"] for r in stages)
    dask = {}
    if dask_rows:
        one, many = dask_rows[0]["img_s"], dask_rows[-1]["img_s"]
        dask = {"dask_img_s_1_worker": one, f"dask_img_s_{args.workers}_workers": many,
                "dask_scaling_efficiency": many / (args.workers * one),
                "dask_overhead_vs_single_machine": 1 - many / total["img_s"]}
    rows += dask_rows
    summary = {
        **dask,
        "end_to_end_img_s": total["img_s"],
        "slowest_stage": slowest["what"], "slowest_stage_img_s": slowest["img_s"],
        "end_to_end_vs_slowest": total["img_s"] / slowest["img_s"],
        "shared_core_bound_img_s": harmonic,
        "end_to_end_vs_shared_core_bound": total["img_s"] / harmonic,
        "study_18685_minutes": STUDY_IMAGES / total["img_s"] / 60,
        "rss_main_mb_quarter_vs_all": [rows[3]["rss_main_mb"], total["rss_main_mb"]],
        "rss_workers_mb_quarter_vs_all": [rows[3]["rss_workers_mb"], total["rss_workers_mb"]],
    }
    print(f"\n{args.images} synthetic {args.source_size}x{args.source_size} PNGs -> {args.size}x{args.size}; "
          f"CPU {cpu_model()}, {os.cpu_count()} cores, {args.workers} workers\n")
    print(f"{'measurement':40s} {'images':>7s} {'seconds':>8s} {'img/s':>8s} {'main MB':>8s} {'worker MB':>9s}")
    for r in rows:
        print(f"{r['what']:40s} {r['images']:7d} {r['seconds']:8.1f} {r['img_s']:8.1f} "
              f"{r['rss_main_mb']:8.0f} {r['rss_workers_mb']:9.0f}")
    print(f"\nend-to-end / slowest stage ({slowest['what']}): {summary['end_to_end_vs_slowest']:.0%} (target >= 85%)")
    print(f"end-to-end / shared-core bound 1/sum(1/rate) = {harmonic:.1f} img/s: "
          f"{summary['end_to_end_vs_shared_core_bound']:.0%}")
    print(f"18,685 images at this rate: {summary['study_18685_minutes']:.1f} min (target <= 15)")
    if dask:
        print(f"Dask: scaling efficiency 1 -> {args.workers} workers {dask['dask_scaling_efficiency']:.0%}; "
              f"overhead vs the single-machine path at {args.workers} cores "
              f"{dask['dask_overhead_vs_single_machine']:.0%} (target <= 15%)")
    write_record(args.json, "convert", cpu_model(), settings=settings, rows=rows, summary=summary)
    if args.sweep_images:
        with tempfile.TemporaryDirectory(dir=args.data) as tmp:
            sweep_rows = sweep(args, tmp)
        print_sweep(sweep_rows, args)
        write_record(args.json.with_name(args.json.stem + "-features-at.json"), "convert-features-at",
                     cpu_model(), settings=settings, rows=sweep_rows)
    return 0


def print_sweep(rows, args) -> None:
    print(f"\nwhere the features are computed; store {args.size} px, {args.workers} workers")
    print(f"{'measurement':40s} {'images':>7s} {'seconds':>8s} {'img/s':>8s} {'main MB':>8s} {'worker MB':>9s}")
    for r in rows:
        print(f"{r['what']:40s} {r['images']:7d} {r['seconds']:8.1f} {r['img_s']:8.1f} "
              f"{r['rss_main_mb']:8.0f} {r['rss_workers_mb']:9.0f}")


if __name__ == "__main__":
    sys.exit(main())
