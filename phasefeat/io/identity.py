"""A store's identity: everything in it that decides what a model sees, and nothing about where it lies.

Two parts, because they answer two questions (``docs/store-format.md``, section "Identity"):

``samples``
    Which images, with which labels, and how they may be grouped: the sample count, the class
    names, the labels, each file's SHA-256, patient ids, sources and which samples have a lung
    mask. A split depends on these alone, so ``trainer evaluate`` rebuilds a model's own test
    set wherever they are equal.
``pixels``
    How the stored pixels were made from those files: the feature parameters (their digest and
    preset), where the features were computed (``features_at``), the fit to the square, and the
    shape and dtype of ``/cxr`` and ``/enh``.

Reusing a finished run and resuming a checkpoint need both parts equal. Long values (labels,
digests, ids) are kept as SHA-256 digests; short ones as they are, so that a difference can be
said in one line (:func:`describe_difference`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

__all__ = ["store_identity", "identity_digest", "describe_difference", "legacy_identity"]


def _digest_of(values) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


def _image_description(store, what: str) -> str:
    return f"{'x'.join(str(n) for n in store.shape(what)[1:])} {np.dtype(store.dtype(what)).name}"


def store_identity(store) -> dict:
    """The identity of an open :class:`phasefeat.io.store.Store` (see the module's text).

    Returns
    -------
    dict
        ``{"samples": {...}, "pixels": {...}}``, JSON-able; equal for two stores exactly when
        the same files with the same labels, groups and masks were converted the same way.
    """
    attrs = store.attrs
    labels = np.ascontiguousarray(store.labels, dtype=np.int64)
    samples = {"count": len(store), "class_names": list(store.class_names),
               "labels": hashlib.sha256(labels.tobytes()).hexdigest(),
               "files": _digest_of(list(store.sha256)),
               "patients": _digest_of(list(store.patient_ids)),
               "sources": _digest_of(list(store.sources)),
               "masks": _digest_of(np.flatnonzero(store.has_masks).tolist())}
    pixels = {"params": str(attrs.get("params_digest", "")), "preset": str(attrs.get("preset", "")),
              "features_at": str(attrs.get("features_at", "")), "fit": str(attrs.get("fit", "")),
              "cxr": _image_description(store, "cxr"), "enh": _image_description(store, "enh")}
    return {"samples": samples, "pixels": pixels}


def identity_digest(identity) -> str:
    """One SHA-256 of an identity (a dict of this module, or an earlier version's digest string)."""
    if isinstance(identity, str):
        return identity
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def legacy_identity(store) -> str:
    """The identity digest of earlier versions (0.1 before format of this module): parameters,
    sample count, class names, ``features_at``, the ENH shape, labels and file digests. It left
    out the fit, dtypes, patients, sources and masks; kept to recognise models that recorded it."""
    h = hashlib.sha256()
    for part in (str(store.attrs.get("params_digest", "")), str(len(store)), json.dumps(store.class_names),
                 str(store.attrs.get("features_at", "")), str(store.shape("enh"))):
        h.update(part.encode() + b"\0")
    h.update(np.ascontiguousarray(store.labels, dtype=np.int64).tobytes())
    for digest in store.sha256:
        h.update(digest.encode())
    return h.hexdigest()


_NAMES = {"count": "sample count", "class_names": "class names", "labels": "labels",
          "files": "image files", "patients": "patient ids", "sources": "sources",
          "masks": "lung masks", "params": "feature parameters", "preset": "preset",
          "features_at": "features at", "fit": "fit", "cxr": "CXR", "enh": "ENH",
          "threads": "threads per run", "backend": "Keras backend", "config_digest": "run settings",
          "split": "split", "store": "store"}


def _is_digest(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def describe_difference(old, new) -> str:
    """What differs between two identities, in a few words: ``"ENH 32x32x3 uint8 -> 32x32x3 float32;
    patient ids differ"``. Nested parts are walked; digests are named, short values shown.
    An identity of an earlier version (a digest string) is said to be one."""
    if isinstance(old, str) != isinstance(new, str):
        return "one of them was recorded by an earlier version, which left out how pixels were made"
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "" if old == new else "the store differs"
    parts = []
    for key in list(dict.fromkeys([*old, *new])):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        name = _NAMES.get(key, key.replace("_", " "))
        if isinstance(a, dict) and isinstance(b, dict):
            parts.append(describe_difference(a, b))
        elif _is_digest(a) or _is_digest(b) or isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
            parts.append(f"{name} differ" if name.endswith("s") else f"{name} differs")
        else:
            parts.append(f"{name} {_shown(a)} -> {_shown(b)}")
    return "; ".join(p for p in parts if p)


def _shown(value) -> str:
    if value is None:
        return "(not recorded)"
    if value == "":
        return "(none)"
    return str(value)
