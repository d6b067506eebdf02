"""The default conversion's work at native resolution: this tree beside an earlier revision, in one run.

    python benchmarks/bench_native.py [--baseline REV] [--size 1024] [--images 8] [--repeats 5]
                                      [--convert-rounds 3] [--skip-enhance | --skip-convert]

The baseline's ``phasefeat`` is taken from git (``git archive REV phasefeat``) into a
temporary folder; each side runs in its own process pinned to one core, the two sides
alternate round by round (so drift in the machine's load hits both), and every round times
one pass over the same images (the shared radiographs resized to SIZE x SIZE, phantoms
where that folder is absent), float32, the default ``qi2021`` parameters. The table gives
the median seconds per image of each side and their ratio, and how far the outputs are
apart (largest float difference, share of uint8 pixels that differ).

Then ``phasefeat convert`` end to end (decode, features at each image's native size,
resize, writing the store) of the same radiographs folder at the defaults, on every
core, each side's command alternating with the other's after one untimed run each
(Numba's cache): images/s and the stores' ENH difference. Writes a JSON record.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "cxr-real"
# The last commit before the native-resolution kernels of this benchmark's record.
DEFAULT_BASELINE = "8f86dc1afbf44415a4d0c313d5004b6f9650b64c"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare with")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (1024)")
    parser.add_argument("--images", type=int, default=8, help="images per pass (8)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds; medians over them (5)")
    parser.add_argument("--source", type=Path, default=DEFAULT_IMAGES,
                        help="folder of radiographs (default: the shared real set; phantoms if absent)")
    parser.add_argument("--convert-rounds", type=int, default=3, help="timed conversions per side (3)")
    parser.add_argument("--skip-enhance", action="store_true", help="only the conversion rows")
    parser.add_argument("--skip-convert", action="store_true", help="only the enhance rows")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "native-cpu.json")
    parser.add_argument("--worker", nargs=3, metavar=("IMAGES", "OUT", "PASSES"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(images_path: str, out_path: str, passes: int) -> None:
    """In a child: warm up, time ``passes`` passes, save the uint8 and float ENH; print the seconds."""
    import numpy as np

    import phasefeat
    from phasefeat import enhance

    os.sched_setaffinity(0, [sorted(os.sched_getaffinity(0))[0]])
    images = np.load(images_path)
    enhance(images[0], dtype="float32")  # compiles the kernels (or loads Numba's cache), builds the filters
    seconds = []
    for _ in range(passes):
        start = time.perf_counter()
        for image in images:
            enhance(image, dtype="float32")
        seconds.append((time.perf_counter() - start) / len(images))
    enh = np.stack([enhance(image, dtype="float32") for image in images])
    np.savez(out_path, float=enh, uint8=np.clip(np.rint(enh * 255), 0, 255).astype(np.uint8))
    print(json.dumps({"seconds": seconds, "module": phasefeat.__file__}))


def prepare_images(args, folder: Path) -> tuple[Path, str]:
    """The images both sides enhance, saved once so that each reads the same array."""
    import numpy as np
    from bench_features import load_images

    images, source = load_images(args.source, args.images, args.size)
    target = folder / "images.npy"
    np.save(target, images * np.float32(255))  # on the 0..255 scale the records were measured at
    return target, source


def checkout(rev: str, folder: Path) -> str:
    """``phasefeat`` of ``rev`` under ``folder``; returns the full commit id."""
    commit = subprocess.run(["git", "rev-parse", rev], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", commit, "phasefeat"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return commit


def run_side(root: Path, images: Path, out: Path) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--worker", str(images), str(out), "1"], env=env,
                          check=True, capture_output=True, text=True)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(answer["module"]).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"the worker imported {answer['module']}, not the copy under {root}")
    return answer["seconds"]


def compare_outputs(a: Path, b: Path) -> dict:
    import numpy as np

    x, y = np.load(a), np.load(b)
    differ = x["uint8"] != y["uint8"]
    return {"max_float_difference": float(np.abs(x["float"] - y["float"]).max()),
            "uint8_pixels_differing": float(differ.mean()),
            "max_uint8_difference": int(np.abs(x["uint8"].astype(int) - y["uint8"].astype(int)).max())}


def convert_once(root: Path, source: Path, out: Path) -> float:
    """Seconds of one ``phasefeat convert SOURCE OUT`` at the defaults with ``root``'s phasefeat."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    start = time.perf_counter()
    # From the output's folder: ``python -m`` puts the working directory first on the path.
    subprocess.run([sys.executable, "-c", f"import sys, phasefeat; assert phasefeat.__file__.startswith({str(root)!r}); "
                    "from phasefeat._entry import phasefeat as cli; sys.exit(cli())", "convert", str(source),
                    str(out)], env=env, cwd=out.parent, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def compare_stores(a: Path, b: Path) -> dict:
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        x, y = fa["enh"][()].astype(int), fb["enh"][()].astype(int)
        count = len(x)
        cxr_equal = bool(np.array_equal(fa["cxr"][()], fb["cxr"][()]))
    return {"images": count, "uint8_pixels_differing": float((x != y).mean()),
            "max_uint8_difference": int(np.abs(x - y).max()), "cxr_identical": cxr_equal}


def conversion_stages(source: Path) -> dict:
    """Milliseconds per image of each stage of a worker's work (this tree, one core, one pass over ``source``)."""
    import hashlib

    import numpy as np

    from phasefeat import PhaseParams
    from phasefeat.io import pieces
    from phasefeat.io.imageio import ImageReadError, fit, read_image
    from phasefeat.maths.features import enhance

    os.sched_setaffinity(0, [sorted(os.sched_getaffinity(0))[0]])
    opts, params = pieces.ConvertOptions(), PhaseParams()
    enhance(np.ones((16, 16), np.float32))  # the kernels' start-up is not a stage
    totals = dict.fromkeys(("read and decode", "SHA-256", "fit CXR to 299", "ENH at native size",
                            "ENH maps resized to 299 and quantised"), 0.0)
    count = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg")):
        marks = [time.perf_counter()]
        try:
            data = pieces.read_regular_file(path, opts.max_bytes)
            image = read_image(data, opts.max_pixels)
        except ImageReadError:
            continue
        marks.append(time.perf_counter())
        hashlib.sha256(data).hexdigest()
        marks.append(time.perf_counter())
        np.clip(fit(image.pixels, opts.size, opts.fit), 0, 1)
        marks.append(time.perf_counter())
        maps = enhance(pieces.feature_image(image.pixels, opts)[None], params, backend="numpy")
        marks.append(time.perf_counter())
        pieces._quantise(np.stack([pieces._resize_maps(m, opts.size) for m in maps]), opts.enh_dtype)
        marks.append(time.perf_counter())
        for name, start, stop in zip(totals, marks, marks[1:], strict=False):
            totals[name] += stop - start
        count += 1
    return {"images": count, "ms_per_image": {name: 1e3 * total / count for name, total in totals.items()}}


def enhance_rows(args, tmp: Path, sides: dict) -> dict:
    images, source = prepare_images(args, tmp)
    seconds = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, root in sides.items():
            seconds[name] += run_side(root, images, tmp / f"{name}.npz")
    med = {n: statistics.median(s) for n, s in seconds.items()}
    return {"source": source, "seconds_per_image": seconds, "median_seconds_per_image": med,
            "speedup": med["baseline"] / med["this tree"],
            "parity": compare_outputs(tmp / "baseline.npz", tmp / "this tree.npz")}


def convert_rows(args, tmp: Path, sides: dict) -> dict:
    for name, root in sides.items():  # untimed: fills each side's Numba cache
        convert_once(root, args.source, tmp / f"warm-{name}.h5")
    seconds = {name: [] for name in sides}
    for k in range(args.convert_rounds):
        for name, root in sides.items():
            seconds[name].append(convert_once(root, args.source, tmp / f"{name}-{k}.h5"))
    parity = compare_stores(tmp / "baseline-0.h5", tmp / "this tree-0.h5")
    med = {n: statistics.median(s) for n, s in seconds.items()}
    return {"source": f"{parity['images']} images of {args.source.name}/", "seconds": seconds,
            "median_seconds": med, "images_per_second": {n: parity["images"] / m for n, m in med.items()},
            "speedup": med["baseline"] / med["this tree"],
            "parity": parity, "stages_this_tree": conversion_stages(args.source)}


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    print("| " + " | ".join(header) + " |\n|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_enhance(enhance: dict, labels: dict, args, cpu: str) -> None:
    med, parity = enhance["median_seconds_per_image"], enhance["parity"]
    print(f"enhance, float32, qi2021, {args.images} images {args.size}x{args.size} ({enhance['source']}); "
          f"one core of {cpu}; medians of {args.repeats} alternating rounds\n")
    print_table(["side", "commit", "s per image (median)", "all rounds"],
                [[name, label, f"{med[name]:.3f}", ", ".join(f"{s:.3f}" for s in enhance["seconds_per_image"][name])]
                 for name, label in labels.items()])
    print(f"\nspeed-up {enhance['speedup']:.2f}x; outputs: largest float difference "
          f"{parity['max_float_difference']:.2e}, {100 * parity['uint8_pixels_differing']:.4f} % of uint8 "
          f"pixels differ (by at most {parity['max_uint8_difference']})\n")


def print_convert(convert: dict, labels: dict, args, cpu: str) -> None:
    rate, parity, stages = convert["images_per_second"], convert["parity"], convert["stages_this_tree"]
    print(f"phasefeat convert at the defaults (features at native size), {convert['source']}; "
          f"{os.cpu_count()} cores of {cpu}; medians of {args.convert_rounds} alternating rounds\n")
    print_table(["side", "commit", "s (median)", "images/s", "all rounds"],
                [[name, label, f"{convert['median_seconds'][name]:.1f}", f"{rate[name]:.2f}",
                  ", ".join(f"{s:.1f}" for s in convert["seconds"][name])] for name, label in labels.items()])
    print(f"\nspeed-up {convert['speedup']:.2f}x; stored ENH: {100 * parity['uint8_pixels_differing']:.4f} % "
          f"of pixels differ (by at most {parity['max_uint8_difference']}); stored CXR identical: "
          f"{parity['cxr_identical']}")
    total = sum(stages["ms_per_image"].values())
    print(f"\nWhere a worker's time goes (this tree, one core, {stages['images']} images, one pass):\n")
    print_table(["stage", "ms per image", "share"],
                [[name, f"{ms:.1f}", f"{100 * ms / total:.0f} %"] for name, ms in stages["ms_per_image"].items()])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return 0
    if not args.skip_convert and not args.source.is_dir():
        raise SystemExit(f"bench_native: --source {args.source} is not a folder (the conversion needs one; "
                         "or --skip-convert)")
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
    from phasefeat.backend import cpu_model

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "base").mkdir()
        commit = checkout(args.baseline, tmp / "base")
        sides = {"baseline": tmp / "base", "this tree": REPO}
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "phasefeat"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        labels = {"baseline": commit[:7], "this tree": f"{head} + uncommitted changes" if dirty else head}
        enhance = None if args.skip_enhance else enhance_rows(args, tmp, sides)
        convert = None if args.skip_convert else convert_rows(args, tmp, sides)
    if enhance:
        print_enhance(enhance, labels, args, cpu_model())
    if convert:
        print_convert(convert, labels, args, cpu_model())
    from benchmarks._record import write_record

    write_record(args.json, "native", cpu_model(),
                 settings={"size": args.size, "images": args.images, "repeats": args.repeats,
                           "convert_rounds": args.convert_rounds, "dtype": "float32",
                           "params": "qi2021 (default)", "enhance_cores": 1,
                           "convert_cores": os.cpu_count()},
                 baseline_commit=commit, head_commit=head, uncommitted_changes=bool(dirty), enhance=enhance,
                 convert=convert)
    return 0


if __name__ == "__main__":
    sys.exit(main())
