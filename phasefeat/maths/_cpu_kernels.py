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

from ._pixel import soft, solved

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


def _correlate_bank_2d(x, two_sigma, out):
    """The eight Kirsch responses ``z`` of ``x``; with ``two_sigma > 0`` the
    contextual weights' exponent ``-(z * z) / two_sigma`` instead (one pass, not four).
    """
    h, w = x.shape
    p = _wrap_pad(x)
    c = x.dtype.type(NORM)
    eight = x.dtype.type(8)
    three = x.dtype.type(3)
    s = x.dtype.type(two_sigma)
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
        if two_sigma > 0:
            for k in range(8):
                row = out[k, i - 1]
                for j in range(w):
                    row[j] = -(row[j] * row[j]) / s


def _shrink_adjoint_2d(t, weights, scale, meng_compat, out):
    """``out = adjoint(shrink(bank(t), weights * scale))``, one pass over the image.

    Row by row: the eight shrunk responses of row ``i`` and their adjoint
    planes live in a few row buffers (in cache), and each row's adjoint lands
    in ``out`` rows ``i - 1``, ``i`` and ``i + 1`` at once, so the image is
    read once, the weights once and ``out`` written once: no eight-plane
    temporary. The sum runs in another order than the array-module path
    (rounding-level differences only).
    """
    h, w = t.shape
    c = t.dtype.type(NORM)
    th_scale = t.dtype.type(scale)
    eight = t.dtype.type(8)
    three = t.dtype.type(3)
    zero = t.dtype.type(0)
    rows = np.empty((3, w + 2), dtype=t.dtype)  # rows i - 1, i, i + 1, wrap-padded
    z = np.empty((9, w), dtype=t.dtype)  # the eight shrunk responses and 3 * their sum
    b = np.empty((8, w + 2), dtype=t.dtype)  # b[k] = 8 (u_k + u_{k-1} + u_{k-2}) - 3 sum u
    for i in range(h):
        for j in range(w):
            out[i, j] = zero
    # Short loops that each touch few arrays: LLVM only vectorises loops whose
    # pointers it can check for aliasing cheaply (one fused per-pixel loop over
    # 8 + 8 planes ran 5x slower).
    for i in range(h):
        for q in range(3):
            src = t[(i + q - 1) % h]
            row = rows[q]
            for j in range(w):
                row[j + 1] = src[j]
            row[0] = src[w - 1]
            row[w + 1] = src[0]
        r0 = rows[0]
        r1 = rows[1]
        r2 = rows[2]
        for j in range(w):
            a0 = r0[j]
            a1 = r0[j + 1]
            a2 = r0[j + 2]
            a3 = r1[j + 2]
            a4 = r2[j + 2]
            a5 = r2[j + 1]
            a6 = r2[j]
            a7 = r1[j]
            m = three * (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7)
            z[0, j] = (eight * (a0 + a1 + a2) - m) * c
            z[1, j] = (eight * (a1 + a2 + a3) - m) * c
            z[2, j] = (eight * (a2 + a3 + a4) - m) * c
            z[3, j] = (eight * (a3 + a4 + a5) - m) * c
            z[4, j] = (eight * (a4 + a5 + a6) - m) * c
            z[5, j] = (eight * (a5 + a6 + a7) - m) * c
            z[6, j] = (eight * (a6 + a7 + a0) - m) * c
            z[7, j] = (eight * (a7 + a0 + a1) - m) * c
        for k in range(8):
            if meng_compat and k == 4:
                continue  # dropped below: its weights need not be read
            zk = z[k]
            wk = weights[k, i]
            for j in range(w):
                zk[j] = soft(zk[j], wk[j] * th_scale)
        if meng_compat:
            # Meng's bank repeats direction 0 in fifth place (same weights, so the same
            # shrunk response): the adjoint sees direction 0 twice and direction 4 never.
            for j in range(w):
                z[0, j] = z[0, j] + z[0, j]
                z[4, j] = zero
        total = z[8]
        for j in range(w):
            total[j] = three * (z[0, j] + z[1, j] + z[2, j] + z[3, j]
                                + z[4, j] + z[5, j] + z[6, j] + z[7, j])
        for k in range(8):
            bk = b[k]
            u0 = z[k]
            u1 = z[(k + 7) % 8]
            u2 = z[(k + 6) % 8]
            for j in range(w):
                bk[j + 1] = eight * (u0[j] + u1[j] + u2[j]) - total[j]
            bk[0] = bk[w]
            bk[w + 1] = bk[1]
        # v[n] = c * sum_k b[k][n - offset_k]: row i feeds row i + 1 through the
        # offsets below it (k = 4, 5, 6), row i through k = 3, 7, row i - 1 through k = 0, 1, 2.
        b0, b1, b2, b3, b4, b5, b6, b7 = b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        below = out[(i + 1) % h]
        for j in range(w):
            below[j] += c * (b4[j] + b5[j + 1] + b6[j + 2])
        same = out[i]
        for j in range(w):
            same[j] += c * (b3[j] + b7[j + 2])
        above = out[(i - 1) % h]
        for j in range(w):
            above[j] += c * (b0[j + 2] + b1[j + 1] + b2[j])


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


def _spectral_solve_2d(t_hat_spec, v_spec, power, gamma):
    """In place: ``v_spec = (gamma * t_hat_spec + v_spec) / (gamma + power)``.

    Compiled without fastmath and written as NumPy evaluates the expression
    (a complex number over a real one is a product with the real's inverse), so
    the result is bit-identical to the array-module path, in one pass instead
    of four.
    """
    h, w = v_spec.shape
    g = power.dtype.type(gamma)
    one = power.dtype.type(1)
    for i in range(h):
        for j in range(w):
            v_spec[i, j] = solved(t_hat_spec[i, j], v_spec[i, j], g, power[i, j], one)


# atan(x) = x * P(x * x) on 0 <= x <= tan(pi / 8): a degree-6 Chebyshev fit in x * x
# (400 Chebyshev nodes, converted to powers); |error| < 2e-10 in float64, far below one
# float32 ulp (tests/test_monogenic.py measures it against numpy.arctan2).
ATAN_COEFFS = (1.0, -0.3333333232898318, 0.19999885856453937, -0.14281638776929497,
               0.11041054085424218, -0.08459109328437767, 0.04712996707128216)
TAN_PI_8 = math.tan(math.pi / 8)


def _lwpa_2d(e_sum, odd_norm, out):
    """``out = atan2(e_sum, odd_norm)`` for float32 maps with ``odd_norm >= 0``.

    Computed in float64 with a polynomial and branch-free range reduction
    (``atan t = pi/4 + atan((t - 1) / (t + 1))``, ``atan2 = pi/2 - atan`` past
    the diagonal), so the loop vectorises: NumPy's float32 ``arctan2`` calls the
    scalar C library per pixel. Rounded once to float32, it equals the
    correctly rounded value or is one ulp off.
    """
    h, w = out.shape
    c0, c1, c2, c3, c4, c5, c6 = ATAN_COEFFS
    quarter = math.pi / 4
    half = math.pi / 2
    for i in range(h):
        er = e_sum[i]
        nr = odd_norm[i]
        orow = out[i]
        for j in range(w):
            y = np.float64(er[j])
            x = np.float64(nr[j])
            ay = abs(y)
            hi = max(ay, x)
            lo = min(ay, x)
            t = lo / (hi if hi > 0.0 else 1.0)
            big = t > TAN_PI_8
            u = (t - 1.0) / (t + 1.0) if big else t
            z = u * u
            r = u * (c0 + z * (c1 + z * (c2 + z * (c3 + z * (c4 + z * (c5 + z * c6))))))
            r = r + quarter if big else r
            r = half - r if ay > x else r
            orow[j] = np.float32(math.copysign(r, y))


def _minmax_255_2d(x, out):
    """``out = (x - min) / (max - min) * 255`` (0 for a constant image), as NumPy rounds it."""
    h, w = x.shape
    lo = x[0, 0]
    hi = x[0, 0]
    for i in range(h):
        for j in range(w):
            lo = min(lo, x[i, j])
            hi = max(hi, x[i, j])
    span = hi - lo
    scale = x.dtype.type(255)
    zero = x.dtype.type(0)
    for i in range(h):
        for j in range(w):
            out[i, j] = (x[i, j] - lo) / span * scale if span > 0 else zero


@functools.cache
def kernels():
    """Return ``(correlate_bank_2d, shrink_adjoint_2d, phase_sums_2d, spectral_solve_2d,
    lwpa_2d, minmax_255_2d)`` compiled, or None."""
    try:
        import numba
        import numba.extending
    except Exception as exc:  # ImportError, or numba refusing this NumPy
        logger.info("numba unavailable (%s): using the array-module Kirsch path", exc)
        return None
    for helper in (soft, _wrap_pad):  # callable from the kernels, still plain Python
        numba.extending.register_jitable(fastmath=True)(helper)
    numba.extending.register_jitable(solved)  # no fastmath: bit-identical to NumPy
    jit = numba.njit(cache=True, nogil=True, fastmath=True)
    exact = numba.njit(cache=True, nogil=True)
    return (jit(_correlate_bank_2d), jit(_shrink_adjoint_2d), jit(_phase_sums_2d), exact(_spectral_solve_2d),
            jit(_lwpa_2d), exact(_minmax_255_2d))
