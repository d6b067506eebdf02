"""ENH: the three-channel enhanced image [LwPA, LPE, ELEA]."""

from __future__ import annotations

from ..params import PhaseParams
from ._input import prepare_images
from .elea import elea
from .monogenic import monogenic_components, phase_maps
from .scaling import scale_map

__all__ = ["enhance", "enhance_batch", "OUTPUTS"]

OUTPUTS = ("float", "uint8")
# Images per chunk: bounds the (chunk, 3 * nscale, H, W) component stack in memory.
# On the CPU one image at a time keeps the working set in cache (measured fastest).
CHUNK = {"numpy": 1, "cupy": 256}


def enhance_batch(batch, params: PhaseParams, backend):
    """ENH of a validated ``(N, H, W)`` batch, backend arrays in [0, 255].

    Returns
    -------
    array, shape (N, H, W, 3)
        Channels in ``params.channel_order``, compute dtype, unquantised.
    """
    xp = backend.xp
    chunk = CHUNK[backend.name]
    out = xp.empty((*batch.shape, 3), dtype=batch.dtype)
    for start in range(0, batch.shape[0], chunk):
        part = batch[start:start + chunk]
        lwpa, pe, lpe, amplitude = phase_maps(monogenic_components(part, params, backend),
                                              params, backend)
        maps = {"lwpa": scale_map(lwpa, "angle", params, xp), "lpe": scale_map(lpe, "energy", params, xp)}
        maps["elea"] = elea(lpe if params.elea_source == "lpe" else pe, params, backend)
        # A constant image has no phase: all zeros, whatever the scaling (spec 4.8).
        flat = amplitude.max(axis=(-2, -1), keepdims=True) == 0
        for c, name in enumerate(params.channel_order):
            out[start:start + chunk, ..., c] = xp.where(flat, 0, maps[name])
    return out


def enhance(images, params: PhaseParams | None = None, *, backend=None, dtype="float32",
            out: str = "float"):
    """Enhanced image ENH = [LwPA, LPE, ELEA] of one radiograph or a batch.

    With the published scaling (``params.scaling="minmax"``) each channel is
    min-max scaled per image: LwPA and LPE span the full range for non-constant
    input, ELEA peaks at the maximum. A constant image gives all zeros.

    Parameters
    ----------
    images : array, shape (H, W) or (N, H, W)
        uint8, uint16, float32 or float64 grey images, NumPy or CuPy. The
        result does not depend on the intensity scale (affine invariance), so
        16-bit data need no rescaling.
    params : PhaseParams, optional
        Defaults to ``PhaseParams()``, the ``"qi2021"`` preset.
    backend : {"numpy", "cupy", "auto"} or None
        Where to compute; None follows the input array's kind.
    dtype : {"float32", "float64"}
        Compute dtype, and the output dtype for ``out="float"``.
    out : {"float", "uint8"}
        ``"float"``: values in [0, 1]; ``"uint8"``: ``rint(255 * x)``.

    Returns
    -------
    array, shape (*images.shape, 3)
        Same kind of array as ``images``, channels in ``params.channel_order``.

    References
    ----------
    .. [1] X. Qi, L. G. Brown, D. J. Foran, J. Nosher and I. Hacihaliloglu,
       "Chest X-ray image phase features for improved diagnosis of COVID-19
       using convolutional neural network", IJCARS 16, 2021.
    """
    if out not in OUTPUTS:
        raise ValueError(f"out must be one of {list(OUTPUTS)}, got {out!r}")
    params = PhaseParams() if params is None else params
    prepared = prepare_images(images, dtype, backend)
    xp = prepared.backend.xp
    enh = enhance_batch(prepared.batch, params, prepared.backend)
    if out == "uint8":
        enh = xp.clip(xp.rint(enh), 0, 255).astype(xp.uint8)
    else:
        enh = enh / enh.dtype.type(255)
    return prepared.restore(enh)
