"""Numba-fused CPU kernels for the Kirsch bank (standard masks only).

They compute what :func:`phasefeat.kirsch.correlate_bank` and one shrink +
:func:`phasefeat.kirsch.adjoint_bank` step compute, for one image, in two
passes over wrap-padded copies instead of ~40 whole-array NumPy operations.
Numba is imported lazily; :func:`kernels` returns None when it cannot load.
Neighbours ``a0..a7`` run clockwise from the top-left corner, as
:data:`phasefeat.kirsch.OFFSETS`.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np

logger = logging.getLogger("phasefeat")

NORM = 1.0 / math.sqrt(120.0)


def _correlate_bank_2d(x, out):
    h, w = x.shape
    p = np.empty((h + 2, w + 2), dtype=x.dtype)
    p[1:h + 1, 1:w + 1] = x
    p[1:h + 1, 0] = x[:, w - 1]
    p[1:h + 1, w + 1] = x[:, 0]
    p[0, :] = p[h, :]
    p[h + 1, :] = p[1, :]
    c = x.dtype.type(NORM)
    for i in range(1, h + 1):
        for j in range(1, w + 1):
            a0 = p[i - 1, j - 1]
            a1 = p[i - 1, j]
            a2 = p[i - 1, j + 1]
            a3 = p[i, j + 1]
            a4 = p[i + 1, j + 1]
            a5 = p[i + 1, j]
            a6 = p[i + 1, j - 1]
            a7 = p[i, j - 1]
            m = 3 * (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7)
            out[0, i - 1, j - 1] = (8 * (a0 + a1 + a2) - m) * c
            out[1, i - 1, j - 1] = (8 * (a1 + a2 + a3) - m) * c
            out[2, i - 1, j - 1] = (8 * (a2 + a3 + a4) - m) * c
            out[3, i - 1, j - 1] = (8 * (a3 + a4 + a5) - m) * c
            out[4, i - 1, j - 1] = (8 * (a4 + a5 + a6) - m) * c
            out[5, i - 1, j - 1] = (8 * (a5 + a6 + a7) - m) * c
            out[6, i - 1, j - 1] = (8 * (a6 + a7 + a0) - m) * c
            out[7, i - 1, j - 1] = (8 * (a7 + a0 + a1) - m) * c


def _soft(z, th):
    s = abs(z) - th
    if s <= 0:
        return z * 0
    return s if z > 0 else -s


def _shrink_adjoint_2d(t, thr, inv_beta, out):
    h, w = t.shape
    p = np.empty((h + 2, w + 2), dtype=t.dtype)
    p[1:h + 1, 1:w + 1] = t
    p[1:h + 1, 0] = t[:, w - 1]
    p[1:h + 1, w + 1] = t[:, 0]
    p[0, :] = p[h, :]
    p[h + 1, :] = p[1, :]
    # b[k] = 8 * (u_k + u_{k-1} + u_{k-2}) - 3 * sum(u), wrap-padded for pass 2.
    b = np.empty((8, h + 2, w + 2), dtype=t.dtype)
    c = t.dtype.type(NORM)
    ib = t.dtype.type(inv_beta)
    for i in range(1, h + 1):
        for j in range(1, w + 1):
            a0 = p[i - 1, j - 1]
            a1 = p[i - 1, j]
            a2 = p[i - 1, j + 1]
            a3 = p[i, j + 1]
            a4 = p[i + 1, j + 1]
            a5 = p[i + 1, j]
            a6 = p[i + 1, j - 1]
            a7 = p[i, j - 1]
            m = 3 * (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7)
            u0 = _soft((8 * (a0 + a1 + a2) - m) * c, thr[0, i - 1, j - 1] * ib)
            u1 = _soft((8 * (a1 + a2 + a3) - m) * c, thr[1, i - 1, j - 1] * ib)
            u2 = _soft((8 * (a2 + a3 + a4) - m) * c, thr[2, i - 1, j - 1] * ib)
            u3 = _soft((8 * (a3 + a4 + a5) - m) * c, thr[3, i - 1, j - 1] * ib)
            u4 = _soft((8 * (a4 + a5 + a6) - m) * c, thr[4, i - 1, j - 1] * ib)
            u5 = _soft((8 * (a5 + a6 + a7) - m) * c, thr[5, i - 1, j - 1] * ib)
            u6 = _soft((8 * (a6 + a7 + a0) - m) * c, thr[6, i - 1, j - 1] * ib)
            u7 = _soft((8 * (a7 + a0 + a1) - m) * c, thr[7, i - 1, j - 1] * ib)
            s3 = 3 * (u0 + u1 + u2 + u3 + u4 + u5 + u6 + u7)
            b[0, i, j] = 8 * (u0 + u7 + u6) - s3
            b[1, i, j] = 8 * (u1 + u0 + u7) - s3
            b[2, i, j] = 8 * (u2 + u1 + u0) - s3
            b[3, i, j] = 8 * (u3 + u2 + u1) - s3
            b[4, i, j] = 8 * (u4 + u3 + u2) - s3
            b[5, i, j] = 8 * (u5 + u4 + u3) - s3
            b[6, i, j] = 8 * (u6 + u5 + u4) - s3
            b[7, i, j] = 8 * (u7 + u6 + u5) - s3
    for k in range(8):
        for i in range(1, h + 1):
            b[k, i, 0] = b[k, i, w]
            b[k, i, w + 1] = b[k, i, 1]
        for j in range(w + 2):
            b[k, 0, j] = b[k, h, j]
            b[k, h + 1, j] = b[k, 1, j]
    # v[n] = c * sum_k b[k][n - offset_k]
    for i in range(1, h + 1):
        for j in range(1, w + 1):
            out[i - 1, j - 1] = c * (b[0, i + 1, j + 1] + b[1, i + 1, j] + b[2, i + 1, j - 1]
                                     + b[3, i, j - 1] + b[4, i - 1, j - 1] + b[5, i - 1, j]
                                     + b[6, i - 1, j + 1] + b[7, i, j + 1])


@functools.cache
def kernels():
    """Return ``(correlate_bank_2d, shrink_adjoint_2d)`` compiled, or None."""
    try:
        import numba
        import numba.extending
    except Exception as exc:  # ImportError, or numba refusing this NumPy
        logger.info("numba unavailable (%s): using the array-module Kirsch path", exc)
        return None
    numba.extending.register_jitable(_soft)  # callable from the kernels, still plain Python
    jit = numba.njit(cache=True, nogil=True)
    return jit(_correlate_bank_2d), jit(_shrink_adjoint_2d)
