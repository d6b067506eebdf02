"""The HDF5 store: its layout, and the reader every command opens it with.

Layout (documented in ``docs/store-format.md``)::

    /cxr            (N, H, W, 1) uint8 | uint16     one sample per chunk
    /enh            (N, H, W, 3) uint8 | float16 | float32
    /labels         (N,) int32, indices into the class names
    /class_names    (C,) str
    /meta/source_path, /meta/sha256, /meta/orig_width, /meta/orig_height,
    /meta/orig_mode, /meta/patient_id, /meta/source       (N,) each
    /mask, /meta/has_mask   (N, H, W, 1) uint8 0/1, (N,) bool   only with lung masks
    /failures/path, /failures/reason                      (F,) each
    attributes: format_version, params_json, params_digest, phasefeat_version,
    backend, device, library_versions, created, input_root, command_line, ...

The store is written by :mod:`phasefeat.io.assemble`; this module only reads it, and
refuses (with :class:`StoreError`, saying why) any file that breaks the layout's rules.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_VERSION", "COMPRESSIONS", "StoreError", "Store", "open_store", "known_kind"]

#: Version 2 added /meta/source (every store has it, possibly empty). Readers accept every
#: version up to their own; a version-1 store reads with empty sources.
FORMAT_VERSION = 2
COMPRESSIONS = ("none", "lzf", "gzip")
#: The dtypes a store's images may have (``--cxr-dtype``, ``--enh-dtype``; masks are 0/1).
IMAGE_DTYPES = {"cxr": ("uint8", "uint16"), "enh": ("uint8", "float16", "float32"), "mask": ("uint8",)}


class StoreError(ValueError):
    """A file is not a readable phasefeat store; the message says why."""


KERAS_MODEL = "a Keras model, not a store (a model is passed as --model, e.g. to `trainer evaluate`)"


def known_kind(path) -> str | None:
    """What a file that people pass for a store often is instead: ``"a phasefeat store"``,
    :data:`KERAS_MODEL`, or None (not recognised). Reads a few bytes, nothing more."""
    import zipfile

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile):
            return None
        # the .keras format: a zip of config.json, metadata.json and the weights
        return KERAS_MODEL if {"config.json", "metadata.json"} & names else None
    if head == b"\x89HDF\r\n\x1a\n":
        try:
            with _h5py().File(path, "r") as f:
                if "model_config" in f.attrs or "model_weights" in f:
                    return KERAS_MODEL  # Keras' legacy .h5 model
                if "format_version" in f.attrs and "enh" in f:
                    return "a phasefeat store"
        except Exception:  # a damaged file: whatever HDF5 raises, it is not recognised
            return None
    return None


def _h5py():
    import h5py

    return h5py


class Store:
    """Read-only access to a phasefeat store.

    Open one per process (after any fork): h5py handles must not cross a fork.
    Samples are read index by index, which h5py does ~40x faster than fancy
    indexing with a list.

    Examples
    --------
    >>> with open_store("enh.h5") as store:             # doctest: +SKIP
    ...     x = store.read(0)                           # (H, W, 3) uint8
    ...     batch = store.read_many([5, 2, 9], "cxr")   # (3, H, W, 1)
    """

    REQUIRED = ("cxr", "enh", "labels", "class_names", "meta/source_path", "failures/path")

    def __init__(self, path: str | os.PathLike):
        h5py = _h5py()
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            if known_kind(self.path) == KERAS_MODEL:
                raise StoreError(f"{self.path}: {KERAS_MODEL}") from None
            raise StoreError(f"{self.path}: not an HDF5 file or unreadable ({exc})") from None
        try:
            self._check_version()
            links = self._links()
            if links:  # read nothing through them: an external link can point at any file
                are = "is a link" if len(links) == 1 else "are links"
                raise StoreError(f"{self.path}: {', '.join('/' + n for n in links)} {are} to elsewhere; "
                                 "a store holds its own data")
            groups = self._groups_for_data()
            if groups:  # reading one as an array would fail somewhere later, far from the cause
                raise StoreError(f"{self.path}: {', '.join('/' + n for n in groups)} should hold data but "
                                 f"{'is a group' if len(groups) == 1 else 'are groups'}")
            self._images = {what: self._open_images(what) for what in ("cxr", "enh")}
            if "mask" in self._file:
                self._images["mask"] = self._file["mask"]
            self._labels = np.asarray(self._file["labels"][()])
            self._check_invariants()
        except StoreError:
            self._file.close()
            raise
        # What HDF5 raises on a damaged file (tests/test_store.py damages bytes until each has shown up).
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            self._file.close()
            raise StoreError(f"{self.path}: unreadable store ({exc})") from None

    def _check_version(self) -> None:
        """The required members and a ``format_version`` this reader reads."""
        missing = [name for name in self.REQUIRED if name not in self._file]
        raw = self._file.attrs.get("format_version")
        if (missing or raw is None) and ("model_config" in self._file.attrs or "model_weights" in self._file):
            raise StoreError(f"{self.path}: {KERAS_MODEL}")
        if missing or raw is None:
            raise StoreError(f"{self.path}: not a phasefeat store (missing {', '.join(missing) or 'format_version'})")
        try:
            version = int(raw)
            if version != float(raw) or version < 1:
                raise ValueError
        except (TypeError, ValueError):
            shown = raw.decode(errors="replace") if isinstance(raw, bytes) else np.asarray(raw).tolist()
            raise StoreError(f"{self.path}: format_version {shown!r} is not a positive integer; "
                             "not a store this phasefeat wrote") from None
        if version > FORMAT_VERSION:
            raise StoreError(f"{self.path}: store format {version} is newer than this phasefeat "
                             f"reads ({FORMAT_VERSION}); upgrade phasefeat")

    def _open_images(self, what: str):
        """``/cxr`` or ``/enh``; a virtual one with its shards looked up beside the store file.

        HDF5 resolves relative shard paths against the current directory first, and a
        virtual dataset whose shards are missing reads as its fill value (zeros) without
        an error, so both are settled here.
        """
        h5py = _h5py()
        if not isinstance(self._file.get(what, getlink=True), h5py.HardLink):
            raise StoreError(f"{self.path}: /{what} is a link to elsewhere; a store holds its own images")
        dataset = self._file[what]
        if not dataset.is_virtual:
            return dataset
        base = self.path.resolve().parent
        for source in dataset.virtual_sources():
            shard = base / source.file_name
            if not shard.is_file():
                raise StoreError(f"{self.path}: shard {source.file_name} of /{what} is missing (looked in "
                                 f"{base}); keep the store and its .shards folder together")
        dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        dapl.set_virtual_prefix(str(base).encode() + b"/")
        return h5py.Dataset(h5py.h5d.open(self._file.id, what.encode(), dapl=dapl))

    def _check_invariants(self) -> None:
        """The shape rules every command relies on, checked once for every reader."""
        f, labels = self._file, self._labels
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise StoreError(f"{self.path}: inconsistent store: /labels has shape {labels.shape} and dtype "
                             f"{labels.dtype}, expected one integer per sample")
        names = f["class_names"]
        try:
            if names.ndim != 1 or names.dtype.kind not in "OSU":
                raise TypeError
            [s.decode() if isinstance(s, bytes) else str(s) for s in names[()]]
        except (UnicodeDecodeError, TypeError):
            raise StoreError(f"{self.path}: inconsistent store: /class_names are not UTF-8 text, one name per "
                             "class") from None
        n, problems, n_classes = len(labels), [], len(names)
        if n and (labels.min() < 0 or labels.max() >= n_classes):
            problems.append(f"/labels holds values outside 0..{n_classes - 1}")
        for name, channels in (("cxr", 1), ("enh", 3)):
            shape = self._images[name].shape
            if len(shape) != 4 or shape[0] != n or shape[3] != channels:
                problems.append(f"/{name} has shape {shape}, expected ({n}, H, W, {channels})")
        for name, dataset in self._images.items():
            if str(dataset.dtype) not in IMAGE_DTYPES[name]:
                problems.append(f"/{name} has dtype {dataset.dtype}, expected {' or '.join(IMAGE_DTYPES[name])}")
        if "mask" in self._images and self._images["mask"].shape != self._images["cxr"].shape:
            problems.append(f"/mask has shape {self._images['mask'].shape}, /cxr {self._images['cxr'].shape}")
        if self._images["cxr"].shape[1:3] != self._images["enh"].shape[1:3]:
            problems.append(f"/cxr and /enh images differ in size ({self._images['cxr'].shape} vs "
                            f"{self._images['enh'].shape})")
        for name in ("source_path", "sha256", "orig_width", "orig_height", "orig_mode", "patient_id",
                     "source", "has_mask"):
            key = f"meta/{name}"
            shape = f[key].shape if key in f else (n,)
            if shape != (n,):
                problems.append(f"/{key} has {shape[0]} entries for {n} samples" if len(shape) == 1 else
                                f"/{key} has shape {shape}, expected ({n},)")
        if "failures/reason" not in f or f["failures/reason"].shape != f["failures/path"].shape:
            problems.append("/failures/reason is missing or does not match /failures/path")
        for key in ("params_json", "library_versions"):
            if key in f.attrs:
                try:
                    if not isinstance(json.loads(f.attrs[key]), dict):
                        problems.append(f"attribute {key} is not a JSON object")
                except (TypeError, ValueError):
                    problems.append(f"attribute {key} is not readable JSON")
        if problems:
            raise StoreError(f"{self.path}: inconsistent store: {'; '.join(problems)}")

    def _groups_for_data(self) -> list[str]:
        """Members that must be arrays (the required ones, /mask, every /meta and /failures column) but are
        groups."""
        h5py = _h5py()
        names = [*self.REQUIRED, "failures/reason", "mask",
                 *(f"meta/{k}" for k in self._file["meta"]), *(f"failures/{k}" for k in self._file["failures"])]
        return sorted({n for n in names if n in self._file and not isinstance(self._file[n], h5py.Dataset)})

    def _links(self) -> list[str]:
        """Members (top level, /meta, /failures) that are soft or external links, not data of this file."""
        h5py = _h5py()
        found = []
        for group in ("", "meta", "failures"):  # /meta and /failures are groups: they hold required members
            node = self._file[group] if group else self._file
            for name in node:
                if not isinstance(node.get(name, getlink=True), h5py.HardLink):
                    found.append(f"{group}/{name}" if group else name)
        return found

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def class_names(self) -> list[str]:
        return [s.decode() if isinstance(s, bytes) else s for s in self._file["class_names"][()]]

    @property
    def labels(self) -> np.ndarray:
        """All labels, ``(N,)`` int32 (small: held in memory)."""
        return self._labels

    def shape(self, what: str = "enh") -> tuple[int, ...]:
        return tuple(self._images[what].shape)

    def dtype(self, what: str = "enh") -> np.dtype:
        return self._images[what].dtype

    def read(self, index: int, what: str = "enh") -> np.ndarray:
        """One sample, ``(H, W, C)``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for a store of {len(self)}")
        return self._images[what][index]

    def read_many(self, indices, what: str = "enh") -> np.ndarray:
        """Samples in the given order, ``(n, H, W, C)``, read index by index."""
        dataset = self._images[what]
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *dataset.shape[1:]), dtype=dataset.dtype)
        for k, i in enumerate(indices):
            dataset.read_direct(out, np.s_[int(i)], np.s_[k])
        return out

    def _strings(self, name: str) -> list[str]:
        return [s.decode() if isinstance(s, bytes) else s for s in self._file[name][()]]

    @property
    def source_paths(self) -> list[str]:
        return self._strings("meta/source_path")

    def invalid_samples(self, what: str = "enh", batch_size: int = 64) -> list[int]:
        """Samples whose float /cxr or /enh holds NaN, an infinity or a value outside [0, 1].

        Integer images (uint8, uint16) cannot, and are not read: an empty list at once.
        """
        if self.dtype(what).kind != "f":
            return []
        bad = []
        for start in range(0, len(self), batch_size):
            x = self.read_many(list(range(start, min(start + batch_size, len(self)))), what)
            wrong = ~np.isfinite(x) | (x < 0) | (x > 1)
            bad += (start + np.flatnonzero(wrong.reshape(len(x), -1).any(axis=1))).tolist()
        return bad

    def _optional_strings(self, name: str) -> list[str]:
        """An optional /meta column, ``""`` for every sample where the store has none."""
        return self._strings(name) if name in self._file else [""] * len(self)

    @property
    def patient_ids(self) -> list[str]:
        """Patient id of each sample (``""`` where unknown, and everywhere without /meta/patient_id)."""
        return self._optional_strings("meta/patient_id")

    @property
    def has_masks(self) -> np.ndarray:
        """Whether each sample has a lung mask (``read(i, "mask")``); all False without ``/mask``."""
        if "meta/has_mask" not in self._file:
            return np.zeros(len(self), dtype=bool)
        return self._file["meta/has_mask"][()].astype(bool)

    @property
    def sources(self) -> list[str]:
        """Source of each sample (``""`` where unknown, and everywhere in a version-1 store)."""
        return self._optional_strings("meta/source")

    @property
    def sha256(self) -> list[str]:
        """SHA-256 of each sample's source file (``""`` without /meta/sha256)."""
        return self._optional_strings("meta/sha256")

    @property
    def orig_modes(self) -> list[str]:
        """How each source was decoded (``"L"``, ``"RGB -> L"``, ...; ``""`` without /meta/orig_mode)."""
        return self._optional_strings("meta/orig_mode")

    def meta(self, name: str) -> np.ndarray:
        return self._file[f"meta/{name}"][()]

    @property
    def failures(self) -> list[tuple[str, str]]:
        return list(zip(self._strings("failures/path"), self._strings("failures/reason"), strict=True))

    @property
    def attrs(self) -> dict:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self._file.attrs.items()}

    @property
    def params(self):
        """The store's :class:`~phasefeat.params.PhaseParams` (``StoreError`` if unreadable)."""
        from ..params import PhaseParams

        try:
            return PhaseParams.from_json(self.attrs["params_json"])
        except (KeyError, ValueError) as exc:
            raise StoreError(f"{self.path}: unreadable parameter record params_json ({exc})") from None

    @property
    def provenance(self) -> dict:
        """Creation attributes, with JSON-valued ones decoded."""
        out = self.attrs
        for key in ("library_versions", "params_json"):  # both checked to be JSON objects on opening
            if key in out:
                out[key] = json.loads(out[key])
        return out


def open_store(path: str | os.PathLike) -> Store:
    """Open a store for reading; raises :class:`StoreError` with the reason if it is not one."""
    return Store(path)
