"""One piece of a conversion: decode, fit and enhance a fixed list of files.

A piece is the unit of work that a worker process (or a Dask task) finishes and
writes atomically; :mod:`phasefeat.io.convert` cuts the input into pieces and
assembles the store from them. On the CPU a worker computes the features too;
with a GPU it only decodes, and :func:`finish_piece` computes the features in
batches where the GPU is.

The features are computed on a *feature image*: by default the stored
radiograph itself, or (``features_at``) the image at its native resolution or
at another working size, whose maps are then resized to the store size with the
same filter as the radiograph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import stat
from pathlib import Path

import numpy as np

from ..params import PhaseParams
from .imageio import DEFAULT_MAX_PIXELS, FITS, ImageReadError, fit, read_image, resize, square

__all__ = ["ConvertOptions", "CXR_DTYPES", "ENH_DTYPES", "DEFAULT_MAX_BYTES", "feature_image",
           "enhance_to_store", "process_piece", "finish_piece", "one_line", "read_regular_file",
           "conversion_memory", "report_progress_to"]

CXR_DTYPES = ("uint8", "uint16")
ENH_DTYPES = ("uint8", "float16", "float32")
#: The working size of the features cannot be smaller than the store's smallest size, and an
#: image smaller than this on either side has too little to filter.
MIN_SIZE = 8
#: Files larger than this are refused before they are read (a 3400 x 3400 16-bit DICOM is 23 MB).
DEFAULT_MAX_BYTES = 256 * 2**20
#: The largest stored or working size: a 16384 px square of float32 maps already needs gigabytes.
MAX_SIZE = 16384


def one_line(text: str) -> str:
    """A failure reason as one deterministic line: no newlines, no memory addresses."""
    text = re.sub(r"\bat 0x[0-9a-fA-F]+", "", str(text))
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "0x...", text)
    return " ".join(text.split())


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file no larger than ``max_bytes``.

    Raises
    ------
    ImageReadError
        For anything else (a FIFO, socket or device would block or never end), or a
        file too large, checked before reading.
    """
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ImageReadError("not a regular file")
            if st.st_size > max_bytes:
                raise ImageReadError(f"file exceeds the size limit ({st.st_size:,} > {max_bytes:,} bytes; "
                                     "raise --max-bytes if it is genuine)")
            return handle.read()
    except OSError as exc:
        raise ImageReadError(f"cannot read file ({exc.strerror or exc})") from None


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """What determines the stored values (and must match to resume).

    Attributes
    ----------
    size : int
        Side of the stored square images.
    fit : {"stretch", "pad", "crop"}
        How an image reaches the square (see :func:`phasefeat.io.imageio.fit`).
    features_at : "native", int or None
        Where ENH is computed: ``"native"`` (default) at the image's own
        resolution after the ``fit`` geometry, an int working size, or
        ``None`` (the same as ``size``) on the stored ``size x size`` image.
        Maps computed elsewhere are resized to ``size`` with the radiograph's
        (Lanczos) filter. ``docs/algorithm.md`` shows why native is the default.
    """

    size: int = 299
    fit: str = "stretch"
    cxr_dtype: str = "uint8"
    enh_dtype: str = "uint8"
    max_pixels: int = DEFAULT_MAX_PIXELS
    piece_size: int | None = None
    features_at: int | str | None = "native"
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) \
                or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {self.size!r}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {list(FITS)}, got {self.fit!r}")
        if self.cxr_dtype not in CXR_DTYPES:
            raise ValueError(f"cxr_dtype must be one of {list(CXR_DTYPES)}")
        if self.enh_dtype not in ENH_DTYPES:
            raise ValueError(f"enh_dtype must be one of {list(ENH_DTYPES)}")
        if (self.piece_size is not None and self.piece_size < 1) or self.max_pixels < 1 or self.max_bytes < 1:
            raise ValueError("piece_size, max_pixels and max_bytes must be positive")
        at = self.features_at
        if at is not None and at != "native":
            if isinstance(at, bool) or not isinstance(at, int) or not MIN_SIZE <= at <= MAX_SIZE:
                raise ValueError(f"features_at must be 'native' or a size in {MIN_SIZE}..{MAX_SIZE}, "
                                 f"got {at!r}")
            if at == self.size:  # the same thing, said explicitly: one identity for resuming
                object.__setattr__(self, "features_at", None)

    def with_piece_size_for(self, samples: int, distributed: bool = False) -> ConvertOptions:
        """These options with ``piece_size`` chosen for ``samples`` images where it is None."""
        if self.piece_size is not None:
            return self
        return dataclasses.replace(self, piece_size=auto_piece_size(samples, distributed))

    @property
    def features_label(self) -> str:
        """``"store size"``, ``"native"`` or the working size, for records and messages."""
        return "store size" if self.features_at is None else str(self.features_at)


#: Largest automatic piece (images): in worker processes, and on a Dask cluster.
MAX_PIECE, MAX_DASK_PIECE = 64, 256
#: An automatic piece size cuts a conversion into about this many pieces (no fewer than 4 images
#: each): a worker that has finished its last piece waits for the others, and with pieces of 64
#: images a small conversion has only two or three per worker, so that wait is a large share of it.
AUTO_PIECES = 16


def auto_piece_size(samples: int, distributed: bool = False) -> int:
    """Images per resumable piece when ``--piece-size`` is not given: ``samples / 16``, 4 .. 64 (256 on Dask)."""
    return min(MAX_DASK_PIECE if distributed else MAX_PIECE, max(4, -(-samples // AUTO_PIECES)))


#: Peak working memory of ``enhance`` on the CPU per pixel of one feature image (float32, its filter
#: bank already built; ``test_enhance_working_memory_is_within_the_estimate`` holds it to this bound).
ENHANCE_BYTES_PER_PIXEL = 170
#: Resident size of a process that has imported the conversion's libraries, before any image.
PROCESS_BYTES = 200 * 2**20


def conversion_memory(opts: ConvertOptions, workers: int) -> int:
    """Estimated peak resident memory (bytes) of a local conversion, all processes together.

    Each worker holds one piece: per sample the fitted radiograph (float32, as a
    list and stacked), its lung mask, its ENH and the pickled copy it sends, plus
    the working memory of one ``enhance`` call at the feature size (the store size
    for ``features_at="native"``: the native size is only known after decoding,
    so there the estimate is a lower bound). The main process holds up to two
    finished pieces per worker, pickled and unpickled. Meant to err high rather
    than low.
    """
    pixels = opts.size * opts.size
    cxr, enh = np.dtype(opts.cxr_dtype).itemsize, np.dtype(opts.enh_dtype).itemsize
    stored = pixels * (cxr + 3 * enh + 1)
    held = pixels * (2 * 4 + 1 + 3 * enh + cxr) + stored
    at = opts.size if opts.features_at in (None, "native") else opts.features_at
    working = ENHANCE_BYTES_PER_PIXEL * at * at + 2 * 3 * 4 * pixels  # + float maps being resized
    piece = opts.piece_size or MAX_PIECE  # automatic sizes are at most this
    per_worker = piece * held + working + PROCESS_BYTES
    return workers * per_worker + 2 * workers * piece * 2 * stored + PROCESS_BYTES


def _quantise(pixels: np.ndarray, dtype: str) -> np.ndarray:
    """Values in [0, 1] to a storage type: ``rint`` for integers, a cast for floats."""
    if np.dtype(dtype).kind == "u":
        return np.rint(np.clip(pixels, 0, 1) * np.iinfo(dtype).max).astype(dtype)
    return pixels.astype(dtype)


def _read_mask(path: Path, opts: ConvertOptions) -> np.ndarray:
    """A lung mask fitted like its radiograph: ``(size, size, 1)`` uint8 of 0 and 1."""
    image = read_image(read_regular_file(path, opts.max_bytes), opts.max_pixels)
    return (fit(image.pixels, opts.size, opts.fit) > 0.5).astype(np.uint8)[..., None]


def feature_image(pixels: np.ndarray, opts: ConvertOptions) -> np.ndarray | None:
    """The grey image ENH is computed on, or None when that is the stored radiograph."""
    if opts.features_at is None:
        return None
    if opts.features_at == "native":
        return np.clip(square(pixels, opts.fit), 0, 1)
    return np.clip(fit(pixels, opts.features_at, opts.fit), 0, 1)


def _resize_maps(enh: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` maps in [0, 1] to ``(size, size, 3)`` with the radiograph's filter."""
    return np.clip(np.stack([resize(enh[..., c], (size, size)) for c in range(3)], axis=-1), 0, 1)


def enhance_to_store(batch: np.ndarray, params: PhaseParams, opts: ConvertOptions,
                     backend: str) -> np.ndarray:
    """ENH of a ``(n, h, w)`` batch of feature images, at the store size and storage type."""
    from ..maths.features import enhance

    n, size = len(batch), opts.size
    if n == 0:
        return np.zeros((0, size, size, 3), dtype=opts.enh_dtype)
    if batch.shape[1:] == (size, size):
        if opts.enh_dtype == "uint8":
            return enhance(batch, params, backend=backend, out="uint8")
        return enhance(batch, params, backend=backend).astype(opts.enh_dtype)
    maps = enhance(batch, params, backend=backend)
    return _quantise(np.stack([_resize_maps(m, size) for m in maps]), opts.enh_dtype)


#: Called with the piece id after each file of a piece (converted or failed): the progress bar
#: moves per image, not per piece. Set by :func:`report_progress_to` (in worker processes too).
_progress = None


def report_progress_to(hook) -> None:
    """Call ``hook(piece_id)`` after each file :func:`process_piece` finishes (None: stop)."""
    global _progress
    _progress = hook


def _ticking(entries, piece_id):
    for entry in entries:
        yield entry
        if _progress is not None:
            _progress(piece_id)


def process_piece(task: dict) -> dict:
    """Decode, fit and (on the CPU) enhance one piece. Top-level for pickling.

    With ``features_at`` set, the CPU path enhances each image as soon as it is
    decoded and keeps only its resized maps, so memory does not grow with the
    images' native size times the piece size.
    """
    opts = ConvertOptions(**task["options"])
    params = PhaseParams.from_json(task["params_json"])
    root = Path(task["root"])
    here = task["enhance_here"]
    ok, failed = [], []
    for index, rel, label, patient, source, *mask_rel in _ticking(task["entries"], int(task["piece_id"])):
        mask_rel = mask_rel[0] if mask_rel else ""
        try:
            mask = _read_mask(root / mask_rel, opts) if mask_rel else None
        except ImageReadError as exc:
            failed.append((index, rel, one_line(f"its lung mask {mask_rel}: {exc}")))
            continue
        try:
            data = read_regular_file(root / rel, opts.max_bytes)
            image = read_image(data, opts.max_pixels)
            if min(image.width, image.height) < MIN_SIZE:
                raise ImageReadError(f"image smaller than {MIN_SIZE} pixels on a side "
                                     f"({image.width}x{image.height})")
            grey = np.clip(fit(image.pixels, opts.size, opts.fit), 0, 1)
            features = feature_image(image.pixels, opts)
            if features is not None and here:
                features = enhance_to_store(features[None], params, opts, "numpy")[0]
        except ImageReadError as exc:
            failed.append((index, rel, one_line(exc)))
            continue
        except Exception as exc:  # one odd file must never stop the conversion
            failed.append((index, rel, one_line(f"could not be processed ({type(exc).__name__}: {exc})")))
            continue
        # Keep only what is stored: a decoded 3000 px original is 36 MB of float32.
        ok.append((index, rel, label, patient, hashlib.sha256(data).hexdigest(),
                   (image.width, image.height, image.mode), grey, features, source, mask))
        del image, data
    size = opts.size
    grey = np.stack([o[6] for o in ok]) if ok else np.zeros((0, size, size), np.float32)
    piece = {
        "piece_id": np.int64(task["piece_id"]),
        "index": np.array([o[0] for o in ok], dtype=np.int64),
        "labels": np.array([o[2] for o in ok], dtype=np.int32),
        "source_path": np.array([o[1] for o in ok], dtype=str),
        "patient_id": np.array([o[3] for o in ok], dtype=str),
        "source": np.array([o[8] for o in ok], dtype=str),
        "sha256": np.array([o[4] for o in ok], dtype=str),
        "orig_width": np.array([o[5][0] for o in ok], dtype=np.int32),
        "orig_height": np.array([o[5][1] for o in ok], dtype=np.int32),
        "orig_mode": np.array([o[5][2] for o in ok], dtype=str),
        "cxr": _quantise(grey, opts.cxr_dtype)[..., None],
        "has_mask": np.array([o[9] is not None for o in ok], dtype=bool),
        "mask": np.stack([o[9] if o[9] is not None else np.zeros((size, size, 1), np.uint8) for o in ok])
        if ok else np.zeros((0, size, size, 1), np.uint8),
        "failed_path": np.array([f[1] for f in failed], dtype=str),
        "failed_reason": np.array([f[2] for f in failed], dtype=str),
    }
    if opts.features_at is None:
        if here:
            piece["enh"] = enhance_to_store(grey, params, opts, "numpy")
        else:
            piece["features"] = [g for g in grey]
    elif here:
        piece["enh"] = np.stack([o[7] for o in ok]) if ok else \
            np.zeros((0, size, size, 3), dtype=opts.enh_dtype)
    else:
        piece["features"] = [o[7] for o in ok]
    return piece


def finish_piece(piece: dict, task: dict, backend: str) -> dict:
    """Compute ENH of a piece decoded without features (the GPU path).

    Runs of feature images of one shape go through the backend together, in
    batches of ``task["batch_size"]``.
    """
    if "features" not in piece:
        return piece
    opts = ConvertOptions(**task["options"])
    params = PhaseParams.from_json(task["params_json"])
    images, step = piece.pop("features"), task.get("batch_size", 64)
    parts, start = [], 0
    while start < len(images):
        stop = start + 1
        while stop < len(images) and stop - start < step and images[stop].shape == images[start].shape:
            stop += 1
        parts.append(enhance_to_store(np.stack(images[start:stop]), params, opts, backend))
        start = stop
    piece["enh"] = np.concatenate(parts) if parts else \
        np.zeros((0, opts.size, opts.size, 3), dtype=opts.enh_dtype)
    return piece
