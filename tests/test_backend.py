"""Backend selection (tested by monkeypatching availability) and CPU/GPU parity (needs a GPU)."""

import logging

import numpy as np
import pytest

from phasefeat import BackendUnavailableError, backend, enhance, monogenic
from phasefeat.params import PhaseParams
from phasefeat.tools.phantom import chest_phantom


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(backend, "_cupy_backend_or_reason",
                        lambda: "CuPy is not installed (test); install the GPU extra")


def test_numpy_backend():
    be = backend.get_backend("numpy")
    assert be.name == "numpy" and be.xp is np
    assert backend.get_backend(None).name == "numpy"
    assert backend.get_backend(None, like=np.zeros(3)).name == "numpy"


def test_cupy_unavailable_raises_with_reason_and_fix(no_gpu):
    with pytest.raises(BackendUnavailableError, match="not installed.*GPU extra"):
        backend.get_backend("cupy")
    with pytest.raises(BackendUnavailableError):
        enhance(np.ones((16, 16)), backend="cupy")


def test_auto_falls_back_to_numpy_and_logs(no_gpu, caplog):
    with caplog.at_level(logging.INFO, logger="phasefeat"):
        be = backend.get_backend("auto")
    assert be.name == "numpy"
    assert "backend auto: using NumPy" in caplog.text and "not installed" in caplog.text


def test_auto_prefers_a_working_gpu(monkeypatch, caplog):
    fake = backend.Backend("cupy", np, np.fft, "Fake GPU")
    monkeypatch.setattr(backend, "_cupy_backend_or_reason", lambda: fake)
    with caplog.at_level(logging.INFO, logger="phasefeat"):
        assert backend.get_backend("auto") is fake
    assert "Fake GPU" in caplog.text


def test_probe_reports_why_when_cupy_is_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    module, reason = backend._cupy_status()
    assert module is None and "pip install 'phasefeat[gpu]'" in reason


def test_probe_reports_driver_errors(monkeypatch):
    import sys
    import types

    class FakeCupy(types.ModuleType):
        def is_available(self):
            return True

        def zeros(self, n):
            raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    monkeypatch.setitem(sys.modules, "cupy", FakeCupy("cupy"))
    module, reason = backend._cupy_status()
    assert module is None and "cudaErrorInsufficientDriver" in reason and "driver" in reason
    FakeCupy.is_available = lambda self: False
    assert "no usable CUDA device" in backend._cupy_status()[1]


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.get_backend("jax")


# ---- The CuPy backend (stand-in and real GPU) against NumPy ---------------------------------

def test_gpu_float_enh_matches_numpy(real_images, cupy_module):
    for image in [*real_images, chest_phantom(299, seed=2).astype(np.float64)]:
        cpu = enhance(image, backend="numpy")
        gpu = enhance(image, backend="cupy")
        assert isinstance(gpu, np.ndarray)  # NumPy in, NumPy out
        assert np.abs(gpu - cpu).max() < 1e-4


def test_gpu_uint8_enh_within_one_level(cupy_module):
    batch = np.stack([chest_phantom(299, seed=s) for s in range(8)])
    cpu = enhance(batch, backend="numpy", out="uint8").astype(int)
    gpu = enhance(batch, backend="cupy", out="uint8").astype(int)
    assert np.mean(np.abs(gpu - cpu) <= 1) >= 0.999
    assert np.abs(gpu - cpu).max() <= 2  # float32 rounding, never a different map


def test_gpu_cupy_in_cupy_out(cupy_module):
    cupy = cupy_module
    image = cupy.asarray(chest_phantom(64, seed=1))
    enh = enhance(image)  # backend None follows the input
    assert isinstance(enh, cupy.ndarray) and enh.shape == (64, 64, 3)
    mono = monogenic(image)
    assert isinstance(mono.lwpa, cupy.ndarray) and mono.even.shape == (PhaseParams().nscale, 64, 64)
    assert isinstance(enhance(image, backend="numpy"), cupy.ndarray)


def test_gpu_filter_bank_is_cached(cupy_module):
    from phasefeat.maths.filters import filter_bank
    from phasefeat.params import PhaseParams

    be = backend.get_backend("cupy")
    a = filter_bank((64, 64), PhaseParams(), "float32", be)
    assert filter_bank((64, 64), PhaseParams(), "float32", be) is a


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(31, 47), (64, 64), (2, 30, 41), (3, 128, 96)])
def test_cpu_irfft2_equals_scipy_bit_for_bit(dtype, shape):
    import scipy.fft

    from phasefeat import _cpu_fft

    x = np.random.default_rng(2).random(shape).astype(dtype)
    spectrum = scipy.fft.rfft2(x) * np.asarray(1 + 0.5j, dtype=np.result_type(dtype, np.complex64))
    before = spectrum.copy()
    ours = _cpu_fft.irfft2(spectrum, s=shape[-2:])
    assert ours.dtype == np.dtype(dtype)
    assert np.array_equal(ours, scipy.fft.irfft2(spectrum, s=shape[-2:]))
    assert np.array_equal(spectrum, before)  # the caller's spectrum is left as it was
    assert np.array_equal(_cpu_fft.irfft2(spectrum.copy(), s=shape[-2:], overwrite_x=True), ours)
    assert backend.get_backend("numpy").fft is _cpu_fft
