"""Validation and normalisation of the ``images`` argument shared by the public API."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..backend import Backend, get_backend, is_cupy_array

ACCEPTED_DTYPES = ("uint8", "uint16", "float32", "float64")
COMPUTE_DTYPES = ("float32", "float64")
MIN_SIDE = 8


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Images as a ``(N, H, W)`` batch on the compute backend."""

    batch: object
    single: bool
    backend: Backend
    return_cupy: bool

    def restore(self, array, batch_axis: int = 0):
        """Drop the batch axis for single images and return the input's kind."""
        if self.single:
            array = array[(slice(None),) * batch_axis + (0,)]
        if self.return_cupy:
            return self.backend.xp.asarray(array) if self.backend.name == "cupy" \
                else _to_cupy(array)
        return self.backend.to_numpy(array)


def _to_cupy(array):
    import cupy

    return cupy.asarray(array)


def check_dtype(dtype) -> np.dtype:
    """Validate the compute dtype (float32 or float64)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt.name not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dt.name!r}")
    return dt


def prepare_images(images, dtype, backend) -> Prepared:
    """Validate ``images`` and return them as a compute-dtype batch.

    Parameters
    ----------
    images : array, shape (H, W) or (N, H, W)
        uint8, uint16, float32 or float64; NumPy or CuPy.
    dtype : {"float32", "float64"}
        Compute dtype.
    backend : {"numpy", "cupy", "auto"} or None
        None follows the input (CuPy array: CuPy, otherwise NumPy).

    Raises
    ------
    ValueError
        For a wrong type, dtype, dimensionality, size or non-finite values.
    """
    compute = check_dtype(dtype)
    is_cupy = is_cupy_array(images)
    if not (is_cupy or isinstance(images, np.ndarray)):
        raise ValueError(
            f"images must be a NumPy or CuPy array, got {type(images).__name__}; "
            "wrap lists with numpy.asarray first"
        )
    if images.dtype.kind == "c":
        raise ValueError("images must be real; got a complex array")
    if images.dtype.name not in ACCEPTED_DTYPES:
        raise ValueError(
            f"images dtype must be one of {', '.join(ACCEPTED_DTYPES)}, got {images.dtype.name}"
        )
    if images.ndim == 3 and images.shape[-1] in (3, 4) and min(images.shape[:2]) > images.shape[-1]:
        raise ValueError(
            f"images of shape {images.shape} look like one colour image (H, W, C); convert it to "
            "grey first (luma weights), or pass a batch shaped (N, H, W)"
        )
    if images.ndim not in (2, 3):
        raise ValueError(
            f"images must be one grey image (H, W) or a batch (N, H, W), got {images.ndim}-D "
            f"shape {images.shape}"
        )
    if images.size == 0:
        raise ValueError(f"images is empty (shape {images.shape})")
    h, w = images.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {h}x{w}")
    if images.dtype.kind == "f":
        if is_cupy:
            import cupy as xp
        else:
            xp = np
        if not bool(xp.isfinite(images).all()):
            raise ValueError("images contain NaN or infinite values")
    be = get_backend(backend, like=images)
    batch = be.asarray(images[None] if images.ndim == 2 else images, dtype=compute)
    return Prepared(batch, images.ndim == 2, be, is_cupy)
