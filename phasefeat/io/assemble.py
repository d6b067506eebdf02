"""Writing the store: finished pieces (what workers produce) assembled into the final file.

A process killed while an HDF5 file is open for writing can leave it unreadable,
so nothing is written into the final file until every piece is finished: the
store is assembled into a temporary file and renamed into place. The layout is
:mod:`phasefeat.io.store`'s (``docs/store-format.md``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .store import FORMAT_VERSION, _h5py

__all__ = ["write_piece", "read_piece", "read_piece_failures", "assemble", "random_store", "META_COLUMNS"]


def write_piece(path: Path, piece: dict) -> None:
    """Write one finished piece (arrays and per-sample metadata) atomically as ``.npz``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **piece)


def read_piece(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def read_piece_failures(path: Path) -> list[tuple[str, str]]:
    """The failed files of a piece, without loading its arrays."""
    with np.load(path, allow_pickle=False) as data:
        return list(zip(data["failed_path"].tolist(), data["failed_reason"].tolist(), strict=True))


META_COLUMNS = ("labels", "source_path", "sha256", "orig_width", "orig_height", "orig_mode", "patient_id",
                "source")


def _write_shard(path: Path, piece: dict, compression: str) -> None:
    """One HDF5 shard (the piece's images, one sample per chunk), written atomically."""
    h5py = _h5py()
    opts = {} if compression == "none" else {"compression": compression}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for what in ("cxr", "enh"):
            data = piece[what]
            f.create_dataset(what, data=data, chunks=(1, *data.shape[1:]) if len(data) else None, **opts)


def assemble(final: Path, pieces: list[Path], *, shape, cxr_dtype, enh_dtype, class_names,
             failures: list[tuple[str, str]], attrs: dict, compression: str = "none",
             virtual: bool = False) -> int:
    """Concatenate finished pieces (in order) into the final store, atomically.

    Parameters
    ----------
    virtual : bool
        Instead of copying the images, write them once more as HDF5 shards in
        ``<final>.shards/`` and make ``/cxr`` and ``/enh`` virtual datasets over
        them (paths relative to the store, so the two move together). The
        metadata is always copied.

    Returns
    -------
    int
        Number of samples written.
    """
    h5py = _h5py()
    text = h5py.string_dtype()
    found = [_piece_count(p) for p in pieces]
    counts = [n for n, _ in found]
    total = sum(counts)
    with_masks = any(m for _, m in found)
    h, w = shape
    opts = {} if compression == "none" else {"compression": compression}
    shards = final.with_name(final.name + ".shards")
    # New shards go to a folder of their own and replace the old ones only when the store is
    # complete: a failed conversion leaves the store it was to replace readable.
    building = final.with_name(f".{final.name}.shards.partial")
    if building.exists():
        shutil.rmtree(building)
    try:
        with atomic_path(final) as tmp, h5py.File(tmp, "w") as f:
            if virtual:
                building.mkdir()
                layouts = {"cxr": h5py.VirtualLayout((total, h, w, 1), dtype=cxr_dtype),
                           "enh": h5py.VirtualLayout((total, h, w, 3), dtype=enh_dtype)}
            else:
                # A store of zero samples (every file failed) still records why: no chunks to declare.
                cxr = f.create_dataset("cxr", (total, h, w, 1), dtype=cxr_dtype,
                                       chunks=(1, h, w, 1) if total else None, **(opts if total else {}))
                enh = f.create_dataset("enh", (total, h, w, 3), dtype=enh_dtype,
                                       chunks=(1, h, w, 3) if total else None, **(opts if total else {}))
            if with_masks:  # lung masks (Kaggle masks/ folders): only stores that have some carry them
                mask = f.create_dataset("mask", (total, h, w, 1), dtype="uint8", chunks=(1, h, w, 1), **opts)
            columns = {k: [] for k in META_COLUMNS}
            has_mask = []
            row = 0
            for k, (path, n) in enumerate(zip(pieces, counts, strict=True)):
                piece = read_piece(path)
                if virtual:
                    shard = shards / f"shard-{k:06d}.h5"  # its final place, as the virtual dataset names it
                    _write_shard(building / shard.name, piece, compression)
                    for what, layout in layouts.items():
                        if n:
                            source = h5py.VirtualSource(f"{shards.name}/{shard.name}", what,
                                                        shape=piece[what].shape)
                            layout[row:row + n] = source
                else:
                    # Sample by sample: multi-chunk slab writes grow HDF5's internal free
                    # lists (+58 MB per 2,000 samples, measured); one chunk at a time stays flat.
                    for i in range(n):
                        cxr.write_direct(piece["cxr"], np.s_[i], np.s_[row + i])
                        enh.write_direct(piece["enh"], np.s_[i], np.s_[row + i])
                if with_masks:
                    for i in range(n):
                        mask.write_direct(piece["mask"], np.s_[i], np.s_[row + i])
                    has_mask.append(piece["has_mask"])
                for key in columns:
                    columns[key].append(piece[key])
                row += n
            if virtual:
                for what, layout in layouts.items():
                    f.create_virtual_dataset(what, layout, fillvalue=0)
            joined = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in columns.items()}
            f.create_dataset("labels", data=joined["labels"].astype(np.int32))
            f.create_dataset("class_names", data=np.array(class_names, dtype=object), dtype=text)
            meta = f.create_group("meta")
            for key in ("source_path", "sha256", "orig_mode", "patient_id", "source"):
                meta.create_dataset(key, data=joined[key].astype(str).astype(object), dtype=text)
            for key in ("orig_width", "orig_height"):
                meta.create_dataset(key, data=joined[key].astype(np.int32))
            if with_masks:
                meta.create_dataset("has_mask", data=np.concatenate(has_mask).astype(bool))
            fail = f.create_group("failures")
            fail.create_dataset("path", data=np.array([p for p, _ in failures], dtype=object), dtype=text)
            fail.create_dataset("reason", data=np.array([r for _, r in failures], dtype=object), dtype=text)
            f.attrs.update({"format_version": FORMAT_VERSION, "virtual_shards": shards.name if virtual else "",
                            **attrs})
            f.close()
            if virtual:  # the old shards go just before the new store lands
                if shards.exists():
                    shutil.rmtree(shards)
                os.replace(building, shards)
    finally:
        if building.exists():  # the assembly failed before the new shards took their place
            shutil.rmtree(building)
    if not virtual and shards.exists():  # the shards of a virtual store this one replaced
        shutil.rmtree(shards)
    return total


def _piece_count(path: Path) -> tuple[int, bool]:
    """Samples in a piece, and whether any of them has a lung mask."""
    with np.load(path, allow_pickle=False) as data:
        return int(data["labels"].shape[0]), bool("has_mask" in data.files and data["has_mask"].any())


def random_store(path, n: int, size: int = 299, seed: int = 0) -> Path:
    """Write a store of ``n`` random uint8 samples, 64 at a time (for benchmarks and tests).

    Uncompressed reads do not depend on pixel values, so this measures I/O
    honestly without converting thousands of images first. Never holds more
    than one piece in memory.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    work = path.with_name(path.name + ".parts")
    work.mkdir(exist_ok=True)
    pieces = []
    for k in range(0, n, 64):
        m = min(64, n - k)
        piece = {"labels": rng.integers(0, 3, m).astype(np.int32), "source_path": np.array(["x"] * m),
                 "patient_id": np.array([""] * m), "source": np.array([""] * m),
                 "sha256": np.array(["0" * 64] * m),
                 "orig_width": np.zeros(m, np.int32), "orig_height": np.zeros(m, np.int32),
                 "orig_mode": np.array(["L"] * m),
                 "cxr": rng.integers(0, 256, (m, size, size, 1), dtype=np.uint8),
                 "enh": rng.integers(0, 256, (m, size, size, 3), dtype=np.uint8)}
        pieces.append(work / f"piece-{k:06d}.npz")
        write_piece(pieces[-1], piece)
    assemble(path, pieces, shape=(size, size), cxr_dtype="uint8", enh_dtype="uint8",
             class_names=["covid", "normal", "pneumonia"], failures=[],
             attrs={"params_json": "{}", "synthetic": "random uint8"})
    for p in pieces:
        p.unlink()
    work.rmdir()
    return path
