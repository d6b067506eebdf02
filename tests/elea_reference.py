"""A deliberately literal reference of the ELEA steps, written from Meng et al. and the spec.

Nothing here is shared with ``phasefeat``: the Kirsch masks are written out, every
correlation is a direct sum over the 3x3 neighbourhood, every mask gets its own
full complex FFT, the closing is SciPy's, and everything is float64. It is slow
and plain on purpose; ``tests/test_elea_reference.py`` holds the product to it.

References
----------
.. [1] G. Meng, Y. Wang, J. Duan, S. Xiang, C. Pan, "Efficient image dehazing with
   boundary constraint and contextual regularization", ICCV 2013.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

# The eight Kirsch compass masks, north first, each the previous one turned 45 degrees clockwise.
KIRSCH = np.array([
    [[5, 5, 5], [-3, 0, -3], [-3, -3, -3]],
    [[-3, 5, 5], [-3, 0, 5], [-3, -3, -3]],
    [[-3, -3, 5], [-3, 0, 5], [-3, -3, 5]],
    [[-3, -3, -3], [-3, 0, 5], [-3, 5, 5]],
    [[-3, -3, -3], [-3, 0, -3], [5, 5, 5]],
    [[-3, -3, -3], [5, 0, -3], [5, 5, -3]],
    [[5, -3, -3], [5, 0, -3], [5, -3, -3]],
    [[5, 5, -3], [5, 0, -3], [-3, -3, -3]],
], dtype=np.float64)


def masks(meng_compat: bool) -> list[np.ndarray]:
    """D_j = K_j / ||K_j||_F; Meng's released code uses the north mask again in fifth place."""
    chosen = [KIRSCH[0], KIRSCH[1], KIRSCH[2], KIRSCH[3], KIRSCH[0] if meng_compat else KIRSCH[4],
              KIRSCH[5], KIRSCH[6], KIRSCH[7]]
    return [k / np.sqrt((k * k).sum()) for k in chosen]


def correlate(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(D * x)[n] = sum over the 3x3 offsets of D[1 + dy, 1 + dx] x[n + (dy, dx)], circular."""
    out = np.zeros_like(x)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out += d[1 + dy, 1 + dx] * np.roll(x, (-dy, -dx), axis=(0, 1))
    return out


def transfer(d: np.ndarray, shape) -> np.ndarray:
    """Full-grid DFT of the correlation x -> D * x (its multiplier in the frequency domain)."""
    h, w = shape
    kernel = np.zeros(shape)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            kernel[(-dy) % h, (-dx) % w] += d[1 + dy, 1 + dx]
    return np.fft.fft2(kernel)


def elea_reference(source: np.ndarray, *, kappa=0.7, c0=30.0, c1=300.0, closing_size=3,
                   reg_lambda=2.0, sigma_w=0.5, iterations=6, delta=0.85, eps=1e-4,
                   meng_compat=False) -> dict:
    """Every step of ELEA for one 2-D map, float64; returns the intermediates and the result."""
    x = np.asarray(source, dtype=np.float64)
    lo, hi = x.min(), x.max()
    if hi == lo:
        return {"elea": np.zeros_like(x)}
    s = 255 * (x - lo) / (hi - lo)
    rho = round(kappa * s.max() + 1e-10)
    if not c0 < rho < c1:
        rho = (c0 + 255) / 2
    t_b = np.minimum(1.0, np.maximum((rho - s) / (rho - c0), (s - rho) / (c1 - rho)))
    t_hat = ndimage.grey_closing(t_b, size=(closing_size, closing_size), mode="nearest")
    ds = masks(meng_compat)
    weights = [np.exp(-correlate(s / 255, d) ** 2 / (2 * sigma_w)) for d in ds]
    transfers = [transfer(d, x.shape) for d in ds]
    denominator_masks = sum(np.abs(k) ** 2 for k in transfers)
    t_hat_spectrum = np.fft.fft2(t_hat)
    t = t_hat.copy()
    after = {}
    for k in range(iterations):
        beta = (2 * math.sqrt(2)) ** k
        gamma = reg_lambda / beta
        numerator = gamma * t_hat_spectrum
        for d, w, kj in zip(ds, weights, transfers, strict=True):
            z = correlate(t, d)
            u = np.sign(z) * np.maximum(np.abs(z) - w / (beta * len(ds)), 0)
            numerator = numerator + np.conj(kj) * np.fft.fft2(u)
        t = np.abs(np.fft.ifft2(numerator / (gamma + denominator_masks)))
        after[k + 1] = t
    raw = (s - rho) / np.maximum(np.abs(t), eps) ** delta + rho
    r = np.clip(raw / 255, 0, 1)
    elea = 255 * r / r.max() if r.max() > 0 else np.zeros_like(r)
    return {"scaled": s, "rho": rho, "t_b": t_b, "t_hat": t_hat, "after": after, "elea": elea}
