"""``phasefeat inspect``: a readable report of a store, and re-hashing of its sources."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from .store import Store

__all__ = ["report", "verify_sources"]


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
    for key in ("phasefeat_version", "backend", "device", "created", "input_root", "layout", "fit",
                "compression", "engine", "virtual_shards", "command_line"):
        lines.append(f"{key:<12s} {attrs.get(key, '')}")
    versions = attrs.get("library_versions", {})
    lines.append("libraries    " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    patients = [p for p in store.patient_ids if p]
    lines.append(f"patients     {len(set(patients))} distinct ids" if patients else
                 "patients     no patient ids in this layout")
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
    """Re-hash the source files that are still present.

    Returns
    -------
    dict
        ``checked``, ``missing`` (list of paths) and ``mismatched`` (list of paths).
    """
    root = Path(root or store.attrs["input_root"])
    missing, mismatched, checked = [], [], 0
    for rel, digest in zip(store.source_paths, store.sha256, strict=True):
        path = root / rel
        if not path.is_file():
            missing.append(rel)
            continue
        checked += 1
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            mismatched.append(rel)
    return {"root": str(root), "checked": checked, "missing": missing, "mismatched": mismatched}
