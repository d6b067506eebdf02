"""Frequency grids and the radial band-pass and Riesz filters of the monogenic bank.

All filters live on the half spectrum of a real-input FFT (``rfft2``), shaped
``(H, W // 2 + 1)``. They are built in float64 and cast once to the compute
dtype; :func:`filter_bank` caches them per (shape, parameters, dtype, device).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..params import PhaseParams
from .assd import assd, assd_bandwidth_octaves, assd_exponent

__all__ = [
    "frequency_grid",
    "log_gabor",
    "assd",
    "assd_bandwidth_octaves",
    "assd_exponent",
    "butterworth_lowpass",
    "riesz",
    "bandpass_bank",
    "filter_bank",
    "half_amplitude_bandwidth",
]


def _axis(n: int, kovesi_odd_grid: bool, half: bool) -> np.ndarray:
    u = np.fft.rfftfreq(n) if half else np.fft.fftfreq(n)
    if kovesi_odd_grid and n % 2 == 1:
        # Kovesi's filtergrid divides by N - 1 for odd N (spec section 2.2).
        u = u * n / (n - 1)
    return u


def frequency_grid(shape: tuple[int, int], kovesi_odd_grid: bool = False, half: bool = True):
    """Return ``(ux, uy, rho)`` in cycles/pixel on the (half) DFT grid.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(H, W)``.
    kovesi_odd_grid : bool
        Scale odd axes by ``N / (N - 1)`` as Kovesi's MATLAB ``filtergrid``.
    half : bool
        If True the last axis is the ``rfft`` half axis (``W // 2 + 1``).

    Returns
    -------
    ux, uy, rho : ndarray of float64
        Column frequency, row frequency and radius, broadcast to the grid
        shape. ``rho[0, 0]`` is 0 (the DC term).
    """
    h, w = shape
    uy = _axis(h, kovesi_odd_grid, half=False)[:, None]
    ux = _axis(w, kovesi_odd_grid, half=half)[None, :]
    ux, uy = np.broadcast_arrays(ux, uy)
    return ux, uy, np.hypot(ux, uy)


def log_gabor(rho: np.ndarray, wavelength: float, sigma_onf: float) -> np.ndarray:
    """Kovesi's log-Gabor radial filter, peak 1 at ``1 / wavelength``, 0 at DC.

    References
    ----------
    .. [1] D. J. Field, "Relations between the statistics of natural images and
       the response properties of cortical cells", JOSA A 4(12), 1987.
    """
    f0 = 1.0 / wavelength
    safe = np.where(rho == 0, 1.0, rho)
    g = np.exp(-np.log(safe / f0) ** 2 / (2 * math.log(sigma_onf) ** 2))
    return np.where(rho == 0, 0.0, g)


def butterworth_lowpass(rho: np.ndarray, cutoff: float, order: int) -> np.ndarray:
    """Kovesi's ``lowpassfilter``: ``1 / (1 + (rho / cutoff) ** (2 * order))``."""
    return 1.0 / (1.0 + (rho / cutoff) ** (2 * order))


def riesz(shape: tuple[int, int], kovesi_odd_grid: bool = False):
    """Half-spectrum Riesz multipliers ``(rx, ry)`` with ``R = i * (rx, ry)``.

    ``rx = ux / rho``, ``ry = uy / rho`` (Kovesi's sign), 0 at DC. For even
    sizes ``rx`` is zeroed on the Nyquist column and ``ry`` on the Nyquist row,
    where ``i * u / rho`` is not Hermitian; this equals taking the real part of
    separate complex inverse FFTs (spec section 2.3).
    """
    h, w = shape
    ux, uy, rho = frequency_grid(shape, kovesi_odd_grid)
    safe = np.where(rho == 0, 1.0, rho)
    rx = np.where(rho == 0, 0.0, ux / safe)
    ry = np.where(rho == 0, 0.0, uy / safe)
    if w % 2 == 0:
        rx[:, -1] = 0.0
    if h % 2 == 0:
        ry[h // 2, :] = 0.0
    return rx, ry


def bandpass_bank(shape: tuple[int, int], params: PhaseParams, half: bool = True) -> np.ndarray:
    """Band-pass filters ``B_s = G_s * L`` of every scale, float64.

    Returns
    -------
    ndarray, shape (nscale, H, W // 2 + 1) (or (nscale, H, W) if not ``half``)
    """
    h = shape[0]
    _, _, rho = frequency_grid(shape, params.kovesi_odd_grid, half=half)
    # Row H - u holds the same radii as row u (the same |frequency|, to the bit), so
    # the filters are computed on rows 0 .. H // 2 and mirrored: half the
    # transcendental work for every shape a conversion meets.
    rho = rho[:h // 2 + 1]
    lowpass = 1.0 if params.lowpass is None else butterworth_lowpass(rho, *params.lowpass)
    bank = []
    for wavelength in params.wavelengths:
        if params.filter_family == "log_gabor":
            g = log_gabor(rho, wavelength, params.sigma_onf)
        else:
            a = params.assd_exponent or assd_exponent(params.assd_alpha, params.assd_bandwidth)
            g = assd(rho, wavelength, params.assd_alpha, a)
        top = g * lowpass
        bank.append(np.concatenate([top, top[1:(h + 1) // 2][::-1]]))
    return np.stack(bank)


def half_amplitude_bandwidth(filter_1d: np.ndarray, freqs: np.ndarray) -> float:
    """Measured half-amplitude bandwidth in octaves of a sampled radial filter.

    ``filter_1d`` is sampled on increasing ``freqs`` and has a single peak;
    the half-amplitude crossings are located by linear interpolation.
    """
    peak = int(np.argmax(filter_1d))
    half = filter_1d[peak] / 2
    lo = np.flatnonzero(filter_1d[:peak] < half)[-1]
    hi = peak + np.flatnonzero(filter_1d[peak:] < half)[0]
    f_lo = np.interp(half, filter_1d[lo:lo + 2], freqs[lo:lo + 2])
    f_hi = np.interp(half, filter_1d[hi - 1:hi + 1][::-1], freqs[hi - 1:hi + 1][::-1])
    return math.log2(f_hi / f_lo)


@functools.lru_cache(maxsize=32)
def _filter_bank_cached(shape, params, dtype_name, backend_name, device_id, xp):
    real = np.dtype(dtype_name)
    bank = bandpass_bank(shape, params)
    rx, ry = riesz(shape, params.kovesi_odd_grid)
    # Stacked as [even_0, odd_x_0, odd_y_0, even_1, ...] so one batched inverse
    # FFT yields every per-scale component.
    # Written part by part in the compute type: the even filters are real, the odd
    # ones i * B * r purely imaginary (float64 products, rounded once, as a cast of
    # the complex128 values would round them).
    stacked = np.zeros((3 * params.nscale, *bank.shape[1:]), dtype=np.result_type(real, np.complex64))
    stacked.real[0::3] = bank
    stacked.imag[1::3] = bank * rx
    stacked.imag[2::3] = bank * ry
    out = xp.asarray(stacked)
    if backend_name == "numpy":
        out.flags.writeable = False  # shared by every caller through the cache
    return out


def filter_bank(shape, params: PhaseParams, dtype, backend):
    """Monogenic filter bank for one shape, cached and read-only.

    Parameters
    ----------
    shape : (int, int)
    params : PhaseParams
    dtype : dtype-like
        Real compute dtype (float32 or float64); the bank is its complex type.
    backend : phasefeat.backend.Backend

    Returns
    -------
    array, shape (3 * nscale, H, W // 2 + 1)
        Complex filters ordered ``even, odd_x, odd_y`` for each scale.
    """
    return _filter_bank_cached(tuple(int(s) for s in shape), params, np.dtype(dtype).name,
                               backend.name, backend.device_id, backend.xp)
