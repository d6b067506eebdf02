"""Reading one radiograph as a grey array at full bit depth.

Minimal for now: Pillow formats (PNG, JPEG, BMP, TIFF), format detected from
the content. RGB/RGBA/palette images become grey with luma weights
0.299/0.587/0.114; 16-bit greys stay 16-bit.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["read_grey", "to_grey", "resize", "ImageReadError"]

LUMA = (0.299, 0.587, 0.114)


class ImageReadError(ValueError):
    """A file could not be read as a radiograph; the message says why."""


def to_grey(array: np.ndarray) -> np.ndarray:
    """Grey version of an ``(H, W)`` or ``(H, W, 3|4)`` array (alpha ignored).

    A grey image stored as RGB is returned unchanged (as float32 values).
    """
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3].astype(np.float32)
        return rgb @ np.asarray(LUMA, dtype=np.float32)
    raise ImageReadError(f"unsupported pixel layout with shape {array.shape}")


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a 2-D grey array without losing bit depth.

    Returns
    -------
    ndarray
        uint8 or uint16 for grey files, float32 for colour files.

    Raises
    ------
    ImageReadError
        Missing, unreadable or non-image files, with the reason.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im, dtype=np.uint16)
            elif im.mode == "I":
                return np.asarray(im).astype(np.float32)
            elif im.mode in ("LA", "PA"):
                im = im.convert("L")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            array = np.asarray(im)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image Pillow can read") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: unreadable image ({exc})") from None
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return to_grey(array)


def resize(grey: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Antialiased (Lanczos) resize of a grey image to ``shape = (H, W)``, float32.

    Works in 32-bit float so 16-bit data keep their precision.
    """
    from PIL import Image

    h, w = shape
    image = Image.fromarray(np.asarray(grey, dtype=np.float32), mode="F")
    return np.asarray(image.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32)
