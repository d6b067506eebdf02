"""The fused CUDA kernels of the CuPy path: on Numba's CUDA simulator everywhere, on a GPU where there is one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from phasefeat import PhaseParams
from phasefeat.backend import gpu_available
from phasefeat.maths import _gpu_kernels, elea

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def simulated():
    """What tests/_gpu_simulated.py measures: the kernels on the simulator against the NumPy path."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run([sys.executable, str(HERE / "_gpu_simulated.py")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("meng_compat", [True, False])
def test_each_kernel_matches_the_numpy_path_on_the_simulator(simulated, dtype, meng_compat):
    row = next(r for r in simulated["kernels"] if r["dtype"] == dtype and r["meng_compat"] == meng_compat)
    tol = 1e-6 if dtype == "float32" else 1e-13
    assert row["shrink_adjoint"] <= tol  # against kirsch.correlate_bank + shrink + adjoint_bank
    assert row["weights"] <= tol  # against elea.contextual_weights' array code
    assert row["spectral_solve"] <= tol  # against (gamma a + b) / (gamma + power)
    assert row["dtypes_kept"] == [dtype, dtype, str(np.result_type(dtype, np.complex64))]


def test_the_cupy_path_runs_the_fused_kernels_and_gives_the_numpy_elea(simulated):
    run = simulated["elea"]
    assert run["shrink_adjoint_calls"] == run["iterations"] == 6  # one fused launch per BCCR iteration
    assert run["transmission"] <= 1e-5
    assert run["output_max_abs"] <= 1e-2  # on ELEA's 0..255 scale, float32


@pytest.mark.skipif(gpu_available(), reason="a GPU is here: the kernels may load")
def test_without_a_gpu_the_cupy_path_keeps_its_array_code(cupy_standin):
    from phasefeat.backend import get_backend

    assert _gpu_kernels.kernels() is None
    backend = get_backend("cupy")
    t = backend.xp.asarray(np.ones((1, 4, 4), np.float32))
    assert elea._gpu(backend, t) is None


@pytest.mark.gpu
def test_fused_kernels_on_a_gpu_match_the_array_code(monkeypatch):
    import cupy

    from phasefeat.backend import get_backend

    assert _gpu_kernels.kernels() is not None, "numba.cuda could not compile or launch the kernels here"
    backend = get_backend("cupy")
    source = cupy.asarray(np.random.default_rng(3).random((4, 64, 80)).astype(np.float32) * 200)
    fused = cupy.asnumpy(elea.elea(source, PhaseParams(), backend))
    monkeypatch.setattr(elea, "gpu_kernels", lambda: None)
    array_code = cupy.asnumpy(elea.elea(source, PhaseParams(), backend))
    assert np.abs(fused - array_code).max() <= 1e-2
