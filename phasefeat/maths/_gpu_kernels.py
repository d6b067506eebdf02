"""Fused CUDA kernels of ELEA's contextual regularisation for the CuPy path, compiled by Numba.

The array-module path runs each BCCR iteration as dozens of whole-array kernels (eight
shifted copies, eight responses, their shrinkage, eight adjoint planes): about 470 image
planes of memory traffic per iteration (``benchmarks/estimate_gpu.py``). Here one kernel
does the shrink + adjoint of a pixel from its 5 x 5 neighbourhood of ``t`` and the weights
of its 3 x 3 neighbours (each neighbour's eight shrunk responses are recomputed, not
stored), one kernel does the spectral solve, and one the contextual weights: the traffic
is the arrays read and written once.

The per-pixel arithmetic (soft threshold, spectral solve) is the same Python the CPU
kernels compile (:mod:`phasefeat.maths._pixel`). Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) runs these kernels on a CPU on NumPy arrays, which is how the
tests compare them with the NumPy path without a GPU; on a GPU they take CuPy arrays
(``__cuda_array_interface__``). Arithmetic runs in float64 registers whatever the array
dtype; results are stored in the arrays' dtype.

:func:`kernels` returns None, and the CuPy path keeps its array code, where Numba's CUDA
target cannot compile or launch (no GPU, no CUDA toolkit Numba can use).
"""

from __future__ import annotations

import functools
import logging
import math

from ._pixel import soft, solved

logger = logging.getLogger("phasefeat")

NORM = 1.0 / math.sqrt(120.0)
#: Neighbour offsets (dy, dx), clockwise from the top-left corner (kirsch.OFFSETS).
DY = (-1, -1, -1, 0, 1, 1, 1, 0)
DX = (-1, 0, 1, 1, 1, 0, -1, -1)
BLOCK = (32, 8, 1)


def _ring(t, n, y, x, h, w):
    """The eight circular neighbours of ``t[n, y, x]``, clockwise from the top-left."""
    ym, yp = (y - 1) % h, (y + 1) % h
    xm, xp = (x - 1) % w, (x + 1) % w
    return (t[n, ym, xm], t[n, ym, x], t[n, ym, xp], t[n, y, xp],
            t[n, yp, xp], t[n, yp, x], t[n, yp, xm], t[n, y, xm])


def _responses(a):
    """The eight normalised Kirsch responses from the ring ``a`` (kirsch.correlate_bank)."""
    m = 3.0 * (a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7])
    return ((8.0 * (a[0] + a[1] + a[2]) - m) * NORM, (8.0 * (a[1] + a[2] + a[3]) - m) * NORM,
            (8.0 * (a[2] + a[3] + a[4]) - m) * NORM, (8.0 * (a[3] + a[4] + a[5]) - m) * NORM,
            (8.0 * (a[4] + a[5] + a[6]) - m) * NORM, (8.0 * (a[5] + a[6] + a[7]) - m) * NORM,
            (8.0 * (a[6] + a[7] + a[0]) - m) * NORM, (8.0 * (a[7] + a[0] + a[1]) - m) * NORM)


cuda = None  # numba.cuda, imported by _make: kernels find it as a global (the simulator swaps globals)


def _make():
    """Compile the device functions and kernels with ``numba.cuda``."""
    global cuda
    from numba import cuda

    device = cuda.jit(device=True)
    d_soft, d_solved, d_ring, d_responses = device(soft), device(solved), device(_ring), device(_responses)

    @device
    def adjoint_part(t, weights, n, y, x, h, w, scale, meng_compat, k):
        """``b_k = 8 (u_k + u_{k-1} + u_{k-2}) - 3 sum u`` at ``(y, x)``, ``u`` the shrunk responses."""
        z = d_responses(d_ring(t, n, y, x, h, w))
        u0 = d_soft(z[0], weights[0, n, y, x] * scale)
        u1 = d_soft(z[1], weights[1, n, y, x] * scale)
        u2 = d_soft(z[2], weights[2, n, y, x] * scale)
        u3 = d_soft(z[3], weights[3, n, y, x] * scale)
        u4 = 0.0
        if meng_compat:  # Meng's bank repeats mask 0 in fifth place: direction 0 twice, 4 never
            u0 = u0 + u0
        else:
            u4 = d_soft(z[4], weights[4, n, y, x] * scale)
        u5 = d_soft(z[5], weights[5, n, y, x] * scale)
        u6 = d_soft(z[6], weights[6, n, y, x] * scale)
        u7 = d_soft(z[7], weights[7, n, y, x] * scale)
        u = (u0, u1, u2, u3, u4, u5, u6, u7)
        total = 3.0 * (u0 + u1 + u2 + u3 + u4 + u5 + u6 + u7)
        return 8.0 * (u[k] + u[(k + 7) % 8] + u[(k + 6) % 8]) - total

    @cuda.jit
    def shrink_adjoint(t, weights, scale, meng_compat, out):
        x, y, n = cuda.grid(3)
        nn, h, w = t.shape
        if n >= nn or y >= h or x >= w:
            return
        acc = 0.0
        for k in range(8):  # v[p] = c sum_k b_k[p - offset_k]
            acc += adjoint_part(t, weights, n, (y - DY[k]) % h, (x - DX[k]) % w, h, w, scale, meng_compat, k)
        out[n, y, x] = acc * NORM

    @cuda.jit
    def spectral_solve(t_hat_spec, v_spec, power, gamma):
        x, y, n = cuda.grid(3)
        if n < v_spec.shape[0] and y < v_spec.shape[1] and x < v_spec.shape[2]:
            v_spec[n, y, x] = d_solved(t_hat_spec[n, y, x], v_spec[n, y, x], gamma, power[y, x], 1.0)

    @cuda.jit
    def weights(x_img, two_sigma, meng_compat, out):
        x, y, n = cuda.grid(3)
        nn, h, w = x_img.shape
        if n >= nn or y >= h or x >= w:
            return
        z = d_responses(d_ring(x_img, n, y, x, h, w))
        for k in range(8):
            j = 0 if meng_compat and k == 4 else k
            out[k, n, y, x] = math.exp(-(z[j] * z[j]) / two_sigma)

    return shrink_adjoint, spectral_solve, weights


def _grid(shape):
    n, h, w = shape
    return (-(-w // BLOCK[0]), -(-h // BLOCK[1]), n)


class GpuKernels:
    """Launchers of the three kernels on ``(N, H, W)`` batches (CuPy arrays, or NumPy on the simulator)."""

    def __init__(self, compiled, simulated: bool):
        self._shrink_adjoint, self._spectral_solve, self._weights = compiled
        self.simulated = simulated

    def accepts(self, array) -> bool:
        """Whether the kernels can take ``array``: device memory (CuPy), or anything on the simulator."""
        return self.simulated or hasattr(array, "__cuda_array_interface__")

    def shrink_adjoint(self, t, weights, scale: float, meng_compat: bool, out) -> None:
        """``out = adjoint(shrink(bank(t), weights * scale))`` (kirsch.correlate_bank, shrink, adjoint_bank)."""
        self._shrink_adjoint[_grid(t.shape), BLOCK](t, weights, float(scale), bool(meng_compat), out)

    def spectral_solve(self, t_hat_spec, v_spec, power, gamma: float) -> None:
        """In place: ``v_spec = (gamma * t_hat_spec + v_spec) / (gamma + power)``."""
        self._spectral_solve[_grid(v_spec.shape), BLOCK](t_hat_spec, v_spec, power, float(gamma))

    def weights(self, x, two_sigma: float, meng_compat: bool, out) -> None:
        """``out[j] = exp(-(D_j * x)**2 / two_sigma)``, shape (8, N, H, W) (elea.contextual_weights)."""
        self._weights[_grid(x.shape), BLOCK](x, float(two_sigma), bool(meng_compat), out)


@functools.cache
def kernels() -> GpuKernels | None:
    """The compiled kernels, tried once on a 3 x 3 image; None (logged) where they cannot run."""
    try:
        import numpy as np
        from numba import cuda as numba_cuda

        if not numba_cuda.is_available():
            logger.info("numba.cuda sees no usable GPU: the CuPy path runs its array code")
            return None
        from numba import config

        launcher = GpuKernels(_make(), simulated=bool(config.ENABLE_CUDASIM))
        probe = np.ones((1, 3, 3), dtype=np.float32)
        weights = np.ones((8, 1, 3, 3), dtype=np.float32)
        launcher.weights(probe, 1.0, True, weights)
        launcher.shrink_adjoint(probe, weights, 0.1, True, probe.copy())
        spectrum = np.ones((1, 3, 2), dtype=np.complex64)
        launcher.spectral_solve(spectrum, spectrum.copy(), np.ones((3, 2), np.float32), 0.5)
        return launcher
    except Exception as exc:  # no CUDA toolkit Numba can use, a driver too old, ...
        logger.info("numba.cuda kernels unavailable (%s: %s): the CuPy path runs its array code",
                    type(exc).__name__, exc)
        return None
