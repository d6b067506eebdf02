"""Extrapolated one-GPU figures for the paper-scale run, from work counted on the CPU.

The "one GPU" rows of ``docs/reproducing-the-paper.md`` have not been measured
on a GPU yet. This script derives them from quantities it *does* measure on the
CPU, and labels every output as an estimate:

* **Feature extraction** runs the exact array-module code CuPy would run (the
  reference path, Numba kernels off) on NumPy arrays that count their own
  traffic: every ufunc, reduction, copy and FFT adds the bytes it reads and
  writes, and one kernel launch. On a GPU this code is memory-bound, so
  ``time = bytes / (HBM bandwidth x efficiency) + launches x latency``. Peak
  memory is the allocation peak of that same code at CuPy's chunk of 256
  images, traced with ``tracemalloc``.
* **Training** counts the multiply-adds of the exact Keras model
  (``trainer.model.vgg16_classifier``): a training image costs about three
  forward passes. ``time = FLOPs / (TF32 tensor peak x utilisation)``. GPU
  memory is weights + gradients + two Adam moments plus the saved activations;
  with JAX installed, XLA's own buffer plan for the gradient step is printed
  too. ``--cpu-step`` times real training steps (full and 1/8 width) on this
  CPU, with their peak memory.

Efficiencies are assumptions, given as a low-high range and written into the
JSON record. Replace these numbers with ``bench_features.py`` rows from a GPU
as soon as one is available.

    python benchmarks/estimate_gpu.py --cpu-step
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from _traffic import (  # noqa: E402
    FFT_PASSES,
    CountedArray,
    CountedGpuKernels,
    CountingFFT,
    CountingNumpy,
    metering,
)

#: Public datasheet peaks (dense, no sparsity) of the cards the estimate is made for.
GPUS = {
    "H100 SXM": {"hbm_tb_s": 3.35, "tf32_tflops": 494.7, "memory_gb": 80},
    "H100 PCIe": {"hbm_tb_s": 2.0, "tf32_tflops": 378.0, "memory_gb": 80},
    "H200": {"hbm_tb_s": 4.8, "tf32_tflops": 494.7, "memory_gb": 141},
}
#: Assumed fractions of peak reached (low, high): large elementwise kernels reach
#: well over half of HBM bandwidth; VGG16 at batch 16 uses a modest share of the
#: tensor cores (small batches, memory-bound first blocks, no mixed precision).
BANDWIDTH_EFFICIENCY = (0.5, 0.8)
TENSOR_UTILISATION = (0.15, 0.40)
LAUNCH_LATENCY_S = 10e-6


@contextlib.contextmanager
def reference_path(chunk: int):
    """Run phasefeat's array-module path (what CuPy runs) on NumPy, ``chunk`` images at a time."""
    import importlib

    elea, features, monogenic = (importlib.import_module(f"phasefeat.maths.{name}")
                                 for name in ("elea", "features", "monogenic"))
    with mock.patch.object(monogenic, "cpu_kernels", return_value=None), \
            mock.patch.object(elea, "cpu_kernels", return_value=None), \
            mock.patch.dict(features.CHUNK, {"numpy": chunk}):
        yield


def counting_backend(name: str = "numpy"):
    """Counted NumPy under ``name``: "numpy" runs the array code, "cupy" the CuPy path's branches."""
    from phasefeat.backend import Backend

    return Backend(name=name, xp=CountingNumpy(), fft=CountingFFT(), device="counted NumPy (traffic model)")


@contextlib.contextmanager
def fused_path(chunk: int):
    """Run the CuPy path with its fused CUDA kernels, counted (``CountedGpuKernels``), ``chunk`` images at a time."""
    import importlib

    elea, features, monogenic = (importlib.import_module(f"phasefeat.maths.{name}")
                                 for name in ("elea", "features", "monogenic"))
    with mock.patch.object(elea, "gpu_kernels", return_value=CountedGpuKernels()), \
            mock.patch.object(monogenic, "cpu_kernels", return_value=None), \
            mock.patch.object(elea, "cpu_kernels", return_value=None), \
            mock.patch.dict(features.CHUNK, {"cupy": chunk}):
        yield


# ---------------------------------------------------------------------------
# Feature extraction
# ---------------------------------------------------------------------------


def sample_images(n: int, size: int) -> np.ndarray:
    from phasefeat.tools.phantom import chest_phantom

    return np.stack([chest_phantom(size, seed=i).astype(np.float32) for i in range(n)])


def feature_traffic(images: np.ndarray, params=None, fused: bool = False) -> dict:
    """Bytes and kernel launches per image of ``enhance`` on the CuPy path: its array code, or
    (``fused``) with the fused CUDA kernels of the BCCR iteration and the contextual weights."""
    from phasefeat.maths.features import enhance_batch
    from phasefeat.params import PhaseParams

    params = PhaseParams() if params is None else params
    backend = counting_backend("cupy" if fused else "numpy")
    path = fused_path if fused else reference_path
    batch = images.astype(np.float32).view(CountedArray)
    n = len(images)
    with path(chunk=n):
        enhance_batch(batch[:1], params, backend)  # builds the cached filter banks
        with metering() as meter:
            enhance_batch(batch, params, backend)
    # One BCCR iteration fewer: the difference is what one iteration costs.
    fewer = params.replace(bccr_iterations=params.bccr_iterations - 1)
    with path(chunk=n):
        enhance_batch(batch[:1], fewer, backend)
        with metering() as shorter:
            enhance_batch(batch, fewer, backend)
    per_iteration = (meter.total_bytes - shorter.total_bytes) / n
    return {"images": n, "preset": params.preset_name(), "path": "fused" if fused else "array code",
            "bytes_per_image": meter.total_bytes / n,
            "kernels_per_chunk": meter.total_kernels,
            "bccr_iterations": params.bccr_iterations,
            "bytes_per_bccr_iteration": per_iteration,
            "image_planes_per_bccr_iteration": per_iteration / (4 * images.shape[-1] * images.shape[-2]),
            "fft_mb_per_image": sum(v for k, v in meter.bytes.items() if "fft" in k) / n / 1e6,
            "top_ops_mb_per_image": {k: v / n / 1e6 for k, v in meter.bytes.most_common(8)}}


def feature_peak_memory(images: np.ndarray, chunk: int, params=None) -> dict:
    """Allocation peak of one ``chunk``-image pass of the array-module path (tracemalloc)."""
    from phasefeat.backend import get_backend
    from phasefeat.maths.features import enhance_batch
    from phasefeat.params import PhaseParams

    params = PhaseParams() if params is None else params
    backend = get_backend("numpy")
    batch = np.resize(images, (chunk, *images.shape[1:])).astype(np.float32)
    with reference_path(chunk=chunk):
        enhance_batch(batch[:1], params, backend)
        tracemalloc.start()
        try:
            start = time.perf_counter()
            enhance_batch(batch, params, backend)
            seconds = time.perf_counter() - start
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return {"chunk": chunk, "peak_gb": peak / 1e9, "input_gb": batch.nbytes / 1e9,
            "cpu_seconds": seconds}


def feature_estimates(traffic: dict, chunk: int) -> list[dict]:
    """Images/s per card at the assumed bandwidth efficiencies, and the pure bandwidth bound."""
    launch = traffic["kernels_per_chunk"] * LAUNCH_LATENCY_S / chunk
    rows = []
    for gpu, spec in GPUS.items():
        transfer = traffic["bytes_per_image"] / (spec["hbm_tb_s"] * 1e12)  # seconds at 100 %
        low, high = (1 / (transfer / eff + launch) for eff in BANDWIDTH_EFFICIENCY)
        rows.append({"gpu": gpu, "img_s_low": low, "img_s_high": high, "bound_img_s": 1 / transfer})
    return rows


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def model_work(size: int, channels: int, width: float = 1.0, n_classes: int = 3) -> dict:
    """Forward FLOPs, parameters and activation bytes per image of the study's model."""
    from trainer.model import vgg16_classifier

    model = vgg16_classifier((size, size, channels), n_classes, width=width)
    macs = 0
    activations = 0
    for layer in model.layers[1:]:
        out_shape = tuple(layer.output.shape[1:])
        activations += math.prod(out_shape) * 4
        kind = type(layer).__name__
        if kind == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            macs += math.prod(out_shape[:2]) * kh * kw * cin * cout
        elif kind == "Dense":
            macs += math.prod(layer.kernel.shape)
    return {"size": size, "channels": channels, "width": width,
            "forward_gflop": 2 * macs / 1e9, "params": model.count_params(),
            "activation_mb": activations / 1e6}


def run_flops(work: dict, images: int, epochs: int) -> float:
    """FLOPs of one run: 49 % trained and 21 % validated per epoch, 30 % tested once."""
    forward = work["forward_gflop"] * 1e9
    train, val, test = round(0.49 * images), round(0.21 * images), round(0.30 * images)
    return epochs * (train * 3 * forward + val * forward) + test * forward


def training_memory_gb(work: dict, batch: int) -> float:
    """Weights, gradients and two Adam moments, plus activations kept for the backward pass
    (the layer outputs and about as much again for their gradients)."""
    return (16 * work["params"] + 2 * batch * work["activation_mb"] * 1e6) / 1e9


def xla_training_memory_gb(size: int, channels: int, batch: int) -> float | None:
    """XLA's buffer plan (arguments + temporaries) for one gradient step, if JAX is installed.

    Planned in a fresh process, so this one keeps its Keras backend.
    """
    import importlib.util
    import subprocess

    if importlib.util.find_spec("jax") is None:
        return None

    code = (
        "import os; os.environ['KERAS_BACKEND']='jax'\n"
        "import jax, jax.numpy as jnp, keras\n"
        "from trainer.model import vgg16_classifier\n"
        f"m = vgg16_classifier(({size}, {size}, {channels}), 3)\n"
        "tv = [v.value for v in m.trainable_variables]\n"
        "ntv = [v.value for v in m.non_trainable_variables]\n"
        "def loss(tv, ntv, x, y):\n"
        "    out, ntv = m.stateless_call(tv, ntv, x, training=True)\n"
        "    return keras.losses.categorical_crossentropy(y, out).mean(), ntv\n"
        "step = jax.jit(jax.value_and_grad(loss, has_aux=True))\n"
        f"x = jnp.zeros(({batch}, {size}, {size}, {channels})); y = jnp.zeros(({batch}, 3))\n"
        "s = step.lower(tv, ntv, x, y).compile().memory_analysis()\n"
        "print(s.argument_size_in_bytes + s.temp_size_in_bytes + s.output_size_in_bytes)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        return None
    return int(done.stdout.strip().splitlines()[-1]) / 1e9


def _train_steps(size: int, channels: int, batch: int, steps: int, width: float) -> dict:
    import keras

    from trainer.model import vgg16_classifier

    keras.utils.set_random_seed(0)
    model = vgg16_classifier((size, size, channels), 3, width=width)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy",
                  jit_compile=False)
    x = np.random.default_rng(0).random((batch, size, size, channels), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(batch) % 3]
    model.train_on_batch(x, y)  # warm-up: graph tracing
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        seconds.append(time.perf_counter() - start)
    return {"width": width, "batch": batch, "seconds": seconds, "median_s": statistics.median(seconds),
            "peak_rss_gb": _peak_rss_bytes() / 1e9}


def _peak_rss_bytes() -> int:
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak across fork + exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_train_step(size: int, channels: int, batch: int, steps: int, width: float = 1.0) -> dict:
    """Median seconds and peak resident memory of real training steps on this CPU.

    Runs in a fresh process (Keras' current backend), so the peak belongs to training alone.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_train_steps, size, channels, batch, steps, width).result()


def training_estimates(work: dict, images: int, epochs: int, repeats: int) -> list[dict]:
    flops = run_flops(work, images, epochs)
    rows = []
    for gpu, spec in GPUS.items():
        run_s = [flops / (spec["tf32_tflops"] * 1e12 * u) for u in TENSOR_UTILISATION]
        train_img_s = [spec["tf32_tflops"] * 1e12 * u / (3 * work["forward_gflop"] * 1e9)
                       for u in TENSOR_UTILISATION]
        rows.append({"gpu": gpu, "train_img_s_low": train_img_s[0], "train_img_s_high": train_img_s[1],
                     "run_min_high": run_s[0] / 60, "run_min_low": run_s[1] / 60,
                     "grid_h_high": 4 * repeats * run_s[0] / 3600,
                     "grid_h_low": 4 * repeats * run_s[1] / 3600})
    return rows


# ---------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=299, help="image side in pixels")
    parser.add_argument("--traffic-images", type=int, default=4,
                        help="images whose traffic is counted (traffic is per image)")
    parser.add_argument("--chunk", type=int, default=256,
                        help="images per GPU chunk for the memory peak (phasefeat.maths.features.CHUNK)")
    parser.add_argument("--images", type=int, default=15153,
                        help="images in the collection (Kaggle database, 3 classes)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cpu-step", action="store_true",
                        help="also time real full-width training steps on this CPU (~1 min)")
    parser.add_argument("--features-only", action="store_true",
                        help="only the feature-extraction part (traffic of both CuPy paths, rates, memory)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "gpu-estimate.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from _record import write_record

    from phasefeat.backend import cpu_model

    args = parse_args(argv)
    images = sample_images(args.traffic_images, args.size)
    traffic = feature_traffic(images)
    fused = feature_traffic(images, fused=True)
    memory = feature_peak_memory(images, args.chunk)
    features = feature_estimates(traffic, args.chunk)
    fused_rates = feature_estimates(fused, args.chunk)
    print(f"ESTIMATES, NOT MEASUREMENTS (no GPU was used). enhance at {args.size}x{args.size}, float32:")
    print(f"  with the fused CUDA kernels: {fused['bytes_per_image'] / 1e6:.0f} MB/image, "
          f"{fused['kernels_per_chunk'] / args.traffic_images:.0f} launches per image; "
          f"{fused['bytes_per_bccr_iteration'] / 1e6:.1f} MB per BCCR iteration")
    for row in fused_rates:
        print(f"    {row['gpu']:<10} {row['img_s_low']:>7.0f} - {row['img_s_high']:<6.0f} images/s "
              f"(bound {row['bound_img_s']:.0f})")
    print("  the array code (what CuPy runs without them):")
    print(f"  traffic {traffic['bytes_per_image'] / 1e6:.0f} MB/image, "
          f"{traffic['kernels_per_chunk'] / args.traffic_images:.0f} kernel launches per image "
          f"(per chunk: {traffic['kernels_per_chunk']}); allocation peak of a {args.chunk}-image chunk "
          f"{memory['peak_gb']:.2f} GB")
    print(f"  preset {traffic['preset']}; each of its {traffic['bccr_iterations']} BCCR iterations moves "
          f"{traffic['bytes_per_bccr_iteration'] / 1e6:.0f} MB/image "
          f"({traffic['image_planes_per_bccr_iteration']:.0f} float32 image planes); all FFTs "
          f"{traffic['fft_mb_per_image']:.0f} MB/image")
    print(f"  {'GPU':<10} {'images/s':>16} {'bandwidth bound':>16} {'18,685 images':>14}")
    for row in features:
        print(f"  {row['gpu']:<10} {row['img_s_low']:>7.0f} - {row['img_s_high']:<6.0f} "
              f"{row['bound_img_s']:>16.0f} {18685 / row['img_s_low']:>12.0f} s")

    training = {}
    for channels, name in () if args.features_only else ((1, "cxr"), (3, "enh")):
        work = model_work(args.size, channels)
        work["memory_gb"] = training_memory_gb(work, args.batch_size)
        work["xla_memory_gb"] = xla_training_memory_gb(args.size, channels, args.batch_size)
        work["estimates"] = training_estimates(work, args.images, args.epochs, repeats=3)
        training[name] = work
    if training:
        print(f"VGG16 (width 1) at {args.size}x{args.size}, batch {args.batch_size}, "
              f"{args.images} images, {args.epochs} epochs:")
    for name, work in training.items():
        xla = f", XLA plan {work['xla_memory_gb']:.1f} GB" if work["xla_memory_gb"] else ""
        print(f"  {name}: {work['forward_gflop']:.1f} GFLOP forward/image, {work['params'] / 1e6:.1f} M "
              f"params, memory ~{work['memory_gb']:.1f} GB{xla}")
        for row in work["estimates"]:
            print(f"    {row['gpu']:<10} train {row['train_img_s_low']:.0f}-{row['train_img_s_high']:.0f} "
                  f"img/s, run {row['run_min_low']:.0f}-{row['run_min_high']:.0f} min, "
                  f"3-repeat grid {row['grid_h_low']:.1f}-{row['grid_h_high']:.1f} h")

    cpu = None
    if args.cpu_step and not args.features_only:
        cpu = {}
        for width in (1.0, 0.125):
            step = cpu_train_step(args.size, 3, args.batch_size, steps=2, width=width)
            step["img_s"] = args.batch_size / step["median_s"]
            cpu[f"width_{width:g}"] = step
            print(f"CPU (measured), width {width:g}: {step['median_s']:.2f} s per step of {args.batch_size} "
                  f"= {step['img_s']:.2f} img/s, peak RSS {step['peak_rss_gb']:.2f} GB")
        full, work = cpu["width_1"], training["enh"]
        full["achieved_gflop_s"] = full["img_s"] * 3 * work["forward_gflop"]
        full["run_h"] = run_flops(work, args.images, args.epochs) / (full["achieved_gflop_s"] * 1e9) / 3600
        print(f"  width 1: {full['achieved_gflop_s']:.0f} GFLOP/s achieved; one run ~{full['run_h']:.0f} h here")

    write_record(args.json, "gpu-estimate", cpu_model(),
                 settings={k: v for k, v in vars(args).items()},
                 assumptions={"gpus": GPUS, "bandwidth_efficiency": BANDWIDTH_EFFICIENCY,
                              "tensor_utilisation": TENSOR_UTILISATION,
                              "launch_latency_s": LAUNCH_LATENCY_S, "fft_passes": FFT_PASSES},
                 features={"traffic": traffic, "memory": memory, "estimates": features,
                           "fused": {"traffic": fused, "estimates": fused_rates}},
                 training=training, cpu_step=cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
