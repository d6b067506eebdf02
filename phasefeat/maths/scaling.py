"""From phase maps to 0..255 channels: the published per-image min-max, or a fixed mapping.

Min-max scaling (Qi et al., the lab's code) lets the extremes of each image set
its grey levels. Those extremes often sit on the border (the circular FFT wraps
the top rows onto the bottom ones) or on burned-in markers, so the grey level
of "zero phase energy" moves from image to image with the image's source.
``scaling="fixed"`` pins it: LwPA maps its whole range ``[-pi/2, pi/2]`` to
0..255, and an energy ``x`` maps to ``127.5 (1 + x / q)`` (clipped), where
``q`` is a high percentile of ``|x|`` measured away from the border.
Every function works on ``(N, H, W)`` batches of one backend.
"""

from __future__ import annotations

import math

import numpy as np

from ..params import PhaseParams
from ._cpu_kernels import kernels as cpu_kernels

__all__ = ["minmax_255", "angle_255", "energy_255", "scale_map"]


def _per_image(reduce, x):
    return reduce(x, axis=(-2, -1), keepdims=True)


def minmax_255(x, xp):
    """``255 * (x - min) / (max - min)`` per image; 0 for a constant image."""
    fused = cpu_kernels() if xp is np else None
    if fused:  # one pass for the extremes, one for the map: the same bits as below
        out = xp.empty_like(x)
        for n in range(x.shape[0]):
            fused[5](x[n], out[n])
        return out
    lo, hi = _per_image(xp.min, x), _per_image(xp.max, x)
    span = hi - lo
    safe = xp.where(span > 0, span, 1)
    # Divide first: (max - lo) / span is exactly 1, so max S is exactly 255 and
    # the airlight round(0.7 * 255 + 1e-10) cannot flip between 178 and 179.
    return xp.where(span > 0, (x - lo) / safe * 255, 0).astype(x.dtype, copy=False)


def angle_255(lwpa, xp):
    """``255 * (lwpa + pi/2) / pi``: the same angle is the same grey in every image."""
    return ((lwpa + lwpa.dtype.type(math.pi / 2)) * lwpa.dtype.type(255 / math.pi)).astype(
        lwpa.dtype, copy=False)


def _interior(x, margin: int):
    h, w = x.shape[-2:]
    if margin <= 0 or h <= 2 * margin or w <= 2 * margin:
        return x  # too small to leave a border out
    return x[..., margin:h - margin, margin:w - margin]


def energy_255(x, percentile: float, margin: int, xp):
    """``clip(127.5 * (1 + x / q), 0, 255)`` per image, zero energy at mid-grey.

    Parameters
    ----------
    x : array, shape (N, H, W)
        A signed energy map (LPE or PE).
    percentile : float
        ``q`` is this percentile of ``|x|`` over the image without a border of
        ``margin`` pixels. A map that is 0 there gives 0 everywhere.
    margin : int
    """
    inner = xp.abs(_interior(x, margin)).reshape(x.shape[0], -1)
    q = xp.percentile(inner.astype("float64"), percentile, axis=1).reshape(-1, 1, 1)
    safe = xp.where(q > 0, q, 1).astype(x.dtype)
    mapped = xp.clip((x / safe + 1) * x.dtype.type(127.5), 0, 255)
    return xp.where(q > 0, mapped, 0).astype(x.dtype, copy=False)


def scale_map(x, kind: str, params: PhaseParams, xp):
    """A phase map as 0..255 following ``params.scaling``.

    Parameters
    ----------
    x : array, shape (N, H, W)
    kind : {"angle", "energy"}
        LwPA is an angle; LPE and PE are energies.
    """
    if params.scaling == "minmax":
        return minmax_255(x, xp)
    if kind == "angle":
        return angle_255(x, xp)
    return energy_255(x, params.scaling_percentile, params.scaling_margin, xp)
