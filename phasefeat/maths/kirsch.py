"""Kirsch compass filter bank of the contextual regularisation, with circular borders.

Each Kirsch mask ``K_j`` is 3x3 with centre 0, value 5 on three consecutive
border cells and -3 on the other five. Writing ``P_j`` for those three cells,
``K_j = 8 * 1[P_j] - 3 * 1[all eight]``, so all eight responses come from the
eight neighbour images of ``x`` with a handful of additions, and the adjoint
(the convolution that BCCR needs) of the whole bank is again eight shifts.
The masks are normalised, ``D_j = K_j / ||K_j||_F = K_j / sqrt(120)``.

This module is the reference implementation written against an array module
(NumPy or CuPy). :mod:`phasefeat.maths._cpu_kernels` fuses the same arithmetic with
Numba for the CPU.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["OFFSETS", "kirsch_masks", "mask_index", "correlate_bank", "adjoint_bank",
           "shrink", "power_spectrum", "bank_power_spectrum"]

#: Neighbour offsets ``(dy, dx)`` clockwise from the top-left corner.
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
NORM = 1.0 / math.sqrt(120.0)  # ||K_j||_F = sqrt(3 * 25 + 5 * 9)


def mask_index(meng_compat: bool) -> tuple[int, ...]:
    """Which Kirsch direction each of the eight bank entries uses.

    Meng's released code repeats the first (north) mask in fifth place, so the
    south mask is missing; ``meng_compat=True`` reproduces that.
    """
    return (0, 1, 2, 3, 0, 5, 6, 7) if meng_compat else tuple(range(8))


def kirsch_masks(meng_compat: bool = False) -> np.ndarray:
    """The eight normalised masks ``D_j`` as a ``(8, 3, 3)`` float64 array.

    ``D[j][1 + dy, 1 + dx]`` weights the neighbour at offset ``(dy, dx)``
    under correlation; mask 0 is the north mask ``[[5, 5, 5], [-3, 0, -3],
    [-3, -3, -3]] / sqrt(120)`` and each next one is rotated 45 degrees
    clockwise.
    """
    masks = np.zeros((8, 3, 3))
    for j, m in enumerate(mask_index(meng_compat)):
        for k, (dy, dx) in enumerate(OFFSETS):
            masks[j, 1 + dy, 1 + dx] = 5.0 if (k - m) % 8 < 3 else -3.0
    return masks * NORM


def _shifted(x, offset, xp, sign):
    # Value at n + sign * offset, circular, on the last two axes.
    dy, dx = offset
    return xp.roll(x, (-sign * dy, -sign * dx), axis=(-2, -1))


def correlate_bank(x, meng_compat: bool, xp):
    """All eight responses ``D_j * x`` (correlation, circular borders).

    Parameters
    ----------
    x : array, shape (N, H, W)

    Returns
    -------
    array, shape (8, N, H, W)
    """
    neighbours = [_shifted(x, o, xp, +1) for o in OFFSETS]
    total = sum(neighbours[1:], neighbours[0])
    out = xp.empty((8, *x.shape), dtype=x.dtype)
    for j, m in enumerate(mask_index(meng_compat)):
        three = neighbours[m] + neighbours[(m + 1) % 8] + neighbours[(m + 2) % 8]
        out[j] = (8 * three - 3 * total) * x.dtype.type(NORM)
    return out


def adjoint_bank(u, meng_compat: bool, xp):
    """Adjoint of :func:`correlate_bank`: ``sum_j D_j (convolved with) u_j``.

    Parameters
    ----------
    u : array, shape (8, N, H, W)

    Returns
    -------
    array, shape (N, H, W)
    """
    total = u.sum(axis=0)
    index = mask_index(meng_compat)
    out = None
    for k, offset in enumerate(OFFSETS):
        # Entries whose three "5" cells include offset k.
        covering = [j for j, m in enumerate(index) if (k - m) % 8 < 3]
        plane = 8 * sum(u[j] for j in covering) - 3 * total
        term = _shifted(plane, offset, xp, -1)
        out = term if out is None else out + term
    return out * u.dtype.type(NORM)


def shrink(z, threshold, xp):
    """Soft thresholding ``sign(z) * max(|z| - threshold, 0)``."""
    return xp.sign(z) * xp.maximum(xp.abs(z) - threshold, 0)


def power_spectrum(shape: tuple[int, int], meng_compat: bool) -> np.ndarray:
    """``sum_j |DFT(D_j)|^2`` on the rfft half grid, float64, in closed form.

    With ``G = M^T M`` the Gram matrix of the masks' nine cells, the sum is
    ``sum_delta C[delta] cos(2 pi (u dy / H + v dx / W))`` over the 25 cell
    differences ``delta`` (``C[delta]`` adds ``G`` along them; ``C`` is even, so
    the sines cancel). Splitting the cosine of a sum makes it two small matrix
    products, instead of eight full-size FFTs per shape (every native size a
    conversion meets builds one).
    """
    h, w = shape
    # On the integer masks (5 and -3), so C is exact and the DC term exactly 0 (each mask sums to 0).
    masks = np.rint(kirsch_masks(meng_compat) / NORM).reshape(8, 9)
    gram = masks.T @ masks
    coeff = np.zeros((5, 5))
    cells = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for a, (ay, ax) in enumerate(cells):
        for b, (by, bx) in enumerate(cells):
            coeff[2 + ay - by, 2 + ax - bx] += gram[a, b]
    delta = np.arange(-2, 3)[:, None]
    angle_y = 2 * np.pi * delta * np.arange(h)[None, :] / h
    angle_x = 2 * np.pi * delta * np.arange(w // 2 + 1)[None, :] / w
    total = np.cos(angle_y).T @ coeff @ np.cos(angle_x) - np.sin(angle_y).T @ coeff @ np.sin(angle_x)
    return total * (NORM * NORM)


@functools.lru_cache(maxsize=32)
def _power_spectrum_cached(shape, meng_compat, dtype_name, backend_name, device_id, xp):
    out = xp.asarray(power_spectrum(shape, meng_compat).astype(dtype_name))
    if backend_name == "numpy":
        out.flags.writeable = False
    return out


def bank_power_spectrum(shape, meng_compat: bool, dtype, backend):
    """``sum_j |DFT(D_j)|^2`` on the rfft half grid, cached per shape."""
    return _power_spectrum_cached(tuple(int(s) for s in shape), bool(meng_compat),
                                  np.dtype(dtype).name, backend.name, backend.device_id,
                                  backend.xp)
