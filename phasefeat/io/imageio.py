"""Reading one radiograph as a grey array at full bit depth, and fitting it to a working size.

The format is detected from the file's content, not its extension. PNG, JPEG,
BMP, TIFF, GIF and WebP go through Pillow; DICOM through pydicom (the ``dicom`` extra),
with the modality LUT, then the VOI LUT or window, then MONOCHROME1 inversion.
Colour images become grey with luma weights 0.299/0.587/0.114; 16-bit greys
keep 16 bits. Every failure is an :class:`ImageReadError` with a one-line reason.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings

import numpy as np

__all__ = ["ImageReadError", "ImageData", "read_image", "read_grey", "to_grey", "resize", "fit",
           "square", "sniff_format", "FITS", "DEFAULT_MAX_PIXELS"]

LUMA = (0.299, 0.587, 0.114)
FITS = ("stretch", "pad", "crop")
#: Larger images are refused as possible decompression bombs (a 3400 x 3400 CXR is 11.6 M).
DEFAULT_MAX_PIXELS = 100_000_000


class ImageReadError(ValueError):
    """A file could not be read as a radiograph; the message says why."""


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A decoded radiograph.

    Attributes
    ----------
    pixels : ndarray, shape (H, W), float32
        Grey values scaled to [0, 1] by the file's nominal range (255 for 8-bit,
        65535 for 16-bit, the output range of the VOI transform for DICOM).
    width, height : int
        Original size.
    mode : str
        Original pixel mode (Pillow mode, or ``"DICOM MONOCHROME2 16-bit"``...).
    format : str
        Detected format: ``"PNG"``, ``"JPEG"``, ``"BMP"``, ``"TIFF"`` or ``"DICOM"``.
    bits : int
        8 or 16: the precision worth keeping when the image is stored.
    """

    pixels: np.ndarray
    width: int
    height: int
    mode: str
    format: str
    bits: int


def sniff_format(head: bytes) -> str | None:
    """Image format from the first 132 bytes of a file, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    return None


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


def pixel_limit_error(width: int, height: int, max_pixels: int) -> ImageReadError:
    return ImageReadError(f"image exceeds the pixel limit ({width}x{height}: {width * height:,} > "
                          f"{max_pixels:,}; raise --max-pixels if the image is genuine)")


def _read_pillow(path, fmt: str, max_pixels: int) -> ImageData:
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        # Our own pixel limit, checked before decoding, replaces Pillow's bomb check, which
        # would otherwise refuse images above its own limit whatever --max-pixels says.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        with im:
            width, height = im.size
            if width * height > max_pixels:
                raise pixel_limit_error(width, height, max_pixels)
            if getattr(im, "n_frames", 1) > 1:
                raise ImageReadError(f"more than one frame ({im.n_frames}: an animation or a stack; "
                                     "a radiograph has one)")
            mode = im.mode
            im.load()
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("LA", "PA"):
                im = im.convert("LA")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif mode not in ("1", "L", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "F"):
                raise ImageReadError(f"unsupported pixel mode {mode!r}")
            array = np.asarray(im)
    if array.ndim == 3 and array.shape[-1] in (2, 4):  # LA or RGBA: the alpha is not image content
        transparent = float((array[..., -1] < 255).mean())
        array = array[..., :-1] if array.shape[-1] == 4 else array[..., 0]
        if transparent > 0:
            mode = f"{mode} (alpha dropped: {100 * transparent:.1f} % of pixels not opaque)"
    if mode == "1":
        return ImageData(array.astype(np.float32), width, height, mode, fmt, 8)
    if array.dtype == np.uint16 or mode.startswith("I;16"):
        return ImageData(array.astype(np.float32) / 65535, width, height, mode, fmt, 16)
    if mode in ("I", "F"):  # 32-bit integer or float TIFFs: scale by the actual range
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise ImageReadError(f"NaN or infinite pixel values ({int((~np.isfinite(values)).sum())} pixels)")
        return ImageData(_unit_range(values), width, height, mode, fmt, 16)
    return ImageData(to_grey(array).astype(np.float32) / 255, width, height, mode, fmt, 8)


def _unit_range(array: np.ndarray) -> np.ndarray:
    lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.float32)
    return ((array - lo) / (hi - lo)).astype(np.float32)


def _read_dicom(path, max_pixels: int) -> ImageData:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ImageReadError("DICOM file, but pydicom is not installed; install the dicom extra: "
                             "pip install 'phasefeat[dicom]'") from None
    import logging

    log = logging.getLogger("pydicom")
    level, log.level = log.level, logging.CRITICAL  # pydicom logs its own tracebacks otherwise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _decode_dicom(pydicom, apply_modality_lut, apply_voi_lut, path, max_pixels)
    except ImageReadError:
        raise
    except Exception as exc:  # pydicom raises many types for broken, odd or compressed data
        raise ImageReadError(f"unreadable DICOM ({type(exc).__name__}: {exc})") from None
    finally:
        log.level = level


def _decode_dicom(pydicom, apply_modality_lut, apply_voi_lut, path, max_pixels: int) -> ImageData:
    ds = pydicom.dcmread(path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows * cols > max_pixels:
        raise pixel_limit_error(cols, rows, max_pixels)
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise ImageReadError("multi-frame DICOM is not supported")
    pixels = ds.pixel_array
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    bits = int(getattr(ds, "BitsStored", 8) or 8)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        window = getattr(ds, "WindowWidth", None)
        widths = window if isinstance(window, pydicom.multival.MultiValue) else [window]
        if window is not None and any(float(w) <= 0 for w in widths):
            raise ImageReadError(f"DICOM window width {window} is not positive")
        values = apply_modality_lut(pixels, ds)
        values = apply_voi_lut(values, ds).astype(np.float64)
        inverse = getattr(ds, "PresentationLUTShape", "") == "INVERSE"
        if (photometric == "MONOCHROME1") != inverse:
            values = values.max() + values.min() - values  # bone bright
    elif pixels.ndim == 3 and pixels.shape[-1] == 3:
        values = to_grey(pixels).astype(np.float64)
    else:
        raise ImageReadError(f"unsupported DICOM photometric interpretation {photometric!r}")
    if not np.isfinite(values).all():
        raise ImageReadError("DICOM pixel values are not finite after the modality and VOI transforms")
    mode = f"DICOM {photometric} {bits}-bit"
    return ImageData(_unit_range(values), cols, rows, mode, "DICOM", 16 if bits > 8 else 8)


def read_image(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read an image of any supported format as grey in [0, 1].

    Parameters
    ----------
    source : path-like or bytes
        A file path, or the file's bytes (so a caller can hash and decode one read).
    max_pixels : int
        Refuse larger images before decoding them.

    Raises
    ------
    ImageReadError
        Missing, empty, truncated, non-image, too large or unsupported files.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise ImageReadError("no such file") from None
        except OSError as exc:
            raise ImageReadError(f"cannot open ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError("empty file (0 bytes)")
    fmt = sniff_format(data[:132])
    if fmt is None:
        raise ImageReadError("not an image (content is not PNG, JPEG, BMP, TIFF, GIF, WebP or DICOM)")
    stream = io.BytesIO(data)
    if fmt == "DICOM":
        return _read_dicom(stream, max_pixels)
    try:
        return _read_pillow(stream, fmt, max_pixels)
    except ImageReadError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise ImageReadError(f"truncated or corrupt {fmt} ({type(exc).__name__}: {exc})") from None


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a 2-D grey array without losing bit depth.

    Returns
    -------
    ndarray
        uint8 or uint16 for grey files, float32 for colour, DICOM or float files.

    Raises
    ------
    ImageReadError
        With the reason, prefixed by the path.
    """
    try:
        data = read_image(path)
    except ImageReadError as exc:
        raise ImageReadError(f"{path}: {exc}") from None
    if data.format != "DICOM" and data.mode in ("L", "1"):
        return np.rint(data.pixels * 255).astype(np.uint8)
    if data.mode.startswith("I;16"):
        return np.rint(data.pixels * 65535).astype(np.uint16)
    return data.pixels


def resize(grey: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Antialiased (Lanczos) resize of a grey image to ``shape = (H, W)``, float32.

    Works in 32-bit float so 16-bit data keep their precision.
    """
    from PIL import Image

    h, w = shape
    if grey.shape == (h, w):
        return np.asarray(grey, dtype=np.float32)
    image = Image.fromarray(np.asarray(grey, dtype=np.float32), mode="F")
    return np.asarray(image.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32)


def fit(grey: np.ndarray, size: int, how: str = "stretch") -> np.ndarray:
    """Bring a grey image to ``size x size``.

    Parameters
    ----------
    how : {"stretch", "pad", "crop"}
        ``stretch`` ignores the aspect ratio (as the study); ``pad`` scales the
        longer side to ``size`` and centres the image on black; ``crop`` scales
        the shorter side to ``size`` and keeps the centre.
    """
    if how not in FITS:
        raise ValueError(f"fit must be one of {list(FITS)}, got {how!r}")
    h, w = grey.shape
    if how == "stretch":
        return resize(grey, (size, size))
    scale = (min if how == "pad" else max)(size / h, size / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = resize(grey, (nh, nw))
    out = np.zeros((size, size), dtype=np.float32)
    if how == "pad":
        top, left = (size - nh) // 2, (size - nw) // 2
        out[top:top + nh, left:left + nw] = scaled
        return out
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(scaled[top:top + size, left:left + size])


def square(grey: np.ndarray, how: str = "stretch") -> np.ndarray:
    """The geometry of :func:`fit` at the image's own resolution.

    ``pad`` centres the image on a black square of its longer side, ``crop``
    keeps the central square of its shorter side, and ``stretch`` leaves the
    image as it is (its stretch happens when it is resized). Resizing the result
    to ``size x size`` gives the same framing as ``fit(grey, size, how)``.
    """
    if how not in FITS:
        raise ValueError(f"fit must be one of {list(FITS)}, got {how!r}")
    h, w = grey.shape
    if how == "stretch" or h == w:
        return np.asarray(grey, dtype=np.float32)
    side = max(h, w) if how == "pad" else min(h, w)
    if how == "pad":
        out = np.zeros((side, side), dtype=np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        out[top:top + h, left:left + w] = grey
        return out
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(grey[top:top + side, left:left + side], dtype=np.float32)
