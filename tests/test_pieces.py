"""One piece of a conversion, in process: options, file reading, the piece's arrays and failure rows.

Fast unit tests of :mod:`phasefeat.io.pieces` (no worker process, no store): each behaviour a
conversion shows through a piece is checked here on a few small files.
"""

import dataclasses
import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from phasefeat import PhaseParams, enhance
from phasefeat.io import pieces
from phasefeat.io.imageio import ImageReadError, fit, read_image, resize, square
from phasefeat.io.pieces import (
    MAX_DASK_PIECE,
    MAX_PIECE,
    MAX_SIZE,
    MIN_SIZE,
    ConvertOptions,
    auto_piece_size,
    conversion_memory,
    enhance_to_store,
    feature_image,
    finish_piece,
    one_line,
    process_piece,
    read_regular_file,
    report_progress_to,
)
from phasefeat.tools.phantom import chest_phantom

SIZE = 16


# --- one_line ---------------------------------------------------------------------------------

def test_one_line_joins_lines_and_collapses_spaces():
    assert one_line("first\n  second\tthird  \r\n") == "first second third"


def test_one_line_drops_object_addresses_and_masks_long_hex():
    assert one_line("<object at 0x7f3a2b1c9d00> failed") == "<object > failed"
    assert one_line("pointer 0xdeadbeef12 lost") == "pointer 0x... lost"


def test_one_line_keeps_short_hex_and_words_that_only_contain_at():
    # Six hex digits or more are an address; fewer are a value (a DICOM tag, a flag).
    assert one_line("tag 0x0010 flag 0xABCDE") == "tag 0x0010 flag 0xABCDE"
    assert one_line("cat 0x12") == "cat 0x12"
    assert one_line("flat0x1234567") == "flat0x..."


def test_one_line_accepts_an_exception():
    assert one_line(ValueError("a\nb")) == "a b"


# --- read_regular_file ------------------------------------------------------------------------

def test_a_regular_file_is_read_whole_up_to_the_limit(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, 100) == b"x" * 100


def test_a_file_over_the_limit_is_refused_with_both_sizes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1001)
    with pytest.raises(ImageReadError, match=r"exceeds the size limit \(1,001 > 1,000 bytes; raise --max-bytes"):
        read_regular_file(path, 1000)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    with pytest.raises(ImageReadError, match="^not a regular file$"):
        read_regular_file(path, 10)


@pytest.mark.parametrize(("make", "reason"), [("missing", "No such file or directory"),
                                              ("folder", "Is a directory")])
def test_unreadable_paths_say_why_in_words(tmp_path, make, reason):
    path = tmp_path / "x.png"
    if make == "folder":
        path.mkdir()
    with pytest.raises(ImageReadError, match=rf"^cannot read file \({reason}\)$"):
        read_regular_file(path, 10)


def test_an_os_error_without_strerror_is_still_named(tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise OSError("device gone")

    monkeypatch.setattr(pieces.os, "fstat", failing)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    with pytest.raises(ImageReadError, match=r"^cannot read file \(device gone\)$"):
        read_regular_file(path, 10)


# --- ConvertOptions ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [MIN_SIZE, 299, MAX_SIZE])
def test_sizes_in_range_are_accepted(size):
    assert ConvertOptions(size=size).size == size


@pytest.mark.parametrize("size", [MIN_SIZE - 1, MAX_SIZE + 1, 0, -5, True, 32.0, "32"])
def test_sizes_out_of_range_or_not_integers_are_refused(size):
    with pytest.raises(ValueError, match=rf"size must be an integer in {MIN_SIZE}..{MAX_SIZE}"):
        ConvertOptions(size=size)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("fit", "squash", r"fit must be one of \['stretch', 'pad', 'crop'\], got 'squash'"),
    ("cxr_dtype", "float32", r"cxr_dtype must be one of \['uint8', 'uint16'\]"),
    ("enh_dtype", "uint16", r"enh_dtype must be one of \['uint8', 'float16', 'float32'\]"),
    ("piece_size", 0, "piece_size, max_pixels and max_bytes must be positive"),
    ("max_pixels", 0, "piece_size, max_pixels and max_bytes must be positive"),
    ("max_bytes", 0, "piece_size, max_pixels and max_bytes must be positive"),
])
def test_each_option_is_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        ConvertOptions(**{field: value})


@pytest.mark.parametrize("field", ["piece_size", "max_pixels", "max_bytes"])
def test_one_is_the_smallest_count(field):
    assert getattr(ConvertOptions(**{field: 1}), field) == 1


@pytest.mark.parametrize("how", ["stretch", "pad", "crop"])
@pytest.mark.parametrize("dtypes", [("uint8", "uint8"), ("uint16", "float16"), ("uint8", "float32")])
def test_every_fit_and_storage_type_is_accepted(how, dtypes):
    opts = ConvertOptions(fit=how, cxr_dtype=dtypes[0], enh_dtype=dtypes[1])
    assert (opts.fit, opts.cxr_dtype, opts.enh_dtype) == (how, *dtypes)


@pytest.mark.parametrize("at", [MIN_SIZE - 1, MAX_SIZE + 1, True, "64", 64.0, "Native"])
def test_a_working_size_out_of_range_is_refused(at):
    with pytest.raises(ValueError, match=rf"features_at must be 'native' or a size in {MIN_SIZE}..{MAX_SIZE}"):
        ConvertOptions(features_at=at)


@pytest.mark.parametrize(("at", "kept", "label"), [
    ("native", "native", "native"), (None, None, "store size"), (MIN_SIZE, MIN_SIZE, str(MIN_SIZE)),
    (MAX_SIZE, MAX_SIZE, str(MAX_SIZE)), (64, 64, "64"),
    (299, None, "store size"),  # the store size said explicitly is the default's identity
])
def test_working_sizes_and_their_labels(at, kept, label):
    opts = ConvertOptions(features_at=at)
    assert opts.features_at == kept
    assert opts.features_label == label
    assert opts == ConvertOptions(features_at=kept)


def test_an_automatic_piece_size_is_chosen_only_when_none_was_given():
    assert ConvertOptions(piece_size=7).with_piece_size_for(10_000) == ConvertOptions(piece_size=7)
    chosen = ConvertOptions().with_piece_size_for(10_000)
    assert chosen.piece_size == MAX_PIECE
    assert ConvertOptions().with_piece_size_for(10_000, distributed=True).piece_size == MAX_DASK_PIECE
    assert dataclasses.replace(chosen, piece_size=None) == ConvertOptions()


@pytest.mark.parametrize(("samples", "distributed", "size"), [
    (0, False, 4), (1, False, 4), (64, False, 4), (65, False, 5), (160, False, 10),
    (1024, False, 64), (1025, False, 64), (18_685, False, 64),
    (0, True, 4), (2000, True, 125), (4096, True, 256), (4097, True, 256), (18_685, True, 256),
])
def test_automatic_piece_sizes_cut_a_conversion_into_sixteen(samples, distributed, size):
    assert auto_piece_size(samples, distributed) == size


# --- conversion_memory --------------------------------------------------------------------------

def expected_memory(size, cxr, enh, at, piece, workers):
    """The estimate's model, term by term (the docstring of ``conversion_memory``)."""
    px = size * size
    stored = px * (cxr + 3 * enh + 1)  # radiograph, three maps, mask
    held = px * (4 + 4 + 1 + 3 * enh + cxr) + stored  # float32 twice, mask, ENH, CXR, pickled copy
    working = 170 * at * at + 2 * 3 * 4 * px
    per_worker = piece * held + working + 200 * 2**20
    return workers * per_worker + workers * 2 * piece * 2 * stored + 200 * 2**20


@pytest.mark.parametrize(("kwargs", "terms"), [
    ({}, (299, 1, 1, 299, 64)),
    ({"features_at": None}, (299, 1, 1, 299, 64)),
    ({"size": 64, "cxr_dtype": "uint16", "enh_dtype": "float32", "features_at": 512, "piece_size": 10},
     (64, 2, 4, 512, 10)),
    ({"size": 128, "enh_dtype": "float16", "piece_size": 1}, (128, 1, 2, 128, 1)),
])
@pytest.mark.parametrize("workers", [1, 3])
def test_the_memory_estimate_adds_up_what_each_process_holds(kwargs, terms, workers):
    assert conversion_memory(ConvertOptions(**kwargs), workers) == expected_memory(*terms, workers)


# --- storage types and feature images ----------------------------------------------------------

def test_quantising_rounds_to_nearest_and_clips():
    values = np.array([-0.5, 0.0, 0.6 / 255, 0.4 / 255, 1.0, 1.5], np.float32)
    assert pieces._quantise(values, "uint8").tolist() == [0, 0, 1, 0, 255, 255]
    assert pieces._quantise(values, "uint16").tolist() == [0, 0, 154, 103, 65535, 65535]
    floats = pieces._quantise(values, "float16")
    assert floats.dtype == np.float16 and np.allclose(floats, values, atol=1e-3)


@pytest.fixture
def phantom():
    return (chest_phantom((40, 28), seed=3).astype(np.float32) / 255)


def test_the_feature_image_follows_features_at(phantom):
    assert feature_image(phantom, ConvertOptions(size=SIZE, features_at=None)) is None
    for how in ("stretch", "pad", "crop"):
        native = feature_image(phantom, ConvertOptions(size=SIZE, fit=how))
        assert np.array_equal(native, np.clip(square(phantom, how), 0, 1))
        working = feature_image(phantom, ConvertOptions(size=SIZE, fit=how, features_at=24))
        assert np.array_equal(working, np.clip(fit(phantom, 24, how), 0, 1))


def test_feature_images_are_clipped_to_the_unit_range():
    ringing = np.zeros((30, 30), np.float32)
    ringing[10:20, 10:20] = 1  # a sharp square: Lanczos overshoots on both sides
    working = feature_image(ringing, ConvertOptions(size=SIZE, features_at=12))
    assert fit(ringing, 12, "stretch").max() > 1 and fit(ringing, 12, "stretch").min() < 0
    assert working.min() == 0 and working.max() == 1


def test_an_empty_batch_gives_empty_maps_of_the_storage_type():
    out = enhance_to_store(np.zeros((0, 20, 20), np.float32), PhaseParams(), ConvertOptions(size=SIZE,
                           enh_dtype="float16"), "numpy")
    assert out.shape == (0, SIZE, SIZE, 3) and out.dtype == np.float16


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_maps_at_the_store_size_are_the_enhancement_itself(phantom, dtype):
    batch = np.stack([fit(phantom, SIZE), fit(phantom[::-1], SIZE)])
    out = enhance_to_store(batch, PhaseParams(), ConvertOptions(size=SIZE, enh_dtype=dtype), "numpy")
    maps = enhance(batch, PhaseParams())
    want = np.rint(maps * 255).astype(np.uint8) if dtype == "uint8" else maps.astype(dtype)
    assert out.dtype == np.dtype(dtype)
    assert np.array_equal(out, want)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_maps_elsewhere_are_resized_with_the_radiographs_filter(phantom, dtype):
    batch = square(phantom, "pad")[None]
    out = enhance_to_store(batch, PhaseParams(), ConvertOptions(size=SIZE, enh_dtype=dtype), "numpy")
    maps = enhance(batch, PhaseParams())[0]
    resized = np.clip(np.stack([resize(maps[..., c], (SIZE, SIZE)) for c in range(3)], axis=-1), 0, 1)
    want = np.rint(resized * 255).astype(np.uint8) if dtype == "uint8" else resized
    assert out.shape == (1, SIZE, SIZE, 3)
    assert np.array_equal(out[0], want)
    assert out.min() >= 0 and out.max() <= (255 if dtype == "uint8" else 1)


# --- process_piece -----------------------------------------------------------------------------

def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path.name


@pytest.fixture
def folder(tmp_path):
    """Two good radiographs (8- and 16-bit, non-square), a mask, and files that fail."""
    root = tmp_path / "raw"
    save(root / "a.png", chest_phantom((40, 28), seed=1))
    save(root / "b.png", chest_phantom((30, 36), seed=2, dtype="uint16"))
    lung = np.zeros((40, 28), np.uint8)
    lung[8:32, 4:24] = 255
    save(root / "a_mask.png", lung)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    save(root / "small.png", chest_phantom((MIN_SIZE - 1, 20), seed=4))
    save(root / "edge.png", chest_phantom((MIN_SIZE, MIN_SIZE), seed=5))
    return root


def task(root, entries, enhance_here=True, piece_id=3, **options):
    opts = ConvertOptions(**{"size": SIZE, **options})
    return {"root": str(root), "options": dataclasses.asdict(opts), "params_json": PhaseParams().to_json(),
            "enhance_here": enhance_here, "piece_id": piece_id, "entries": entries, "batch_size": 64}


def test_a_piece_holds_each_good_file_with_its_metadata(folder):
    entries = [(0, "a.png", 2, "p1", "kaggle"), (5, "b.png", 0, "", "")]
    piece = process_piece(task(folder, entries, cxr_dtype="uint16", features_at=None))
    assert piece["piece_id"] == 3 and piece["piece_id"].dtype == np.int64
    assert piece["index"].tolist() == [0, 5] and piece["index"].dtype == np.int64
    assert piece["labels"].tolist() == [2, 0] and piece["labels"].dtype == np.int32
    assert piece["source_path"].tolist() == ["a.png", "b.png"]
    assert piece["patient_id"].tolist() == ["p1", ""]
    assert piece["source"].tolist() == ["kaggle", ""]
    assert piece["sha256"].tolist() == [hashlib.sha256((folder / n).read_bytes()).hexdigest()
                                        for n in ("a.png", "b.png")]
    assert piece["orig_width"].tolist() == [28, 36] and piece["orig_height"].tolist() == [40, 30]
    assert piece["orig_width"].dtype == piece["orig_height"].dtype == np.int32
    assert piece["orig_mode"].tolist() == ["L", "I;16"]
    assert piece["failed_path"].tolist() == [] and piece["failed_reason"].tolist() == []
    for k, name in enumerate(("a.png", "b.png")):
        want = np.rint(np.clip(fit(read_image(folder / name).pixels, SIZE), 0, 1) * 65535).astype(np.uint16)
        assert np.array_equal(piece["cxr"][k, ..., 0], want)
    assert piece["cxr"].shape == (2, SIZE, SIZE, 1) and piece["cxr"].dtype == np.uint16
    grey = np.stack([fit(read_image(folder / n).pixels, SIZE) for n in ("a.png", "b.png")])
    assert np.array_equal(piece["enh"], enhance(np.clip(grey, 0, 1), PhaseParams(), out="uint8"))


def test_masks_are_fitted_like_their_radiograph_and_flagged(folder):
    entries = [(0, "a.png", 0, "", "", "a_mask.png"), (1, "b.png", 1, "", ""), (2, "b.png", 1, "", "", "")]
    piece = process_piece(task(folder, entries, fit="pad"))
    assert piece["has_mask"].tolist() == [True, False, False] and piece["has_mask"].dtype == bool
    assert piece["mask"].shape == (3, SIZE, SIZE, 1) and piece["mask"].dtype == np.uint8
    want = fit(read_image(folder / "a_mask.png").pixels, SIZE, "pad") > 0.5
    assert np.array_equal(piece["mask"][0, ..., 0], want.astype(np.uint8))
    assert 0 < piece["mask"][0].sum() < SIZE * SIZE
    assert not piece["mask"][1:].any()


def test_a_mask_is_thresholded_at_one_half(tmp_path):
    grey = np.array([[127, 128] * 4] * 8, np.uint8)  # 127/255 < 0.5 < 128/255
    save(tmp_path / "m.png", grey)
    mask = pieces._read_mask(tmp_path / "m.png", ConvertOptions(size=8))
    assert mask.shape == (8, 8, 1)
    assert mask[..., 0].tolist() == [[0, 1] * 4] * 8


def test_each_failing_file_is_a_row_with_its_reason(folder):
    entries = [(0, "broken.png", 0, "", ""), (1, "missing.png", 0, "", ""), (2, "small.png", 1, "", ""),
               (3, "edge.png", 1, "", ""), (4, "a.png", 0, "", "", "missing_mask.png")]
    piece = process_piece(task(folder, entries))
    assert piece["index"].tolist() == [3]  # 8 pixels on a side is enough, 7 is not
    assert piece["failed_path"].tolist() == ["broken.png", "missing.png", "small.png", "a.png"]
    reasons = piece["failed_reason"].tolist()
    assert reasons[0].startswith("truncated or corrupt PNG")
    assert reasons[1] == "cannot read file (No such file or directory)"
    assert reasons[2] == f"image smaller than {MIN_SIZE} pixels on a side (20x{MIN_SIZE - 1})"
    assert reasons[3] == "its lung mask missing_mask.png: cannot read file (No such file or directory)"
    assert all("\n" not in r for r in reasons)


def test_a_file_larger_than_max_bytes_fails_before_it_is_decoded(folder):
    limit = (folder / "a.png").stat().st_size - 1
    piece = process_piece(task(folder, [(0, "a.png", 0, "", ""), (1, "edge.png", 0, "", "")], max_bytes=limit))
    assert piece["failed_path"].tolist() == ["a.png"]
    assert "exceeds the size limit" in piece["failed_reason"][0]
    assert piece["index"].tolist() == [1]


def test_an_unexpected_error_is_a_row_naming_its_type(folder, monkeypatch):
    def broken_fit(pixels, size, how="stretch"):
        if pixels.shape == (40, 28):
            raise ZeroDivisionError("odd\nimage")
        return fit(pixels, size, how)

    monkeypatch.setattr(pieces, "fit", broken_fit)
    piece = process_piece(task(folder, [(0, "a.png", 0, "", ""), (1, "b.png", 0, "", "")]))
    assert piece["failed_reason"].tolist() == ["could not be processed (ZeroDivisionError: odd image)"]
    assert piece["source_path"].tolist() == ["b.png"]


def test_a_piece_where_every_file_fails_has_empty_arrays_of_the_right_shape(folder):
    for here in (True, False):
        piece = process_piece(task(folder, [(0, "broken.png", 0, "", "")], enhance_here=here,
                                   enh_dtype="float16"))
        assert piece["cxr"].shape == (0, SIZE, SIZE, 1) and piece["cxr"].dtype == np.uint8
        assert piece["mask"].shape == (0, SIZE, SIZE, 1) and piece["mask"].dtype == np.uint8
        assert piece["labels"].shape == (0,) and piece["failed_path"].tolist() == ["broken.png"]
        if here:
            assert piece["enh"].shape == (0, SIZE, SIZE, 3) and piece["enh"].dtype == np.float16
        else:
            assert piece["features"] == []
            finished = finish_piece(piece, task(folder, [], enh_dtype="float16"), "numpy")
            assert finished["enh"].shape == (0, SIZE, SIZE, 3) and finished["enh"].dtype == np.float16


@pytest.mark.parametrize("features_at", [None, "native", 24])
def test_a_piece_decoded_for_the_gpu_keeps_feature_images_and_finishes_to_the_cpu_result(folder, features_at):
    entries = [(0, "a.png", 0, "", ""), (1, "b.png", 1, "", ""), (2, "edge.png", 1, "", "")]
    cpu = process_piece(task(folder, entries, features_at=features_at))
    gpu = process_piece(task(folder, entries, enhance_here=False, features_at=features_at))
    assert "enh" not in gpu
    opts = ConvertOptions(size=SIZE, features_at=features_at)
    want = [np.clip(fit(read_image(folder / e[1]).pixels, SIZE), 0, 1) if features_at is None
            else feature_image(read_image(folder / e[1]).pixels, opts) for e in entries]
    assert len(gpu["features"]) == 3
    for got, image in zip(gpu["features"], want, strict=True):
        assert np.array_equal(got, image)
    finished = finish_piece(gpu, task(folder, entries, enhance_here=False, features_at=features_at), "numpy")
    assert "features" not in finished
    assert np.array_equal(finished["enh"], cpu["enh"])


def test_a_piece_with_its_maps_is_returned_as_it_is():
    piece = {"enh": np.ones((1, 2, 2, 3))}
    assert finish_piece(piece, {}, "numpy") is piece


def test_feature_images_go_through_in_runs_of_one_shape_and_at_most_a_batch(monkeypatch):
    calls = []

    def record(batch, params, opts, backend):
        calls.append((batch.shape, backend, batch[:, 0, 0].tolist()))
        return np.full((len(batch), SIZE, SIZE, 3), len(calls), np.uint8)

    monkeypatch.setattr(pieces, "enhance_to_store", record)
    images = [np.full(shape, k, np.float32) for k, shape in
              enumerate([(9, 9), (9, 9), (9, 9), (10, 9), (9, 9), (9, 9)])]
    t = task("unused", []) | {"batch_size": 2}
    piece = finish_piece({"features": images}, t, "cupy")
    assert calls == [((2, 9, 9), "cupy", [0, 1]), ((1, 9, 9), "cupy", [2]), ((1, 10, 9), "cupy", [3]),
                     ((2, 9, 9), "cupy", [4, 5])]
    assert piece["enh"][:, 0, 0, 0].tolist() == [1, 1, 2, 3, 4, 4]


def test_the_batch_size_defaults_to_64(monkeypatch):
    sizes = []
    monkeypatch.setattr(pieces, "enhance_to_store",
                        lambda batch, *a: sizes.append(len(batch)) or np.zeros((len(batch), SIZE, SIZE, 3)))
    t = task("unused", [])
    del t["batch_size"]
    finish_piece({"features": [np.zeros((9, 9), np.float32)] * 300}, t, "numpy")
    assert sizes == [64, 64, 64, 64, 44]  # past 256 images too (small integers are shared objects)


def test_progress_ticks_once_per_file_converted_or_failed(folder):
    ticks = []
    report_progress_to(ticks.append)
    try:
        process_piece(task(folder, [(0, "a.png", 0, "", ""), (1, "broken.png", 0, "", ""),
                                    (2, "a.png", 0, "", "", "missing_mask.png")], piece_id=7))
    finally:
        report_progress_to(None)
    assert ticks == [7, 7, 7]
    process_piece(task(folder, [(0, "edge.png", 0, "", "")]))
    assert ticks == [7, 7, 7]  # stopped


def test_a_batch_larger_than_256_images_is_cut_at_its_size(monkeypatch):
    sizes = []
    monkeypatch.setattr(pieces, "enhance_to_store",
                        lambda batch, *a: sizes.append(len(batch)) or np.zeros((len(batch), SIZE, SIZE, 3)))
    finish_piece({"features": [np.zeros((9, 9), np.float32)] * 300}, task("unused", []) | {"batch_size": 257},
                 "numpy")
    assert sizes == [257, 43]


def test_a_run_of_one_shape_after_another_is_cut_at_the_batch_size(monkeypatch):
    sizes = []
    monkeypatch.setattr(pieces, "enhance_to_store",
                        lambda batch, *a: sizes.append(batch.shape) or np.zeros((len(batch), SIZE, SIZE, 3)))
    images = [np.zeros((10, 9), np.float32)] + [np.zeros((9, 9), np.float32)] * 5
    finish_piece({"features": images}, task("unused", []) | {"batch_size": 4}, "numpy")
    assert sizes == [(1, 10, 9), (4, 9, 9), (1, 9, 9)]


def test_maps_at_the_store_size_are_quantised_where_they_are_computed(phantom, monkeypatch):
    """On a GPU, ``out="uint8"`` quantises on the device: a quarter of the float32 maps' transfer."""
    calls = []

    def recording(images, params, **kwargs):
        calls.append(kwargs)
        return enhance(images, params, **kwargs)

    monkeypatch.setattr("phasefeat.maths.features.enhance", recording)
    batch = fit(phantom, SIZE)[None]
    enhance_to_store(batch, PhaseParams(), ConvertOptions(size=SIZE), "numpy")
    enhance_to_store(batch, PhaseParams(), ConvertOptions(size=SIZE, enh_dtype="float16"), "numpy")
    enhance_to_store(square(phantom, "pad")[None], PhaseParams(), ConvertOptions(size=SIZE), "numpy")
    assert calls == [{"backend": "numpy", "out": "uint8"}, {"backend": "numpy"}, {"backend": "numpy"}]


@pytest.mark.parametrize(("size", "accepted"), [(16384, True), (16385, False)])
def test_the_largest_size_is_16384(size, accepted):
    if accepted:
        assert ConvertOptions(size=size, features_at=size).size == size
    else:
        with pytest.raises(ValueError, match="must be"):
            ConvertOptions(size=size)
        with pytest.raises(ValueError, match="must be"):
            ConvertOptions(features_at=size)


def test_by_default_files_over_256_mib_are_refused_before_they_are_read(tmp_path):
    """Sparse files: the limit is checked on the file's size, and a file at the limit is read."""
    at, over = tmp_path / "at.png", tmp_path / "over.png"
    for path, size in ((at, 256 * 2**20), (over, 256 * 2**20 + 1)):
        with open(path, "wb") as handle:
            handle.truncate(size)
    assert ConvertOptions().max_bytes == 256 * 2**20
    piece = process_piece(task(tmp_path, [(0, "at.png", 0, "", ""), (1, "over.png", 0, "", "")]))
    reasons = dict(zip(piece["failed_path"].tolist(), piece["failed_reason"].tolist(), strict=True))
    assert reasons["over.png"] == ("file exceeds the size limit (268,435,457 > 268,435,456 bytes; raise --max-bytes if "
                                   "it is genuine)")
    assert reasons["at.png"].startswith("not an image")


def test_the_command_lines_default_limits_are_the_librarys():
    from phasefeat.cli import cli
    from phasefeat.io.imageio import DEFAULT_MAX_PIXELS

    params = {p.name: p for p in cli.commands["convert"].params}
    assert params["max_bytes"].default == pieces.DEFAULT_MAX_BYTES == ConvertOptions().max_bytes
    assert params["max_pixels"].default == DEFAULT_MAX_PIXELS == ConvertOptions().max_pixels


def test_a_mask_pixel_at_exactly_one_half_is_outside_the_lung(tmp_path):
    """Decided: a lung pixel is one above half the mask's range (a float mask may hold 0.5 exactly)."""
    grey = np.zeros((8, 8), np.float32)
    grey[:, 2:4], grey[:, 4:] = 0.5, 1.0
    Image.fromarray(grey, mode="F").save(tmp_path / "m.tif")
    mask = pieces._read_mask(tmp_path / "m.tif", ConvertOptions(size=8))
    assert mask[0, :, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_options_are_values_that_can_key_a_lookup():
    assert hash(ConvertOptions(size=64)) == hash(ConvertOptions(size=64))
    assert {ConvertOptions(size=64): "a"}[ConvertOptions(size=64)] == "a"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ConvertOptions().size = 64


def test_an_automatic_piece_size_is_for_local_workers_unless_asked():
    assert auto_piece_size(18_685) == MAX_PIECE == 64


def test_a_feature_image_is_clipped_whatever_it_is_given():
    grey = np.array([[-0.5, 0.2], [0.7, 1.5]], np.float32)
    for at in ("native", 8):
        image = feature_image(grey, ConvertOptions(size=SIZE, features_at=at))
        assert image.min() >= 0 and image.max() <= 1
    assert feature_image(grey, ConvertOptions(size=SIZE)).tolist() == [[0.0, pytest.approx(0.2)],
                                                                        [pytest.approx(0.7), 1.0]]
