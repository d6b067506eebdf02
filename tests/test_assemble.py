"""Assembling finished pieces into a store, in process: layout, order, masks, shards, and what a failure leaves.

Fast unit tests of :mod:`phasefeat.io.assemble`, read back with h5py and the product's own reader.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from phasefeat.io.assemble import (
    META_COLUMNS,
    assemble,
    random_store,
    read_piece,
    read_piece_failures,
    write_piece,
)
from phasefeat.io.store import FORMAT_VERSION, open_store

h5py = pytest.importorskip("h5py")

H, W = 6, 5
CLASSES = ["covid", "normal", "pneumonia"]


def make_piece(n, start=0, *, masks=None, enh_dtype="uint8", failed=()):
    """``n`` samples numbered from ``start``: every value says which sample it belongs to."""
    k = np.arange(start, start + n)
    piece = {"labels": (k % 3).astype(np.int32), "source_path": np.array([f"s{i}.png" for i in k], dtype=str),
             "patient_id": np.array([f"p{i}" for i in k], dtype=str),
             "source": np.array([f"src{i % 2}" for i in k], dtype=str),
             "sha256": np.array([f"{i:064x}" for i in k], dtype=str),
             "orig_width": (100 + k).astype(np.int32), "orig_height": (200 + k).astype(np.int32),
             "orig_mode": np.array(["L" if i % 2 else "I;16" for i in k], dtype=str),
             "cxr": np.broadcast_to(k[:, None, None, None], (n, H, W, 1)).astype(np.uint8),
             "enh": (np.broadcast_to(k[:, None, None, None], (n, H, W, 3)) + np.arange(3)).astype(enh_dtype),
             "failed_path": np.array([p for p, _ in failed], dtype=str),
             "failed_reason": np.array([r for _, r in failed], dtype=str)}
    if masks is not None:
        piece["has_mask"] = np.asarray(masks, dtype=bool)
        piece["mask"] = (np.asarray(masks)[:, None, None, None] * np.ones((1, H, W, 1))).astype(np.uint8)
    return piece


def pieces_at(folder, *pieces):
    paths = []
    for k, piece in enumerate(pieces):
        paths.append(folder / f"piece-{k:06d}.npz")
        write_piece(paths[-1], piece)
    return paths


def build(final, paths, **kwargs):
    options = {"shape": (H, W), "cxr_dtype": "uint8", "enh_dtype": "uint8", "class_names": CLASSES,
               "failures": [("bad.png", "not an image"), ("odd.dcm", "no pixel data")],
               "attrs": {"params_json": "{}", "note": "kept"}, **kwargs}
    return assemble(final, paths, **options)


def samples(h5, what):
    return h5[what][:, 0, 0, 0].tolist()


# --- pieces on disk ------------------------------------------------------------------------------

def test_a_piece_reads_back_as_written_and_leaves_no_temporary_file(tmp_path):
    piece = make_piece(3, failed=[("x.png", "broken")])
    write_piece(tmp_path / "p.npz", piece)
    back = read_piece(tmp_path / "p.npz")
    assert sorted(back) == sorted(piece)
    for key, value in piece.items():
        assert np.array_equal(back[key], value) and back[key].dtype == value.dtype, key
    assert os.listdir(tmp_path) == ["p.npz"]


def test_a_piece_with_python_objects_is_refused_on_reading(tmp_path):
    write_piece(tmp_path / "p.npz", {"labels": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        read_piece(tmp_path / "p.npz")


def test_failures_are_read_as_pairs_without_the_images(tmp_path):
    write_piece(tmp_path / "p.npz", make_piece(2, failed=[("a.png", "empty file"), ("b.png", "not an image")]))
    assert read_piece_failures(tmp_path / "p.npz") == [("a.png", "empty file"), ("b.png", "not an image")]
    write_piece(tmp_path / "q.npz", make_piece(1))
    assert read_piece_failures(tmp_path / "q.npz") == []


def test_failure_columns_of_different_lengths_are_an_error(tmp_path):
    write_piece(tmp_path / "p.npz", {"failed_path": np.array(["a", "b"]), "failed_reason": np.array(["r"])})
    with pytest.raises(ValueError, match="shorter"):
        read_piece_failures(tmp_path / "p.npz")


# --- the assembled store -------------------------------------------------------------------------

@pytest.mark.parametrize("virtual", [False, True])
def test_pieces_are_concatenated_in_the_order_given(tmp_path, virtual):
    paths = pieces_at(tmp_path, make_piece(2, 0), make_piece(0, 2), make_piece(3, 2))
    out = tmp_path / "s.h5"
    assert build(out, [paths[2], paths[0], paths[1]], virtual=virtual) == 5
    with h5py.File(out, "r") as f:
        assert samples(f, "cxr") == [2, 3, 4, 0, 1]
        assert f["enh"][:, 0, 0].tolist() == [[k, k + 1, k + 2] for k in (2, 3, 4, 0, 1)]
        assert f["cxr"].shape == (5, H, W, 1) and f["enh"].shape == (5, H, W, 3)
        assert f["labels"][:].tolist() == [2, 0, 1, 0, 1] and f["labels"].dtype == np.int32
        meta = f["meta"]
        assert [s.decode() for s in meta["source_path"][:]] == [f"s{i}.png" for i in (2, 3, 4, 0, 1)]
        assert [s.decode() for s in meta["patient_id"][:]] == [f"p{i}" for i in (2, 3, 4, 0, 1)]
        assert [s.decode() for s in meta["sha256"][:]] == [f"{i:064x}" for i in (2, 3, 4, 0, 1)]
        assert [s.decode() for s in meta["source"][:]] == ["src0", "src1", "src0", "src0", "src1"]
        assert [s.decode() for s in meta["orig_mode"][:]] == ["I;16", "L", "I;16", "I;16", "L"]
        assert meta["orig_width"][:].tolist() == [102, 103, 104, 100, 101]
        assert meta["orig_height"][:].tolist() == [202, 203, 204, 200, 201]
        assert meta["orig_width"].dtype == meta["orig_height"].dtype == np.int32
        for key in ("source_path", "sha256", "orig_mode", "patient_id", "source"):
            assert h5py.check_string_dtype(meta[key].dtype) is not None, key
        assert "mask" not in f and "has_mask" not in meta
    with open_store(out) as store:  # and the product's reader agrees
        assert len(store) == 5 and store.read(3, "cxr")[0, 0, 0] == 0


def test_the_store_records_classes_failures_and_attributes(tmp_path):
    out = tmp_path / "s.h5"
    build(out, pieces_at(tmp_path, make_piece(1)))
    with h5py.File(out, "r") as f:
        assert [c.decode() for c in f["class_names"][:]] == CLASSES
        assert [p.decode() for p in f["failures/path"][:]] == ["bad.png", "odd.dcm"]
        assert [r.decode() for r in f["failures/reason"][:]] == ["not an image", "no pixel data"]
        assert h5py.check_string_dtype(f["class_names"].dtype) is not None
        assert h5py.check_string_dtype(f["failures/path"].dtype) is not None
        assert h5py.check_string_dtype(f["failures/reason"].dtype) is not None
        attrs = dict(f.attrs)
    assert attrs == {"format_version": FORMAT_VERSION, "virtual_shards": "", "params_json": "{}", "note": "kept"}


def test_images_are_stored_one_sample_per_chunk_and_compressed_when_asked(tmp_path):
    paths = pieces_at(tmp_path, make_piece(2, masks=[1, 0]))
    for compression, want in (("none", None), ("gzip", "gzip"), ("lzf", "lzf")):
        out = tmp_path / f"{compression}.h5"
        build(out, paths, compression=compression)
        with h5py.File(out, "r") as f:
            for what, channels in (("cxr", 1), ("enh", 3), ("mask", 1)):
                assert f[what].chunks == (1, H, W, channels), what
                assert f[what].compression == want, what
            assert samples(f, "cxr") == [0, 1]


@pytest.mark.parametrize("dtypes", [("uint8", "uint8"), ("uint16", "float16"), ("uint8", "float32")])
def test_the_storage_types_are_the_ones_named(tmp_path, dtypes):
    out = tmp_path / "s.h5"
    piece = make_piece(2, enh_dtype=dtypes[1])
    piece["cxr"] = piece["cxr"].astype(dtypes[0])
    build(out, pieces_at(tmp_path, piece), cxr_dtype=dtypes[0], enh_dtype=dtypes[1])
    with h5py.File(out, "r") as f:
        assert (f["cxr"].dtype, f["enh"].dtype) == tuple(np.dtype(d) for d in dtypes)
        assert f["enh"][1, 0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_store_of_no_samples_still_records_why(tmp_path, compression):
    out = tmp_path / "s.h5"
    assert build(out, pieces_at(tmp_path, make_piece(0), make_piece(0)), compression=compression) == 0
    with h5py.File(out, "r") as f:
        assert f["cxr"].shape == (0, H, W, 1) and f["enh"].shape == (0, H, W, 3)
        assert f["cxr"].chunks is None and f["cxr"].compression is None
        assert f["enh"].chunks is None and f["enh"].compression is None
        assert f["labels"].shape == (0,) and f["meta/source_path"].shape == (0,)
        assert [p.decode() for p in f["failures/path"][:]] == ["bad.png", "odd.dcm"]


def test_no_pieces_at_all_is_an_empty_store(tmp_path):
    out = tmp_path / "s.h5"
    assert build(out, [], failures=[]) == 0
    with h5py.File(out, "r") as f:
        assert f["labels"].shape == (0,) and f["labels"].dtype == np.int32
        assert f["meta/orig_width"].dtype == np.int32 and f["failures/path"].shape == (0,)


# --- lung masks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("virtual", [False, True])
def test_masks_are_kept_when_any_piece_has_one(tmp_path, virtual):
    paths = pieces_at(tmp_path, make_piece(2, 0, masks=[0, 0]), make_piece(2, 2, masks=[0, 1]))
    out = tmp_path / "s.h5"
    build(out, paths, virtual=virtual, compression="gzip")
    with h5py.File(out, "r") as f:
        assert f["mask"][:, 0, 0, 0].tolist() == [0, 0, 0, 1] and f["mask"].dtype == np.uint8
        assert f["mask"].shape == (4, H, W, 1) and f["mask"].compression == "gzip"
        assert f["meta/has_mask"][:].tolist() == [False, False, False, True]
        assert f["meta/has_mask"].dtype == bool


def test_pieces_whose_masks_are_all_absent_give_a_store_without_masks(tmp_path):
    paths = pieces_at(tmp_path, make_piece(2, masks=[0, 0]), make_piece(1, 2))
    out = tmp_path / "s.h5"
    build(out, paths)
    with h5py.File(out, "r") as f:
        assert "mask" not in f and "has_mask" not in f["meta"]


# --- virtual stores ------------------------------------------------------------------------------

def test_a_virtual_store_reads_its_shards_by_a_relative_path(tmp_path):
    paths = pieces_at(tmp_path, make_piece(2, 0), make_piece(0, 2), make_piece(1, 2))
    out = tmp_path / "a" / "s.h5"
    build(out, paths, virtual=True, compression="gzip")
    shards = out.with_name("s.h5.shards")
    assert sorted(p.name for p in shards.iterdir()) == ["shard-000000.h5", "shard-000001.h5", "shard-000002.h5"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.h5", "s.h5.shards"]
    with h5py.File(shards / "shard-000000.h5", "r") as shard:
        assert shard["cxr"].chunks == (1, H, W, 1) and shard["cxr"].compression == "gzip"
        assert shard["enh"].chunks == (1, H, W, 3) and shard["enh"].compression == "gzip"
    with h5py.File(shards / "shard-000001.h5", "r") as empty:
        assert empty["cxr"].shape == (0, H, W, 1) and empty["enh"].shape == (0, H, W, 3)
    with h5py.File(out, "r") as f:
        assert f.attrs["virtual_shards"] == "s.h5.shards"
        assert f["cxr"].is_virtual and f["enh"].is_virtual
        assert {s.file_name for s in f["cxr"].virtual_sources()} == {"s.h5.shards/shard-000000.h5",
                                                                     "s.h5.shards/shard-000002.h5"}
    moved = tmp_path / "b"
    out.parent.rename(moved)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with open_store(moved / "s.h5") as store:
            assert store.read_many([0, 1, 2], "cxr")[:, 0, 0, 0].tolist() == [0, 1, 2]
    finally:
        os.chdir(cwd)


def test_a_new_store_replaces_the_shards_of_the_one_it_overwrites(tmp_path):
    out = tmp_path / "s.h5"
    build(out, pieces_at(tmp_path / "one", make_piece(1), make_piece(1, 1), make_piece(1, 2)), virtual=True)
    build(out, pieces_at(tmp_path / "two", make_piece(2, 5)), virtual=True)
    assert [p.name for p in (tmp_path / "s.h5.shards").iterdir()] == ["shard-000000.h5"]
    with h5py.File(out, "r") as f:
        assert samples(f, "cxr") == [5, 6]
    build(out, pieces_at(tmp_path / "three", make_piece(1, 9)))  # a plain store: no shards left
    assert not (tmp_path / "s.h5.shards").exists()
    with h5py.File(out, "r") as f:
        assert samples(f, "cxr") == [9] and not f["cxr"].is_virtual


def test_the_leftover_of_a_killed_virtual_assembly_is_removed(tmp_path):
    building = tmp_path / ".s.h5.shards.partial"
    building.mkdir()
    (building / "shard-000007.h5").write_bytes(b"half")
    out = tmp_path / "s.h5"
    build(out, pieces_at(tmp_path / "p", make_piece(1)), virtual=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "s.h5", "s.h5.shards"]
    assert [p.name for p in (tmp_path / "s.h5.shards").iterdir()] == ["shard-000000.h5"]
    build(out, pieces_at(tmp_path / "p", make_piece(1)))
    building.mkdir()
    build(out, pieces_at(tmp_path / "p", make_piece(1)))  # a plain assembly cleans it too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "s.h5"]


@pytest.mark.parametrize("virtual", [False, True])
def test_a_failed_assembly_leaves_the_old_store_and_nothing_else(tmp_path, virtual):
    out = tmp_path / "s.h5"
    build(out, pieces_at(tmp_path / "old", make_piece(2, 4)), virtual=virtual)
    broken = make_piece(1, 1)
    del broken["sha256"]  # the second piece fails after the first one's shard is written
    damaged = pieces_at(tmp_path / "new", make_piece(1), broken)
    before = sorted(p.name for p in tmp_path.iterdir())
    shards = sorted(p.name for p in (tmp_path / "s.h5.shards").iterdir()) if virtual else None
    with pytest.raises(KeyError):
        build(out, damaged, virtual=virtual)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if virtual:
        assert sorted(p.name for p in (tmp_path / "s.h5.shards").iterdir()) == shards
    with h5py.File(out, "r") as f:
        assert samples(f, "cxr") == [4, 5]


def test_a_missing_piece_fails_before_anything_is_written(tmp_path):
    with pytest.raises(FileNotFoundError):
        build(tmp_path / "s.h5", [tmp_path / "missing.npz"], virtual=True)
    assert list(tmp_path.iterdir()) == []


def test_a_piece_missing_a_column_fails_and_leaves_nothing(tmp_path):
    piece = make_piece(1)
    del piece["sha256"]
    with pytest.raises(KeyError):
        build(tmp_path / "s.h5", pieces_at(tmp_path / "p", piece))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_the_metadata_columns_are_the_stores(tmp_path):
    assert set(META_COLUMNS) == {"labels", "source_path", "sha256", "orig_width", "orig_height", "orig_mode",
                                 "patient_id", "source"}


# --- random stores -------------------------------------------------------------------------------

def test_a_random_store_has_the_samples_asked_for_and_leaves_no_pieces(tmp_path):
    out = random_store(tmp_path / "r.h5", 130, size=8, seed=4)
    assert out == tmp_path / "r.h5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    with open_store(out) as store:
        assert len(store) == 130 and store.class_names == CLASSES
        assert store.read(129, "cxr").shape == (8, 8, 1)
        labels = store.labels
    assert set(labels.tolist()) == {0, 1, 2}
    rng = np.random.default_rng(4)  # 64 samples at a time, labels drawn first
    assert labels[:64].tolist() == rng.integers(0, 3, 64).tolist()


def test_a_random_store_depends_on_its_seed_only(tmp_path):
    def enh(path):
        with h5py.File(path, "r") as f:
            return f["enh"][:]

    a, b, c = (random_store(tmp_path / f"{n}.h5", 3, size=8, seed=s) for n, s in (("a", 1), ("b", 1), ("c", 2)))
    assert np.array_equal(enh(a), enh(b)) and not np.array_equal(enh(a), enh(c))
    assert enh(a).dtype == np.uint8 and enh(a).shape == (3, 8, 8, 3)


def test_rows_of_a_later_piece_land_after_the_earlier_pieces_rows(tmp_path):
    # offsets that differ from a bitwise or/xor of row and index: 1 + 1 is 2, 1 | 1 is 1
    paths = pieces_at(tmp_path, make_piece(1, 0, masks=[0]), make_piece(2, 1, masks=[0, 1]), make_piece(1, 3, masks=[0]))
    out = tmp_path / "s.h5"
    build(out, paths)
    with h5py.File(out, "r") as f:
        assert f["mask"][:, 0, 0, 0].tolist() == [0, 0, 1, 0]
        assert f["meta/has_mask"][:].tolist() == [False, False, True, False]


def test_the_images_settings_are_keywords_only(tmp_path):
    with pytest.raises(TypeError, match="positional"):
        assemble(tmp_path / "s.h5", [], (H, W), "uint8", "uint8", CLASSES, [], {})
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("column", ["failed_path", "labels", "has_mask"])
def test_a_piece_holding_python_objects_is_refused_unread(tmp_path, column):
    """A piece is data, never code: an object array would be unpickled (code run) on loading."""
    piece = make_piece(2, masks=[0, 1])
    piece[column] = np.array([{"x": 1}, None], dtype=object)
    path = tmp_path / "p.npz"
    write_piece(path, piece)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_piece_failures(path) if column == "failed_path" else build(tmp_path / "s.h5", [path])
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("enh_dtype", ["uint8", "float32"])
def test_a_virtual_store_missing_a_shard_reads_as_zeros_in_hdf5_itself(tmp_path, enh_dtype):
    """What docs/store-format.md says HDF5 does (the product's reader refuses such a store instead)."""
    paths = pieces_at(tmp_path, make_piece(2, 5, enh_dtype=enh_dtype), make_piece(1, 7, enh_dtype=enh_dtype))
    out = tmp_path / "s.h5"
    build(out, paths, virtual=True, enh_dtype=enh_dtype)
    (tmp_path / "s.h5.shards" / "shard-000000.h5").unlink()
    with h5py.File(out, "r") as f:
        assert f["cxr"].fillvalue == 0 and f["enh"].fillvalue == 0
        assert samples(f, "cxr") == [0, 0, 7]
        assert f["enh"][:2].min() == f["enh"][:2].max() == 0 and f["enh"][2, 0, 0].tolist() == [7, 8, 9]


class RunsWhenUnpickled:
    """Unpickling this touches ``marker``: code a crafted piece would run if it were unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("column", ["labels", "has_mask", "failed_path"])
def test_no_code_in_a_piece_runs_when_it_is_assembled(tmp_path, column):
    marker = tmp_path / "code-ran"
    piece = make_piece(2, masks=[0, 1])
    piece[column] = np.array([RunsWhenUnpickled(marker), None], dtype=object)
    path = tmp_path / "p.npz"
    write_piece(path, piece)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_piece_failures(path) if column == "failed_path" else build(tmp_path / "s.h5", [path])
    assert not marker.exists()


def test_a_random_store_starts_over_after_a_killed_one(tmp_path):
    (tmp_path / "r.h5.parts").mkdir()
    (tmp_path / "r.h5.parts" / "piece-000000.npz").write_bytes(b"half")
    random_store(tmp_path / "r.h5", 2, size=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_a_random_store_by_default_is_the_studys_size_and_seed_zero(tmp_path):
    a = random_store(tmp_path / "a.h5", 1)
    b = random_store(tmp_path / "b.h5", 1, size=299, seed=0)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert fa["cxr"].shape == (1, 299, 299, 1) and fa["enh"].shape == (1, 299, 299, 3)
        assert np.array_equal(fa["enh"][:], fb["enh"][:]) and np.array_equal(fa["cxr"][:], fb["cxr"][:])


def test_a_random_store_spans_every_grey_level_with_well_formed_metadata(tmp_path):
    out = random_store(tmp_path / "r.h5", 64, size=8)
    with h5py.File(out, "r") as f:
        for what in ("cxr", "enh"):
            assert f[what][:].min() == 0 and f[what][:].max() == 255, what
    with open_store(out) as store:
        assert store.sha256 == ["0" * 64] * 64
