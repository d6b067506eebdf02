"""Monogenic signal: per-scale even/odd components and the LwPA, PE, LPE maps."""

from __future__ import annotations

import dataclasses
import math

from ..params import PhaseParams
from ._cpu_kernels import kernels as cpu_kernels
from ._input import prepare_images
from .filters import filter_bank

__all__ = ["MonogenicResult", "monogenic", "monogenic_batch"]


@dataclasses.dataclass(frozen=True)
class MonogenicResult:
    """Monogenic components and the phase maps derived from them.

    Attributes
    ----------
    even, odd_x, odd_y : array, shape (nscale, *images.shape)
        Per-scale band-passed image and its two Riesz components.
    lwpa : array, shape images.shape
        Local weighted mean phase angle ``atan2(E, |O|)`` in [-pi/2, pi/2].
    phase_energy : array
        ``sum_s (|e_s| - |o_s|)`` (with the configured polarity).
    lpe : array
        ``phase_energy * lwpa``.
    amplitude : array
        ``sqrt(E**2 + O1**2 + O2**2)`` of the sums over scales.
    """

    even: object
    odd_x: object
    odd_y: object
    lwpa: object
    phase_energy: object
    lpe: object
    amplitude: object


def _next_fast_len(n: int) -> int:
    """Smallest 2-3-5-smooth integer >= n (fast for every FFT library we use)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _reflect_pad(batch, params: PhaseParams, xp):
    """Mirror-pad by 2 * max wavelength, up to a fast FFT size; return crop slices."""
    h, w = batch.shape[-2:]
    pad = math.ceil(2 * params.wavelengths[-1])
    # numpy's "symmetric" mode cannot pad more than the image repeats; cap at size - 1.
    pads = []
    for n in (h, w):
        before = min(pad, n - 1)
        total = _next_fast_len(n + 2 * before)
        after = total - n - before
        while after > n - 1:  # rare: huge wavelengths on tiny images
            before, after = before + (after - n + 1), n - 1
        pads.append((before, after))
    padded = xp.pad(batch, ((0, 0), *pads), mode="symmetric")
    crop = (slice(None), slice(pads[0][0], pads[0][0] + h), slice(pads[1][0], pads[1][0] + w))
    return padded, crop


def _cpu_path(backend):
    """The CPU's own kernels (Numba), or None for the array-module path that CuPy runs."""
    return cpu_kernels() if backend.name == "numpy" else None


def monogenic_components(batch, params: PhaseParams, backend):
    """Per-scale ``(even, odd_x, odd_y)`` of a ``(N, H, W)`` batch.

    Returns
    -------
    array, shape (N, 3 * nscale, H, W)
        Ordered ``even_0, odd_x_0, odd_y_0, even_1, ...``.
    """
    xp = backend.xp
    crop = None
    if params.border == "reflect":
        batch, crop = _reflect_pad(batch, params, xp)
    shape = batch.shape[-2:]
    bank = filter_bank(shape, params, batch.dtype, backend)
    # Every filter is 0 at DC, so removing the mean changes nothing mathematically;
    # it keeps float32 rounding relative to the signal, not to a large offset, and
    # makes a constant image give exact zeros.
    mean = batch.mean(axis=(-2, -1), keepdims=True, dtype="float64").astype(batch.dtype)
    batch = batch - mean
    spectrum = backend.fft.rfft2(batch)
    if _cpu_path(backend):
        # One plane at a time: a (3 * nscale)-plane inverse transform runs its
        # column passes out of cache (timed both ways: benchmarks/results/roofline-cpu.json).
        comps = xp.empty((batch.shape[0], bank.shape[0], *shape), dtype=batch.dtype)
        for n in range(batch.shape[0]):
            for k in range(bank.shape[0]):
                comps[n, k] = backend.fft.irfft2(spectrum[n] * bank[k], s=shape, overwrite_x=True)
    else:
        comps = backend.fft.irfft2(spectrum[:, None] * bank[None], s=shape)
    if crop is not None:
        comps = comps[(crop[0], slice(None), crop[1], crop[2])]
    return comps.astype(batch.dtype, copy=False)


def phase_maps(comps, params: PhaseParams, backend):
    """LwPA, phase energy, LPE and amplitude from stacked components.

    Parameters
    ----------
    comps : array, shape (N, 3 * nscale, H, W)
    """
    xp = backend.xp
    fused = _cpu_path(backend)
    if fused:
        shape = (comps.shape[0], *comps.shape[2:])
        e_sum, odd_norm, phase_energy = (xp.empty(shape, dtype=comps.dtype) for _ in range(3))
        for n in range(comps.shape[0]):
            fused[2](comps[n], params.polarity, e_sum[n], odd_norm[n], phase_energy[n])
    else:
        even, odd_x, odd_y = comps[:, 0::3], comps[:, 1::3], comps[:, 2::3]
        e_sum, ox_sum, oy_sum = even.sum(axis=1), odd_x.sum(axis=1), odd_y.sum(axis=1)
        odd_norm = xp.sqrt(ox_sum * ox_sum + oy_sum * oy_sum)
        if params.polarity == 0:
            even_term = xp.abs(even)
        else:
            even_term = even if params.polarity == 1 else -even
        phase_energy = (even_term - xp.sqrt(odd_x * odd_x + odd_y * odd_y)).sum(axis=1)
    if fused and comps.dtype == xp.float32:
        lwpa = xp.empty_like(e_sum)
        for n in range(comps.shape[0]):
            fused[4](e_sum[n], odd_norm[n], lwpa[n])
    else:
        lwpa = xp.arctan2(e_sum, odd_norm)
    amplitude = xp.sqrt(e_sum * e_sum + odd_norm * odd_norm)
    return lwpa, phase_energy, phase_energy * lwpa, amplitude


def monogenic_batch(batch, params: PhaseParams, backend):
    """Monogenic result of a validated ``(N, H, W)`` compute-dtype batch (backend arrays)."""
    comps = monogenic_components(batch, params, backend)
    lwpa, pe, lpe, amplitude = phase_maps(comps, params, backend)
    per_scale = [comps[:, k::3].swapaxes(0, 1) for k in range(3)]  # (nscale, N, H, W)
    return MonogenicResult(*per_scale, lwpa, pe, lpe, amplitude)


def monogenic(images, params: PhaseParams | None = None, *, backend=None, dtype="float32"):
    """Monogenic signal of one image or a batch, with its phase maps.

    Parameters
    ----------
    images : array, shape (H, W) or (N, H, W)
        uint8, uint16, float32 or float64 grey images, NumPy or CuPy.
    params : PhaseParams, optional
        Filter bank parameters; defaults to ``PhaseParams()``.
    backend : {"numpy", "cupy", "auto"} or None
        Where to compute; None follows the input array's kind.
    dtype : {"float32", "float64"}
        Compute and output dtype.

    Returns
    -------
    MonogenicResult
        Arrays of the same kind as ``images`` (NumPy in, NumPy out).

    References
    ----------
    .. [1] M. Felsberg and G. Sommer, "The monogenic signal", IEEE Trans.
       Signal Processing 49(12), 2001.
    .. [2] P. Kovesi, "Phase congruency detects corners and edges", DICTA 2003.
    """
    params = PhaseParams() if params is None else params
    prepared = prepare_images(images, dtype, backend)
    result = monogenic_batch(prepared.batch, params, prepared.backend)
    per_scale = {name: prepared.restore(getattr(result, name), batch_axis=1)
                 for name in ("even", "odd_x", "odd_y")}
    maps = {name: prepared.restore(getattr(result, name))
            for name in ("lwpa", "phase_energy", "lpe", "amplitude")}
    return MonogenicResult(**per_scale, **maps)
