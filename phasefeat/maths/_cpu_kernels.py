"""Numba-fused CPU kernels: the Kirsch bank and the phase sums.

They compute what :func:`phasefeat.maths.kirsch.correlate_bank` and one shrink +
:func:`phasefeat.maths.kirsch.adjoint_bank` step compute, for one image, in two
passes over wrap-padded copies instead of ~40 whole-array NumPy operations.
Numba is imported lazily; :func:`kernels` returns None when it cannot load.
Neighbours ``a0..a7`` run clockwise from the top-left corner, as
:data:`phasefeat.maths.kirsch.OFFSETS`.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np

logger = logging.getLogger("phasefeat")

NORM = 1.0 / math.sqrt(120.0)


def _wrap_pad(x):
    """Copy of ``x`` with a one-pixel circular border."""
    h, w = x.shape
    p = np.empty((h + 2, w + 2), dtype=x.dtype)
    p[1:h + 1, 1:w + 1] = x
    p[1:h + 1, 0] = x[:, w - 1]
    p[1:h + 1, w + 1] = x[:, 0]
    p[0, :] = p[h, :]
    p[h + 1, :] = p[1, :]
    return p


def _correlate_bank_2d(x, out):
    h, w = x.shape
    p = _wrap_pad(x)
    c = x.dtype.type(NORM)
    eight = x.dtype.type(8)
    three = x.dtype.type(3)
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
            m = three * (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7)
            out[0, i - 1, j - 1] = (eight * (a0 + a1 + a2) - m) * c
            out[1, i - 1, j - 1] = (eight * (a1 + a2 + a3) - m) * c
            out[2, i - 1, j - 1] = (eight * (a2 + a3 + a4) - m) * c
            out[3, i - 1, j - 1] = (eight * (a3 + a4 + a5) - m) * c
            out[4, i - 1, j - 1] = (eight * (a4 + a5 + a6) - m) * c
            out[5, i - 1, j - 1] = (eight * (a5 + a6 + a7) - m) * c
            out[6, i - 1, j - 1] = (eight * (a6 + a7 + a0) - m) * c
            out[7, i - 1, j - 1] = (eight * (a7 + a0 + a1) - m) * c


def _soft(z, th):
    # sign(z) * max(|z| - th, 0) == z - clamp(z, -th, th) for th >= 0; min/max
    # keep the loop branch-free so it vectorises, in float32 as in float64.
    return z - min(max(z, -th), th)


def _shrink_adjoint_2d(t, thr, inv_beta, meng_compat, out):
    h, w = t.shape
    p = _wrap_pad(t)
    # b[k] = 8 * (u_k + u_{k-1} + u_{k-2}) - 3 * sum(u), wrap-padded for pass 2.
    b = np.empty((8, h + 2, w + 2), dtype=t.dtype)
    # One row at a time, in short loops that each touch few arrays: LLVM only
    # vectorises loops whose pointers it can check for aliasing cheaply, and a
    # single fused per-pixel loop over 8 + 8 planes ran 5x slower.
    z = np.empty((9, w), dtype=t.dtype)
    c = t.dtype.type(NORM)
    ib = t.dtype.type(inv_beta)
    eight = t.dtype.type(8)
    three = t.dtype.type(3)
    for i in range(1, h + 1):
        r0 = p[i - 1]
        r1 = p[i]
        r2 = p[i + 1]
        for j in range(1, w + 1):
            a0 = r0[j - 1]
            a1 = r0[j]
            a2 = r0[j + 1]
            a3 = r1[j + 1]
            a4 = r2[j + 1]
            a5 = r2[j]
            a6 = r2[j - 1]
            a7 = r1[j - 1]
            m = three * (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7)
            z[0, j - 1] = (eight * (a0 + a1 + a2) - m) * c
            z[1, j - 1] = (eight * (a1 + a2 + a3) - m) * c
            z[2, j - 1] = (eight * (a2 + a3 + a4) - m) * c
            z[3, j - 1] = (eight * (a3 + a4 + a5) - m) * c
            z[4, j - 1] = (eight * (a4 + a5 + a6) - m) * c
            z[5, j - 1] = (eight * (a5 + a6 + a7) - m) * c
            z[6, j - 1] = (eight * (a6 + a7 + a0) - m) * c
            z[7, j - 1] = (eight * (a7 + a0 + a1) - m) * c
        for k in range(8):
            zk = z[k]
            tk = thr[k, i - 1]
            for j in range(w):
                zk[j] = _soft(zk[j], tk[j] * ib)
        if meng_compat:
            # Meng's bank repeats direction 0 in fifth place (same weights, so the same
            # shrunk response): the adjoint sees direction 0 twice and direction 4 never.
            for j in range(w):
                z[0, j] = z[0, j] + z[0, j]
                z[4, j] = 0
        total = z[8]
        for j in range(w):
            total[j] = three * (z[0, j] + z[1, j] + z[2, j] + z[3, j]
                                + z[4, j] + z[5, j] + z[6, j] + z[7, j])
        for k in range(8):
            bk = b[k, i]
            u0 = z[k]
            u1 = z[(k + 7) % 8]
            u2 = z[(k + 6) % 8]
            for j in range(w):
                bk[j + 1] = eight * (u0[j] + u1[j] + u2[j]) - total[j]
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


def _phase_sums_2d(comps, polarity, e_sum, odd_norm, energy):
    """Per pixel: E = sum e_s, |O| = |sum o_s|, PE = sum (pol(e_s) - |o_s|).

    ``comps`` is ``(3 * nscale, H, W)`` ordered even, odd_x, odd_y per scale.
    Row by row, so each inner loop streams a few arrays and vectorises.
    """
    nscale = comps.shape[0] // 3
    h, w = comps.shape[1], comps.shape[2]
    ox = np.empty(w, dtype=comps.dtype)
    oy = np.empty(w, dtype=comps.dtype)
    sign = comps.dtype.type(polarity)
    zero = comps.dtype.type(0)
    for i in range(h):
        er = e_sum[i]
        pr = energy[i]
        for j in range(w):
            er[j] = zero
            pr[j] = zero
            ox[j] = zero
            oy[j] = zero
        for s in range(nscale):
            e = comps[3 * s, i]
            o1 = comps[3 * s + 1, i]
            o2 = comps[3 * s + 2, i]
            if polarity == 0:
                for j in range(w):
                    pr[j] += abs(e[j]) - math.sqrt(o1[j] * o1[j] + o2[j] * o2[j])
            else:
                for j in range(w):
                    pr[j] += sign * e[j] - math.sqrt(o1[j] * o1[j] + o2[j] * o2[j])
            for j in range(w):
                er[j] += e[j]
                ox[j] += o1[j]
                oy[j] += o2[j]
        nr = odd_norm[i]
        for j in range(w):
            nr[j] = math.sqrt(ox[j] * ox[j] + oy[j] * oy[j])


@functools.cache
def kernels():
    """Return ``(correlate_bank_2d, shrink_adjoint_2d, phase_sums_2d)`` compiled, or None."""
    try:
        import numba
        import numba.extending
    except Exception as exc:  # ImportError, or numba refusing this NumPy
        logger.info("numba unavailable (%s): using the array-module Kirsch path", exc)
        return None
    for helper in (_soft, _wrap_pad):  # callable from the kernels, still plain Python
        numba.extending.register_jitable(fastmath=True)(helper)
    jit = numba.njit(cache=True, nogil=True, fastmath=True)
    return jit(_correlate_bank_2d), jit(_shrink_adjoint_2d), jit(_phase_sums_2d)
