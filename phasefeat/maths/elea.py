"""ELEA: enhanced local energy attenuation by boundary-constrained dehazing (BCCR).

The phase map (LPE by default) is treated as a hazy image ``I = J t + A (1 - t)``
and solved for ``J`` with Meng et al.'s boundary constraint and contextual
regularisation. Every function works on ``(N, H, W)`` batches of one backend.

References
----------
.. [1] G. Meng, Y. Wang, J. Duan, S. Xiang and C. Pan, "Efficient image
   dehazing with boundary constraint and contextual regularization", ICCV 2013.
.. [2] I. Hacihaliloglu, "Enhancement of bone shadow region using local phase-
   based ultrasound transmission maps", IJCARS 12, 2017.
"""

from __future__ import annotations

import dataclasses
import math

from ..params import PhaseParams
from . import kirsch
from ._cpu_kernels import kernels as cpu_kernels
from ._gpu_kernels import kernels as gpu_kernels
from .scaling import scale_map

__all__ = ["airlight", "boundary_constraint", "closing", "contextual_weights",
           "regularize_transmission", "invert_attenuation", "elea", "BCCRResult"]

BETA_RATE = 2 * math.sqrt(2)


def _per_image(reduce, x):
    return reduce(x, axis=(-2, -1), keepdims=True)


def airlight(scaled, params: PhaseParams, xp):
    """``rho = round(kappa * top + 1e-10)`` per image, or ``(c0 + 255) / 2``
    where that falls outside ``(c0, c1)``. Shape ``(N, 1, 1)``.

    ``top`` is ``max S`` (255 for any non-constant min-max scaled map); with
    ``scaling="fixed"`` it is 255 itself, so no pixel sets the airlight.
    """
    top = _per_image(xp.max, scaled).astype("float64")
    if params.scaling == "fixed":
        top = xp.where(top > 0, 255.0, 0.0)
    rho = xp.round(params.kappa * top + 1e-10)
    ok = (rho > params.c0) & (rho < params.c1)
    return xp.where(ok, rho, (params.c0 + 255) / 2).astype(scaled.dtype)


def boundary_constraint(scaled, rho, params: PhaseParams, xp):
    """``t_b = min(1, max((rho - S) / (rho - c0), (S - rho) / (c1 - rho)))``."""
    t_b = xp.maximum((rho - scaled) / (rho - params.c0), (scaled - rho) / (params.c1 - rho))
    return xp.minimum(t_b, 1).astype(scaled.dtype, copy=False)


def _running(x, size, reduce, mode, xp, reflected: bool = False):
    # Separable running max/min over a size x size square on the last two axes. The square
    # covers offsets -r .. size - 1 - r (r = size // 2), or their mirror image when reflected:
    # a closing dilates with the reflected square and erodes with the square itself, which
    # only differs for even sizes (scipy.ndimage.grey_closing does the same).
    r = size // 2
    before, after = (size - 1 - r, r) if reflected else (r, size - 1 - r)
    for axis in (-2, -1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (before, after)
        padded = xp.pad(x, pad, mode="edge" if mode == "nearest" else "wrap")
        n = x.shape[axis]
        out = None
        for k in range(size):
            window = padded[(Ellipsis, slice(k, k + n))] if axis == -1 else padded[..., k:k + n, :]
            out = window if out is None else reduce(out, window)
        x = out
    return x


def closing(x, size: int, mode: str, xp):
    """Grey closing (dilation then erosion) with a ``size x size`` square.

    ``mode="nearest"`` ignores pixels outside the image (MATLAB ``imclose``,
    scipy ``mode='nearest'``); ``"wrap"`` is circular. The origin of an even
    square is at ``size // 2``, as scipy.ndimage.
    """
    if size == 1:
        return x
    dilated = _running(x, size, xp.maximum, mode, xp, reflected=True)
    return _running(dilated, size, xp.minimum, mode, xp)


def contextual_weights(scaled, params: PhaseParams, backend):
    """``W_j = exp(-(D_j * (S / 255))**2 / (2 sigma_w))``, shape (8, N, H, W)."""
    xp = backend.xp
    x = scaled / scaled.dtype.type(255)
    fused = _fused(params, backend)
    if fused:
        w = xp.empty((8, *x.shape), dtype=x.dtype)
        for n in range(x.shape[0]):
            fused[0](x[n], 2 * params.sigma_w, w[:, n])  # the exponent, in place
        if params.meng_compat:  # Meng's bank repeats the first mask in fifth place
            xp.exp(w[:4], out=w[:4])
            xp.exp(w[5:], out=w[5:])
            w[4] = w[0]
        else:
            xp.exp(w, out=w)
        return w
    gpu = _gpu(backend, x)
    if gpu:
        w = xp.empty((8, *x.shape), dtype=x.dtype)
        gpu.weights(x, 2 * params.sigma_w, params.meng_compat, w)
        return w
    z = kirsch.correlate_bank(x, params.meng_compat, xp)
    return xp.exp(-(z * z) / x.dtype.type(2 * params.sigma_w))


def _fused(params: PhaseParams, backend):
    return cpu_kernels() if backend.name == "numpy" else None


def _gpu(backend, array):
    """The fused CUDA kernels on the CuPy path where they can take ``array``, or None for its array code."""
    gpu = gpu_kernels() if backend.name == "cupy" else None
    return gpu if gpu and gpu.accepts(array) else None


@dataclasses.dataclass
class BCCRResult:
    """Transmission map and the number of outer iterations actually run."""

    transmission: object
    iterations: int


def regularize_transmission(t_hat, weights, params: PhaseParams, backend) -> BCCRResult:
    """Contextual regularisation of ``t_hat`` by half-quadratic splitting.

    Minimises ``lambda/2 ||t - t_hat||^2 + sum_j ||W_j o (D_j * t)||_1`` with
    ``beta = 1, 2 sqrt 2, 8, ...`` for ``params.bccr_iterations`` steps; each
    step is one shrink of the eight Kirsch responses, their adjoint, and one
    rfft/irfft pair.

    Parameters
    ----------
    t_hat : array, shape (N, H, W)
    weights : array, shape (8, N, H, W)
        From :func:`contextual_weights`.
    """
    xp = backend.xp
    dtype = t_hat.dtype
    shape = t_hat.shape[-2:]
    power = kirsch.bank_power_spectrum(shape, params.meng_compat, dtype, backend)
    t_hat_spec = backend.fft.rfft2(t_hat)
    fused, gpu = _fused(params, backend), _gpu(backend, t_hat)
    thresholds = None if fused or gpu else weights / dtype.type(len(weights))
    t = t_hat
    iterations = 0
    for k in range(params.bccr_iterations):
        beta = BETA_RATE**k
        gamma = dtype.type(params.reg_lambda / beta)
        if fused:
            # weights / 8 / beta as one factor: 1/8 is a power of two, so the product
            # rounds as the two-step form of the array path.
            v = xp.empty_like(t)
            for n in range(t.shape[0]):
                fused[1](t[n], weights[:, n], 1.0 / (len(weights) * beta), params.meng_compat, v[n])
            spec = backend.fft.rfft2(v)
            for n in range(t.shape[0]):
                fused[3](t_hat_spec[n], spec[n], power, gamma)
            t = backend.fft.irfft2(spec, s=shape, overwrite_x=True)
        elif gpu:  # three kernels and two FFTs per iteration
            v = xp.empty_like(t)
            gpu.shrink_adjoint(t, weights, 1.0 / (len(weights) * beta), params.meng_compat, v)
            spec = backend.fft.rfft2(v)
            gpu.spectral_solve(t_hat_spec, spec, power, gamma)
            t = backend.fft.irfft2(spec, s=shape)
        else:
            z = kirsch.correlate_bank(t, params.meng_compat, xp)
            u = kirsch.shrink(z, thresholds * dtype.type(1 / beta), xp)
            v = kirsch.adjoint_bank(u, params.meng_compat, xp)
            spec = (gamma * t_hat_spec + backend.fft.rfft2(v)) / (gamma + power)
            t = backend.fft.irfft2(spec, s=shape)
        # The spectrum is Hermitian, so the real inverse equals Meng's |ifft2(...)|
        # up to rounding of a ~1e-16 imaginary part.
        t = t.astype(dtype, copy=False)
        xp.abs(t, out=t)
        iterations += 1
    return BCCRResult(t, iterations)


def invert_attenuation(scaled, transmission, rho, params: PhaseParams, xp):
    """``ELEA = 255 r / max r`` with ``r = clip(((S - rho) / max(|T|, eps)**delta + rho) / 255, 0, 1)``.

    With ``scaling="fixed"`` the per-image peak is not divided out: ``ELEA = 255 r``.
    """
    dtype = scaled.dtype
    denom = xp.maximum(xp.abs(transmission), dtype.type(params.eps)) ** dtype.type(params.delta)
    r = xp.clip(((scaled - rho) / denom + rho) / dtype.type(255), 0, 1)
    if params.scaling == "fixed":
        return (r * dtype.type(255)).astype(dtype, copy=False)
    peak = _per_image(xp.max, r)
    return xp.where(peak > 0, r * (255 / xp.where(peak > 0, peak, 1)), 0).astype(dtype, copy=False)


def elea(source, params: PhaseParams, backend, *, return_details: bool = False):
    """ELEA map of a ``(N, H, W)`` batch of LPE (or PE) maps, in [0, 255].

    Parameters
    ----------
    source : array, shape (N, H, W)
        The map driving the attenuation estimate (``params.elea_source``),
        scaled to 0..255 as ``params.scaling`` says.
    params : PhaseParams
    backend : phasefeat.backend.Backend
    return_details : bool
        Also return a dict with ``scaled``, ``rho``, ``t_b``, ``t_hat``,
        ``transmission`` and ``iterations`` (for tests and figures).

    Returns
    -------
    array, shape (N, H, W)
        Zero for images whose source is constant.
    """
    xp = backend.xp
    scaled = scale_map(source, "energy", params, xp)
    rho = airlight(scaled, params, xp)
    t_b = boundary_constraint(scaled, rho, params, xp)
    t_hat = closing(t_b, params.closing_size, params.closing_border, xp)
    weights = contextual_weights(scaled, params, backend)
    bccr = regularize_transmission(t_hat, weights, params, backend)
    out = invert_attenuation(scaled, bccr.transmission, rho, params, xp)
    # A constant source has no structure to dehaze: short-circuit to zeros (spec 4.8).
    constant = _per_image(xp.max, scaled) == 0
    out = xp.where(constant, 0, out).astype(out.dtype, copy=False)
    if not return_details:
        return out
    return out, {"scaled": scaled, "rho": rho, "t_b": t_b, "t_hat": t_hat,
                 "transmission": bccr.transmission, "iterations": bccr.iterations}
