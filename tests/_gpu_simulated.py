"""Run the CUDA kernels on Numba's simulator against the NumPy path; print the differences as JSON.

Started by tests/test_gpu_kernels.py in a process of its own: ``NUMBA_ENABLE_CUDASIM`` is read when
Numba is first imported, and the test process has imported it for the CPU kernels already.
"""

from __future__ import annotations

import json
import os
import sys
import types
from unittest import mock

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run with NUMBA_ENABLE_CUDASIM=1"

import numpy as np  # noqa: E402

from phasefeat import PhaseParams, _cpu_fft  # noqa: E402
from phasefeat.backend import Backend, get_backend  # noqa: E402
from phasefeat.maths import _gpu_kernels, elea, kirsch  # noqa: E402


class _NumpyAsDevice(types.ModuleType):
    """NumPy under the CuPy backend's name, with the one device attribute the backend asks for."""

    cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0))

    def __getattr__(self, name):
        return getattr(np, name)


def relative(a, b) -> float:
    a, b = np.asarray(a, dtype=np.complex128), np.asarray(b, dtype=np.complex128)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def main() -> dict:
    gpu = _gpu_kernels.kernels()
    assert gpu is not None, "the simulator should run the kernels"
    rng = np.random.default_rng(11)
    out = {"kernels": []}
    shape = (2, 9, 13)
    for dtype in ("float32", "float64"):
        for meng in (True, False):
            t = rng.random(shape).astype(dtype)
            weights = rng.random((8, *shape)).astype(dtype)
            if meng:
                weights[4] = weights[0]
            v = np.full_like(t, np.nan)
            gpu.shrink_adjoint(t, weights, 1 / (8 * 2.83), meng, v)
            ref = kirsch.adjoint_bank(kirsch.shrink(kirsch.correlate_bank(t, meng, np), weights / 8 / 2.83, np),
                                      meng, np)
            w = np.full((8, *shape), np.nan, dtype=dtype)
            gpu.weights(t, 2 * 0.5, meng, w)
            z = kirsch.correlate_bank(t, meng, np)
            ref_w = np.exp(-(z * z) / (2 * 0.5))
            half = (shape[0], shape[1], shape[2] // 2 + 1)
            complex_dtype = np.result_type(dtype, np.complex64)
            a, b = ((rng.standard_normal(half) + 1j * rng.standard_normal(half)).astype(complex_dtype)
                    for _ in range(2))
            power = (3 * rng.random(half[1:])).astype(dtype)
            gamma = np.dtype(dtype).type(2 / 2.83)
            expected = (gamma * a + b) / (gamma + power)
            gpu.spectral_solve(a, b, power, gamma)
            out["kernels"].append({"dtype": dtype, "meng_compat": meng, "shrink_adjoint": relative(v, ref),
                                   "weights": relative(w, ref_w), "spectral_solve": relative(b, expected),
                                   "dtypes_kept": [str(v.dtype), str(w.dtype), str(b.dtype)]})
    # The CuPy path's ELEA with its kernels (a backend named "cupy" over NumPy arrays, as the simulator
    # takes them) against the NumPy array path.
    simulated = Backend("cupy", _NumpyAsDevice("simulated_cupy"), _cpu_fft, "Numba CUDA simulator")
    source = rng.random((2, 12, 17)).astype(np.float32) * 200
    with mock.patch.object(elea, "cpu_kernels", return_value=None):
        reference, ref_details = elea.elea(source, PhaseParams(), get_backend("numpy"), return_details=True)
    calls = []
    original = _gpu_kernels.GpuKernels.shrink_adjoint
    with mock.patch.object(_gpu_kernels.GpuKernels, "shrink_adjoint",
                           lambda self, *a: (calls.append(1), original(self, *a))[1]):
        fused, details = elea.elea(source, PhaseParams(), simulated, return_details=True)
    out["elea"] = {"transmission": relative(details["transmission"], ref_details["transmission"]),
                   "output_max_abs": float(np.abs(fused - reference).max()), "shrink_adjoint_calls": len(calls),
                   "iterations": details["iterations"]}
    return out


if __name__ == "__main__":
    json.dump(main(), sys.stdout)
