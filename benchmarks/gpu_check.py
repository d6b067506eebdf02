"""Everything that needs a real GPU, in one command: run it the first time a GPU machine is there.

    python benchmarks/gpu_check.py              # on a machine with an NVIDIA GPU (make gpu-check)
    python benchmarks/gpu_check.py --dry-run    # anywhere: plans, checks, trains one tiny step on the CPU

Steps, each with a record under benchmarks/results/ named after the card (``*-gpu-<card>.json``):

1. install what is missing from the project's extras (``gpu``: CuPy for CUDA 12; ``test``; a Keras
   backend with GPU wheels: TensorFlow when it sees the GPU, else ``jax-gpu``); ``--no-install`` skips it;
2. the ``gpu``-marked tests (real CuPy: parity with NumPy within float32 rounding, GPU conversion, Dask);
3. the GPU rows of ``bench_features.py`` (batch 1, 16, 64, 256; device-resident and host uint8 end to end);
4. ``phasefeat convert --backend cupy`` of the shared radiographs against the NumPy store (uint8 within one
   level on >= 99.9 % of the pixels);
5. one epoch of full-width VGG16 at 299x299 on 512 images: images/s and peak GPU memory;
6. the study's grid, 12 runs (CXR/ENH x CCE/SCCE x 3 repeats) at 1 epoch, through the Dask path with one run
   per GPU (``--scheduler local:<GPUs> --gpus-per-run 1``): the grid's time on this machine.

It prints the rows for docs/benchmarks.md at the end. Budget: about 8 minutes on one H100/H200. Without a GPU
it says so in one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
REAL = Path(os.environ.get("PHASEFEAT_CXR_REAL", REPO.parent / "shared" / "data" / "cxr-real"))
EXTRAS = ("gpu", "gpu-fused", "test", "distributed", "jax-gpu", "train-gpu")
SCRIPTS = ("benchmarks/bench_features.py", "tests/conftest.py")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="plan every step, check what it names exists, train one tiny step on the CPU")
    parser.add_argument("--no-install", action="store_true", help="use what is installed")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="install from this folder of wheels only (a machine without network)")
    parser.add_argument("--images", type=int, default=512, help="images of the VGG16 epoch (default 512)")
    parser.add_argument("--train-step", action="store_true", help=argparse.SUPPRESS)  # the epoch, in a child
    parser.add_argument("--size", type=int, default=299, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _gpu_names() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name from nvidia-smi, or None."""
    names = _gpu_names()
    return names[0] if names else None


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def extras_declared() -> set[str]:
    """The extras setup.cfg declares."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return set(cfg["options.extras_require"])


def keras_backend() -> str:
    """TensorFlow where it sees a GPU, else JAX (the GPU machines of this project have no TensorFlow)."""
    probe = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return "tensorflow" if done.returncode == 0 and done.stdout.strip() not in ("", "0") else "jax"


def plan(card: str, backend: str, args) -> list[dict]:
    """Every step: a name, the command, its record."""
    tag = slug(card)
    py = sys.executable
    env = {"KERAS_BACKEND": backend}
    return [
        {"name": "install", "skip": args.no_install,
         "cmd": [py, "-m", "pip", "install", "-q",
                 *(["--no-index", "--find-links", str(args.wheels)] if getattr(args, "wheels", None) else []),
                 "-e", f".[gpu,test,distributed{',jax-gpu' if backend == 'jax' else ''}]"]},
        {"name": "install fused kernels", "skip": args.no_install,
         "cmd": [py, "-m", "pip", "install", "-q",
                 *(["--no-index", "--find-links", str(args.wheels)] if getattr(args, "wheels", None) else []),
                 "-e", ".[gpu-fused]"]},
        {"name": "gpu tests", "cmd": [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                      "--ignore=tests/test_torch.py"],
         "record": RESULTS / f"gpu-tests-{tag}.json", "env": env},
        {"name": "feature benchmark", "cmd": [py, "benchmarks/bench_features.py", "--gpu-only", "--cores", "16",
                                              "--json", str(RESULTS / f"features-gpu-{tag}.json")]},
        {"name": "convert parity", "fn": "convert_parity", "record": RESULTS / f"convert-gpu-{tag}.json"},
        {"name": "VGG16 epoch", "cmd": [py, "benchmarks/gpu_check.py", "--train-step", "--images", str(args.images),
                                        "--json", str(RESULTS / f"train-gpu-{tag}.json")], "env": env},
        {"name": "12-run grid", "fn": "compare_grid", "record": RESULTS / f"grid-gpu-{tag}.json", "env": env},
    ]


def dry_run() -> int:
    """Check what the plan names exists, and run the training step tiny on the CPU with JAX."""
    problems = []
    declared = extras_declared()
    for extra in EXTRAS:
        if extra not in declared:
            problems.append(f"setup.cfg has no extra {extra!r}")
    for script in SCRIPTS:
        if not (REPO / script).exists():
            problems.append(f"{script} is missing")
    steps = plan("dry run", "jax", argparse.Namespace(no_install=True, images=512, wheels=None))
    for step in steps:
        print(f"plan: {step['name']}: {' '.join(map(str, step.get('cmd', [step.get('fn', '')])))}")
    for name in ("convert_parity", "compare_grid"):
        if not callable(globals().get(name)):
            problems.append(f"step function {name} is missing")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "train.json"
        done = subprocess.run([sys.executable, str(Path(__file__)), "--train-step", "--images", "16", "--size", "32",
                               "--width", "0.125", "--json", str(out)], capture_output=True, text=True,
                              env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}, cwd=REPO)
        if done.returncode != 0 or not out.exists():
            problems.append(f"the training step failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        else:
            record = json.loads(out.read_text())
            print(f"dry run: training step on {record['device']} ({record['backend']}): "
                  f"{record['images_per_s']:.1f} images/s at {record['size']} px, width {record['width']}")
    for problem in problems:
        print(f"gpu_check --dry-run: {problem}", file=sys.stderr)
    return 1 if problems else 0


def train_step(args) -> int:
    """One epoch of VGG16 on random images, in this process: images/s and peak device memory."""
    sys.path.insert(0, str(REPO))
    import keras
    import numpy as np

    from trainer.model import classifier
    from trainer.progress import training_device

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    y = np.eye(3, dtype=np.float32)[np.arange(args.images) % 3]
    model = classifier("vgg16", (args.size, args.size, 3), 3, width=args.width,
                       preprocessing={"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.25] * 3})
    model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
    model.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0)  # compile and warm up
    start = time.perf_counter()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    record = {"benchmark": "train-epoch", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "backend": keras.backend.backend(), "keras": keras.__version__, "device": training_device(),
              "images": args.images, "size": args.size, "width": args.width, "batch": 16,
              "seconds": seconds, "images_per_s": args.images / seconds, "peak_memory_bytes": _peak_memory()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("device", "images_per_s", "peak_memory_bytes")}))
    return 0


def _peak_memory():
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use")
        if backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    except (RuntimeError, ValueError, ImportError):
        return None


def convert_parity(step, tmp: Path) -> dict:
    """The shared radiographs converted on the GPU and with NumPy: how many pixels agree."""
    import numpy as np

    from phasefeat.io.store import open_store

    if not REAL.is_dir():
        return {"skipped": f"no radiographs at {REAL}"}
    timings = {}
    for backend in ("numpy", "cupy"):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "phasefeat", "convert", str(REAL), str(tmp / f"{backend}.h5"), "-q",
                        "--backend", backend, "--size", "299"], check=True)
        timings[backend] = time.perf_counter() - start
    with open_store(tmp / "numpy.h5") as a, open_store(tmp / "cupy.h5") as b:
        ea, eb = a.read_many(range(len(a))).astype(int), b.read_many(range(len(b))).astype(int)
        diff = np.abs(ea - eb)
        return {"images": len(a), "within_one_level": float(np.mean(diff <= 1)), "max_diff": int(diff.max()),
                "seconds": timings, "device": b.attrs["device"],
                "passed": bool(np.mean(diff <= 1) >= 0.999 and diff.max() <= 2)}


def compare_grid(step, tmp: Path) -> dict:
    """The study's 12-run grid at 1 epoch on the converted store, one run per GPU through the Dask path."""
    store = tmp / "cupy.h5"
    if not store.exists():
        return {"skipped": "no converted store (the convert step did not run)"}
    gpus = max(1, len(_gpu_names()))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainer", "compare", "--store", str(store), "--out",
                           str(tmp / "grid"), "--repeats", "3", "--epochs", "1", "--scheduler", f"local:{gpus}",
                           "--gpus-per-run", "1"], capture_output=True, text=True,
                          env={**os.environ, **step.get("env", {})})
    result = {"gpus": gpus, "runs": 12, "seconds": time.perf_counter() - start, "exit": done.returncode,
              "output": (done.stdout + done.stderr)[-3000:]}
    for name in ("runs.csv", "schedule.json"):
        if (tmp / "grid" / name).exists():
            result[name] = (tmp / "grid" / name).read_text()
    return result


def run_steps(card: str, args) -> int:
    backend = keras_backend()
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for step in plan(card, backend, args):
            if step.get("skip"):
                continue
            print(f"== {step['name']}", flush=True)
            start = time.perf_counter()
            if "fn" in step:
                result = globals()[step["fn"]](step, tmp)
                ok = result.get("passed", result.get("exit", 0) == 0) and "skipped" not in result
            else:
                done = subprocess.run(step["cmd"], cwd=REPO, capture_output=True, text=True,
                                      env={**os.environ, **step.get("env", {})})
                result = {"exit": done.returncode, "output": (done.stdout + done.stderr)[-4000:]}
                ok = done.returncode == 0
                if step["name"].startswith("install") and not ok:  # e.g. no network: go on with what is there
                    print("   install failed; going on with what is installed", flush=True)
                    continue
            result.update(step=step["name"], card=card, seconds_total=time.perf_counter() - start)
            if step.get("record"):
                step["record"].write_text(json.dumps(result, indent=1, default=str))
            summary.append((step["name"], ok, result))
            print(f"   {'ok' if ok else 'FAILED'} in {result['seconds_total']:.0f} s", flush=True)
    print("\nRows for docs/benchmarks.md (measured on " + card + "):\n")
    print("| step | result | seconds |\n|---|---|---:|")
    for name, ok, result in summary:
        print(f"| {name} | {'ok' if ok else 'failed'} | {result['seconds_total']:.0f} |")
    return 0 if all(ok for _, ok, _ in summary) else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.train_step:
        return train_step(args)
    if args.dry_run:
        return dry_run()
    card = gpu_name()
    if card is None:
        print("gpu_check: no NVIDIA GPU here (nvidia-smi finds none); run it on a GPU machine, or --dry-run",
              file=sys.stderr)
        return 2
    return run_steps(card, args)


if __name__ == "__main__":
    sys.exit(main())
