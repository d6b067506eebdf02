"""``phasefeat inspect``: a readable report of a store, and re-hashing of its sources."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np

from .store import Store

__all__ = ["report", "verify_sources", "class_source_table", "cramers_v", "format_class_source",
           "duplicate_groups", "duplicate_summary"]


def duplicate_groups(digests) -> list[list[int]]:
    """Indices of samples with the same file digest (SHA-256): groups of two or more, in order."""
    by_digest = {}
    for i, digest in enumerate(digests):
        if digest:
            by_digest.setdefault(digest, []).append(i)
    return sorted(g for g in by_digest.values() if len(g) > 1)


def duplicate_summary(digests, labels) -> str | None:
    """One sentence on the store's identical files (None when there are none)."""
    groups = duplicate_groups(digests)
    if not groups:
        return None
    labels = np.asarray(labels)
    across = sum(1 for g in groups if len(set(labels[g].tolist())) > 1)
    return (f"{len(groups)} group(s) of identical files ({sum(len(g) for g in groups)} images"
            + (f"; {across} group(s) with two labels: the same image in two classes" if across else "")
            + "); the trainer keeps each group in one part of the split")


def class_source_table(labels, sources, n_classes: int) -> tuple[np.ndarray, list[str]]:
    """Counts of each (class, source) pair: ``table[c, s]``, with the sorted source names.

    An empty source is listed as ``"(unknown)"``.
    """
    names = sorted({s or "(unknown)" for s in sources})
    column = {name: k for k, name in enumerate(names)}
    table = np.zeros((n_classes, len(names)), dtype=np.int64)
    for label, source in zip(np.asarray(labels).tolist(), sources, strict=True):
        table[label, column[source or "(unknown)"]] += 1
    return table, names


def cramers_v(table) -> float:
    """Cramér's V of a contingency table: 0 (independent) to 1 (one determines the other).

    ``sqrt(chi2 / (n * (min(r, c) - 1)))`` over the rows and columns that are not
    empty; NaN when fewer than two remain on either side.

    References
    ----------
    .. [1] H. Cramér, Mathematical Methods of Statistics, Princeton, 1946, p. 282.
    """
    table = np.asarray(table, dtype=np.float64)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    r, c = table.shape
    n = table.sum()
    if min(r, c) < 2 or n == 0:
        return float("nan")
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / (n * (min(r, c) - 1)))


def format_class_source(table, class_names, source_names) -> list[str]:
    """The class x source table as aligned text lines, with row totals."""
    width = max([12, *(len(s) + 2 for s in source_names)])
    lines = [f"  {'class':<12s}" + "".join(f"{s:>{width}s}" for s in source_names) + f"{'total':>8s}"]
    for c, name in enumerate(class_names):
        lines.append(f"  {name:<12s}" + "".join(f"{v:>{width}d}" for v in table[c])
                     + f"{int(table[c].sum()):>8d}")
    return lines


def report(store: Store, failures_shown: int = 20) -> str:
    """Counts per class, shapes, dtypes, parameters, provenance and failures as text."""
    attrs = store.provenance
    counts = Counter(store.labels.tolist())
    lines = [f"store        {store.path}",
             f"samples      {len(store)} (of {attrs.get('discovered', '?')} discovered; "
             f"{len(store.failures)} failed)"]
    for i, name in enumerate(store.class_names):
        lines.append(f"  {name:<12s} {counts.get(i, 0)}")
    for what in ("cxr", "enh"):
        lines.append(f"{what:<12s} shape {store.shape(what)} dtype {store.dtype(what)}")
    params = attrs.get("params_json", {})
    lines.append(f"params       digest {attrs.get('params_digest', '?')[:16]}")
    lines += [f"  {k} = {v}" for k, v in sorted(params.items())]
    for key in ("preset", "features_at", "size", "phasefeat_version", "backend", "device", "created",
                "input_root", "layout", "fit", "source_pattern", "compression", "engine", "virtual_shards",
                "command_line"):
        value = attrs.get(key, "")
        if value not in ("", None):  # e.g. virtual_shards of a store in one file, source_pattern unused
            lines.append(f"{key:<12s} {value}")
    versions = attrs.get("library_versions", {})
    lines.append("libraries    " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    patients = [p for p in store.patient_ids if p]
    lines.append(f"patients     {len(set(patients))} distinct ids" if patients else
                 "patients     no patient ids in this layout")
    duplicates = duplicate_summary(store.sha256, store.labels)
    lines.append(f"duplicates   {duplicates or 'none (no two samples share a SHA-256)'}")
    if duplicates:
        paths = store.source_paths
        for group in duplicate_groups(store.sha256)[:5]:
            lines.append("  " + " = ".join(f"{paths[i]} ({store.class_names[store.labels[i]]})" for i in group))
    masks = int(store.has_masks.sum())
    if masks:
        lines.append(f"lung masks   {masks} of {len(store)} samples (trainer --occlude lungs|non-lungs)")
    sources = store.sources
    if any(sources):
        table, names = class_source_table(store.labels, sources, len(store.class_names))
        v = cramers_v(table)
        lines.append(f"sources      {len(names)}; class x source (Cramér's V {v:.2f}: 0 = independent, "
                     "1 = the source decides the class)")
        lines += format_class_source(table, store.class_names, names)
        if v >= 0.5:
            lines.append("  warning: class and source are strongly associated; a classifier can learn the "
                         "source instead of the disease (trainer audit measures it)")
    else:
        lines.append("sources      none recorded (convert with --source-pattern, or a label file's "
                     "source column)")
    dropped = sum(1 for m in store.orig_modes if "alpha dropped" in m)
    if dropped:
        lines.append(f"notes        {dropped} image(s) had transparent pixels; their alpha channel was dropped "
                     "(orig_mode says how much)")
    failures = store.failures
    lines.append(f"failures     {len(failures)}")
    for reason, n in Counter(r.split(" (")[0] for _, r in failures).most_common():
        lines.append(f"  {n:>5d}  {reason}")
    for path, reason in failures[:failures_shown]:
        lines.append(f"  {path}: {reason}")
    if len(failures) > failures_shown:
        lines.append(f"  ... {len(failures) - failures_shown} more (use --all-failures)")
    return "\n".join(lines)


def verify_sources(store: Store, root: str | Path | None = None):
    """Re-hash the source files.

    A stored path that is absolute or climbs out of the root (``..``) is refused, not
    followed: a store must not make ``inspect`` read files elsewhere.

    Returns
    -------
    dict
        ``root``, ``checked``, and the lists ``missing``, ``mismatched`` and ``refused``.
    """
    root = Path(root or store.attrs.get("input_root", "."))
    base = root.resolve()
    missing, mismatched, refused, checked = [], [], [], 0
    for rel, digest in zip(store.source_paths, store.sha256, strict=True):
        path = (root / rel)
        if Path(rel).is_absolute() or ".." in Path(rel).parts or \
                not path.resolve().is_relative_to(base):
            refused.append(rel)
            continue
        if not path.is_file():
            missing.append(rel)
            continue
        checked += 1
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            mismatched.append(rel)
    return {"root": str(root), "checked": checked, "missing": missing, "mismatched": mismatched,
            "refused": refused}
