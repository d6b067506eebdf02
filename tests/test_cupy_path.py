"""The CuPy code path on the stand-in (tests/cupy_standin.py), and the stand-in's own rules.

The stand-in is only worth its tests if it refuses what CuPy refuses: its rules are
checked first, then the branches of the product that run only when the backend is not
NumPy (the probe, the 256-image chunk, device round trips, the Nyquist rule, Dask workers).
"""

from __future__ import annotations

import json

import cupy_standin as standin
import numpy as np
import pytest

from phasefeat import PhaseParams, backend, enhance
from phasefeat.tools.phantom import chest_phantom


def test_the_standin_refuses_implicit_host_transfers(cupy_standin):
    cp = cupy_standin
    x = cp.asarray(np.arange(12.0).reshape(3, 4))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="length-1 arrays"):
        float(x)
    with pytest.raises(TypeError):
        x + np.ones((3, 4))  # a host array mixed in
    with pytest.raises(TypeError, match="host array"):
        cp.maximum(x, np.ones((3, 4)))
    assert float(x[1, 2]) == 6.0 and isinstance(x.sum(), cp.ndarray) and x.sum().ndim == 0
    assert np.array_equal(x.get(), np.arange(12.0).reshape(3, 4)) and np.array_equal(cp.asnumpy(x), x.get())
    assert backend.is_cupy_array(x) and not hasattr(x.flags, "writeable")


def test_the_standin_has_only_cupys_names(cupy_standin):
    cp = cupy_standin
    api = json.loads((cupy_standin_path() / "data" / "cupy-api.json").read_text())
    assert "nanpercentile" not in api["cupy"]
    with pytest.raises(AttributeError, match="not in CuPy"):
        cp.nanpercentile  # NumPy has it, CuPy 14.2 does not
    with pytest.raises(AttributeError, match="not in CuPy"):
        cp.fft.next_fast_len  # scipy.fft has it, cupy.fft does not
    assert cp.fft.rfft2(cp.zeros((4, 4), dtype=cp.float32)).dtype == np.complex64


def cupy_standin_path():
    from pathlib import Path

    return Path(standin.__file__).resolve().parent


@pytest.mark.parametrize("shape", [(8, 8), (9, 8), (8, 9)])
def test_the_standin_refuses_non_hermitian_inverse_ffts(cupy_standin, shape):
    cp = cupy_standin
    spectrum = cp.fft.rfft2(cp.asarray(np.random.default_rng(0).random(shape)))
    cp.fft.irfft2(spectrum, s=shape)  # Hermitian: fine
    broken = spectrum.copy()
    column = shape[1] // 2 if shape[1] % 2 == 0 else 0
    broken[shape[0] // 2, column] *= 1j  # a self-conjugate bin made complex
    with pytest.raises(ValueError, match="not Hermitian"):
        cp.fft.irfft2(broken, s=shape)


def test_the_probe_takes_the_standin_for_a_working_gpu(monkeypatch):
    """The code that decides whether CuPy works, run against a CuPy that does."""
    import sys

    monkeypatch.setitem(sys.modules, "cupy", standin.module)
    module, reason = backend._cupy_status()
    assert module is standin.module and reason == ""
    found = backend._cupy_backend_or_reason.__wrapped__()  # uncached: this test's CuPy
    assert found.name == "cupy" and found.xp is standin.module and found.device == standin.DEVICE
    monkeypatch.setattr(backend, "_cupy_backend_or_reason", lambda: found)
    assert backend.gpu_available() and backend.get_backend("auto").name == "cupy"


@pytest.mark.parametrize("scaling", ["minmax", "fixed"])
def test_a_chunk_of_256_with_constant_images_equals_numpy(cupy_standin, scaling):
    """More images than one CuPy chunk (256), with constant images inside both chunks."""
    from phasefeat.maths.features import CHUNK

    assert CHUNK["cupy"] == 256
    rng = np.random.default_rng(1)
    batch = np.stack([chest_phantom((24, 20), seed=s) for s in range(8)] * 38)[:300].astype(np.float64)
    batch += rng.normal(0, 0.01, batch.shape)
    for k in (5, 255, 256, 299):
        batch[k] = 0.5 + k
    params = PhaseParams(scaling=scaling)
    device = enhance(batch, params, backend="cupy", dtype="float64")
    host = enhance(batch, params, backend="numpy", dtype="float64")
    assert isinstance(device, np.ndarray) and device.shape == (300, 24, 20, 3)
    for k in (5, 255, 256, 299):
        assert not device[k].any()
    assert np.abs(device - host).max() < 1e-9


def test_enhance_transform_takes_and_gives_device_arrays(cupy_standin):
    from phasefeat.tools.transforms import Enhance

    image = chest_phantom(48, seed=2)
    on_device = Enhance()(cupy_standin.asarray(image))
    assert isinstance(on_device, cupy_standin.ndarray) and on_device.shape == (48, 48, 3)
    assert np.abs(on_device.get() - Enhance()(image)).max() < 1e-4
    first = Enhance(out="uint8")(cupy_standin.asarray(image[None]))
    assert isinstance(first, cupy_standin.ndarray) and first.shape == (3, 48, 48) and first.dtype == np.uint8


def test_the_nyquist_rule_is_what_lets_even_sizes_through(cupy_standin, monkeypatch):
    """Without zeroing the Riesz filters on the Nyquist row and column, cuFFT gets a non-Hermitian
    spectrum: the stand-in refuses it (NumPy alone would silently drop the imaginary part)."""
    from phasefeat.maths import filters

    image = chest_phantom((48, 50), seed=3)
    enhance(image, backend="cupy")  # the product's filters: accepted
    real_riesz = filters.riesz

    def unzeroed(shape, kovesi_odd_grid=False):
        ux, uy, rho = filters.frequency_grid(shape, kovesi_odd_grid)
        safe = np.where(rho == 0, 1.0, rho)
        return np.where(rho == 0, 0.0, ux / safe), np.where(rho == 0, 0.0, uy / safe)

    assert all(np.array_equal(a, b) for a, b in zip(real_riesz((47, 49)), unzeroed((47, 49)), strict=True))
    monkeypatch.setattr(filters, "riesz", unzeroed)
    filters._filter_bank_cached.cache_clear()
    try:
        with pytest.raises(ValueError, match="not Hermitian on its"):
            enhance(image, backend="cupy")
        assert enhance(image, backend="numpy").shape == (48, 50, 3)  # NumPy hides it
    finally:
        filters._filter_bank_cached.cache_clear()


@pytest.mark.slow
def test_convert_on_dask_workers_with_the_cupy_backend(cupy_standin, tmp_path):
    """`convert --scheduler local:1 --backend cupy`: the workers compute on their (stand-in) GPU."""
    from datasets import class_folder_dataset
    from test_convert import run

    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=3)
    args = ["--size", "32", "-q", "--piece-size", "2"]
    run("convert", root, tmp_path / "numpy.h5", *args, "--backend", "numpy", "--workers", "1")
    # The workers' nanny hands them this configuration: each worker loads the stand-in first.
    with dask.config.set({"distributed.worker.preload": [str(cupy_standin_path() / "_standin_preload.py")]}):
        run("convert", root, tmp_path / "dask.h5", *args, "--backend", "cupy", "--scheduler", "local:1")
    from phasefeat.io.store import open_store

    with open_store(tmp_path / "numpy.h5") as a, open_store(tmp_path / "dask.h5") as b:
        assert b.attrs["backend"] == "cupy"
        assert b.attrs["device"] == f"Dask workers: cupy on {standin.DEVICE}"  # what the workers used
        assert a.source_paths == b.source_paths and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.read_many(range(len(a)), "cxr"), b.read_many(range(len(b)), "cxr"))
        # The CuPy path is array code on numpy.fft here; the NumPy backend uses scipy.fft and fused
        # kernels: float32 rounding, the GPU tests' tolerance.
        ea, eb = a.read_many(range(len(a))).astype(int), b.read_many(range(len(b))).astype(int)
        assert np.mean(np.abs(ea - eb) <= 1) >= 0.999 and np.abs(ea - eb).max() <= 2


def test_the_benchmarks_gpu_rows_run_on_the_cupy_path(cupy_standin, monkeypatch):
    """bench_features.py's CuPy rows have never met a GPU: they must at least run the CuPy path."""
    import argparse

    monkeypatch.syspath_prepend(str(cupy_standin_path().parent / "benchmarks"))
    import bench_features

    images = np.stack([chest_phantom(32, seed=s) for s in range(3)]).astype(np.float32) * 255
    rows, note = bench_features.gpu_rows(images, argparse.Namespace(gpu_batches="1,4", repeats=1))
    assert "could not run the fused kernels" in note and len(rows) == 8  # 3 stages + the array code, 2 batches
    assert {r["stage"] for r in rows} == {"monogenic", "enhance", "enhance host uint8->uint8"}
    assert [r["mode"] for r in rows if r["impl"] == "phasefeat cupy, array code"] == ["batch 1", "batch 4"]
    assert not any(r["fused_kernels"] for r in rows)
    assert all(r["device"] == standin.DEVICE and r["img_s"] > 0 for r in rows)
    summary = bench_features.summarise(rows)
    assert summary["targets"]["gpu_enhance_img_s_batch64"]["measured"] is None  # batches < 64 only


@pytest.mark.slow
def test_the_gpu_check_plans_every_step_and_trains_on_the_cpu():
    """`python benchmarks/gpu_check.py --dry-run`: what the first GPU will run cannot rot before then."""
    import subprocess
    import sys

    pytest.importorskip("jax")
    repo = cupy_standin_path().parent
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run"], cwd=repo, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [line.split(":")[1].strip() for line in done.stdout.splitlines() if line.startswith("plan:")]
    assert steps == ["install", "install fused kernels", "gpu tests", "feature benchmark", "convert parity",
                     "VGG16 epoch", "12-run grid"]
    assert "dry run: training step on CPU (jax)" in done.stdout


def test_the_gpu_check_says_so_without_a_gpu(monkeypatch):
    import shutil

    monkeypatch.syspath_prepend(str(cupy_standin_path().parent / "benchmarks"))
    import gpu_check

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert gpu_check.main([]) == 2
