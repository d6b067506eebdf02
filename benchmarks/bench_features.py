"""Feature-extraction throughput: NumPy vs the peer implementation vs CuPy.

Measures, in one run, on 299x299 radiographs (the shared real ones when present,
generated phantoms otherwise):

* NumPy backend, float32 and float64, one image per call and in batches:
  images/s of ``monogenic`` and ``enhance``;
* the peer, ``phasecongruency.monofilt`` (nscale 3, the same filters), and the
  ratio ours/peer for the monogenic stage;
* the CuPy backend where a GPU is usable: batch sizes 1, 16, 64, 256, with
  warm-up and device synchronisation, device-resident input.

Prints a table and writes JSON (versions, CPU/GPU model, threads, settings).
Medians over repeats; every row of one run is measured on the same machine.

    python benchmarks/bench_features.py                 # one CPU core, default settings
    python benchmarks/bench_features.py --cores 2 --json out.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "cxr-real"
SIZE = 299
TARGETS = {"cpu_enhance_float32_img_s": 50.0, "monogenic_vs_peer": 5.0,
           "gpu_enhance_img_s_batch64": 5000.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="folder of radiographs (default: the shared real set; phantoms if absent)")
    parser.add_argument("--count", type=int, default=32, help="images per timed pass (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per row (median; default 5)")
    parser.add_argument("--cores", type=int, default=1,
                        help="pin the process to this many CPU cores (default 1, the target's setting)")
    parser.add_argument("--cpu-batch", type=int, default=16, help="batch size of the batched CPU rows")
    parser.add_argument("--gpu-batches", default="1,16,64,256", help="CuPy batch sizes")
    parser.add_argument("--skip-peer", action="store_true", help="do not time phasecongruency")
    parser.add_argument("--gpu-only", action="store_true", help="only the CuPy rows (and no peer)")
    parser.add_argument("--presets", default="qi2021,kovesi",
                        help="CPU rows for these presets (the first is the default; kovesi is the one "
                             "the peer computes)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "features.json",
                        help="where to write the JSON record")
    return parser.parse_args(argv)


def pin_cores(n: int) -> list[int]:
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:n]
        os.sched_setaffinity(0, cores)
        return cores
    return []


def load_images(folder: Path, count: int, size: int = SIZE):
    """``count`` radiographs of ``folder`` resized to ``size`` x ``size`` (float32), phantoms where too few."""
    import numpy as np

    from phasefeat.io.imageio import ImageReadError, read_grey, resize
    from phasefeat.tools.phantom import chest_phantom

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in
                   {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}) if folder.is_dir() else []
    images = []
    for path in paths:
        try:
            images.append(resize(read_grey(path), (size, size)))
        except ImageReadError:
            continue
        if len(images) == count:
            break
    source = f"{len(images)} real radiographs from {folder.name}/" if images else "generated phantoms"
    while len(images) < count:  # top up with phantoms
        images.append(chest_phantom(size, seed=len(images)).astype(np.float32))
    return np.stack(images).astype(np.float32), source


def time_rate(fn, n_images: int, repeats: int, sync=lambda: None) -> dict:
    """Median images/s over ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    sync()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    med = statistics.median(seconds)
    return {"img_s": n_images / med, "ms_per_img": 1e3 * med / n_images,
            "seconds": seconds, "images": n_images}


def cpu_rows(images, args):
    import phasefeat as pf

    rows = []
    for preset in args.presets.split(","):
        params = pf.PhaseParams.preset(preset)
        for dtype in ("float32", "float64"):
            for stage, fn in (("monogenic", pf.monogenic), ("enhance", pf.enhance)):
                def single(fn=fn, dtype=dtype, params=params):
                    for image in images:
                        fn(image, params, backend="numpy", dtype=dtype)

                def batched(fn=fn, dtype=dtype, params=params):
                    for start in range(0, len(images), args.cpu_batch):
                        fn(images[start:start + args.cpu_batch], params, backend="numpy", dtype=dtype)

                for mode, call in (("1 per call", single), (f"batch {args.cpu_batch}", batched)):
                    rows.append({"impl": "phasefeat numpy", "preset": preset, "stage": stage,
                                 "dtype": dtype, "mode": mode,
                                 **time_rate(call, len(images), args.repeats)})
    return rows


def peer_rows(images, args):
    try:
        import phasecongruency as pc
    except ImportError:
        return [], "phasecongruency not installed (pip install phasecongruency)"

    def run():
        for image in images:
            pc.monofilt(image, 3, 4, 2, 0.65)

    row = {"impl": "phasecongruency.monofilt", "stage": "monogenic", "dtype": "float64",
           "mode": "1 per call", **time_rate(run, len(images), args.repeats)}
    return [row], ""


def gpu_rows(images, args):
    from phasefeat import backend as backend_mod

    if not backend_mod.gpu_available():
        return [], "no usable CUDA GPU: CuPy rows not measured"
    from unittest import mock

    import cupy

    import phasefeat as pf
    from phasefeat.maths import _gpu_kernels, elea

    be = backend_mod.get_backend("cupy")
    fused = _gpu_kernels.kernels() is not None
    rows = []
    for batch in (int(b) for b in args.gpu_batches.split(",")):
        reps = max(1, -(-batch // len(images)))
        host = images[(list(range(len(images))) * reps)[:batch]]
        device = cupy.asarray(host)
        host_u8 = host.clip(0, 255).astype("uint8")
        calls = {
            "monogenic": lambda device=device: pf.monogenic(device, backend="cupy"),
            "enhance": lambda device=device: pf.enhance(device, backend="cupy"),
            # End to end: host uint8 in, host uint8 out, transfers included.
            "enhance host uint8->uint8": lambda host_u8=host_u8: pf.enhance(
                host_u8, backend="cupy", out="uint8"),
        }
        for stage, call in calls.items():
            rows.append({"impl": "phasefeat cupy", "stage": stage, "dtype": "float32",
                         "mode": f"batch {batch}", "device": be.device, "fused_kernels": fused,
                         **time_rate(call, batch, max(args.repeats, 10), be.synchronize)})
        with mock.patch.object(elea, "gpu_kernels", return_value=None):  # the same call on the array code
            rows.append({"impl": "phasefeat cupy, array code", "stage": "enhance", "dtype": "float32",
                         "mode": f"batch {batch}", "device": be.device, "fused_kernels": False,
                         **time_rate(calls["enhance"], batch, max(args.repeats, 10), be.synchronize)})
    note = "" if fused else "numba.cuda could not run the fused kernels here: both CuPy rows ran the array code"
    return rows, note


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("phasefeat", "numpy", "scipy", "numba", "phasecongruency", "cupy-cuda12x"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def summarise(rows, presets=("qi2021", "kovesi")) -> dict:
    def find(impl, stage, dtype, mode, preset=None):
        for r in rows:
            if (r["impl"], r["stage"], r["dtype"], r["mode"]) == (impl, stage, dtype, mode) \
                    and r.get("preset") == preset:
                return r["img_s"]
        return None

    summary = {}
    enh = find("phasefeat numpy", "enhance", "float32", "1 per call", presets[0])
    summary["cpu_enhance_float32_img_s"] = enh
    summary["cpu_enhance_preset"] = presets[0]
    peer = find("phasecongruency.monofilt", "monogenic", "float64", "1 per call")
    if peer and "kovesi" in presets:  # the peer computes the kovesi filters
        for dtype in ("float32", "float64"):
            ours = find("phasefeat numpy", "monogenic", dtype, "1 per call", "kovesi")
            summary[f"monogenic_{dtype}_vs_peer"] = ours / peer
        summary["monogenic_vs_peer"] = summary["monogenic_float32_vs_peer"]
    gpu = [r for r in rows if r["impl"] == "phasefeat cupy" and r["stage"] == "enhance"
           and int(r["mode"].split()[-1]) >= 64]
    if gpu:
        summary["gpu_enhance_img_s_batch64"] = max(r["img_s"] for r in gpu)
    summary["targets"] = {k: {"target": v, "measured": summary.get(k),
                              "met": None if summary.get(k) is None else summary[k] >= v}
                          for k, v in TARGETS.items()}
    return summary


def print_table(rows, summary, notes):
    print(f"{'implementation':26s} {'preset':9s} {'stage':26s} {'dtype':8s} {'mode':11s} {'img/s':>10s} "
          f"{'ms/img':>8s}")
    for r in rows:
        print(f"{r['impl']:26s} {r.get('preset', ''):9s} {r['stage']:26s} {r['dtype']:8s} {r['mode']:11s} "
              f"{r['img_s']:10.1f} {r['ms_per_img']:8.2f}")
    print()
    for key, t in summary["targets"].items():
        measured = "not measured" if t["measured"] is None else f"{t['measured']:.1f}"
        verdict = "" if t["met"] is None else ("  MET" if t["met"] else "  MISSED")
        print(f"target {key}: >= {t['target']:g}, measured {measured}{verdict}")
    for note in notes:
        if note:
            print("note:", note)


def main(argv=None) -> int:
    args = parse_args(argv)
    cores = pin_cores(args.cores)
    sys.path.insert(0, str(REPO))
    from phasefeat.backend import cpu_model

    images, source = load_images(args.images, args.count)
    rows = [] if args.gpu_only else cpu_rows(images, args)
    notes = []
    if not (args.skip_peer or args.gpu_only):
        peer, note = peer_rows(images.astype("float64"), args)
        rows += peer
        notes.append(note)
    gpu, note = gpu_rows(images, args)
    rows += gpu
    notes.append(note)
    summary = summarise(rows, tuple(args.presets.split(",")))
    print(f"{len(images)} images {SIZE}x{SIZE} ({source}); CPU {cpu_model()}; "
          f"pinned to cores {cores or 'all'}; medians of {args.repeats} passes\n")
    print_table(rows, summary, notes)
    from benchmarks._record import write_record

    write_record(args.json, "features", cpu_model(),
                 machine={"cores_used": cores,
                          "gpu": next((r["device"] for r in rows if "device" in r), None)},
                 settings={"size": SIZE, "images": len(images), "source": source,
                           "repeats": args.repeats, "cpu_batch": args.cpu_batch,
                           "gpu_batches": args.gpu_batches, "presets": args.presets.split(","),
                           "gpu_params": "PhaseParams() (qi2021)"},
                 versions=versions(), rows=rows, summary=summary, notes=[n for n in notes if n])
    return 0


if __name__ == "__main__":
    sys.exit(main())
