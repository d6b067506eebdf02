"""What a model sees: stored values scaled, resized, occluded, normalised and served in batches
(``trainer/data.py``), each against a computation by hand on tiny stores (no training)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from datasets import tiny_store

pytest.importorskip("keras")

from phasefeat import PhaseParams, enhance
from phasefeat.io.store import open_store
from trainer.data import (
    OccludedFeatures,
    StoreBatches,
    _resize,
    channel_stats,
    read_inputs,
    scale,
    value_range,
)
from trainer.model import occlusion_mask


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """20 samples of 12 x 16, labels 0, 1, 2, 0, ..., random 0/1 lung masks on the even samples."""
    import h5py

    path = tiny_store(tmp_path_factory.mktemp("data") / "s.h5", n=20, size=(12, 16), masks=True, seed=3)
    with h5py.File(path, "r+") as f:
        f["mask"][...] = np.random.default_rng(3).integers(0, 2, f["mask"].shape, dtype=np.uint8)
    return path


def _stored(path, what, indices=None):
    with open_store(path) as s:
        return s.read_many(np.arange(len(s)) if indices is None else np.asarray(indices), what)


@pytest.mark.parametrize(("dtype", "top"), [("uint8", 255), ("uint16", 65535), ("float16", 1.0),
                                             ("float32", 1.0), ("float64", 1.0)])
def test_scale_and_value_range_map_the_stored_top_to_one(dtype, top):
    assert value_range(dtype) == top and isinstance(value_range(dtype), float)
    batch = np.array([0, top // 2 if top > 1 else 0.5, top], dtype=dtype)
    scaled = scale(batch)
    assert scaled.dtype == np.float32
    assert scaled.tolist() == pytest.approx([0.0, (top // 2) / top if top > 1 else 0.5, 1.0], rel=1e-6)


def test_resize_keeps_a_batch_of_the_size_and_resizes_others_antialiased():
    batch = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    assert _resize(batch, 8) is batch
    constant = np.full((2, 12, 16, 1), 0.25, np.float32)
    out = _resize(constant, 6)
    assert out.shape == (2, 6, 6, 1) and out.dtype == np.float32 and np.allclose(out, 0.25)
    for size in (14, 20):  # between the sides, and up
        assert _resize(constant, size).shape == (2, size, size, 1)
    stripes = np.zeros((1, 12, 12, 1), np.float32)
    stripes[:, :, ::3] = 1.0
    # antialiased: a 3:1 reduction of every third column averages it (1/3 inside); plain bilinear
    # sampling would hit the zero columns only and return 0 everywhere
    assert np.allclose(_resize(stripes, 4)[:, :, 1:3], 1 / 3, atol=1e-6)


def test_occluded_features_black_out_the_box_or_keep_what_they_are_given():
    from phasefeat.tools.phantom import chest_phantom

    cxr = np.stack([chest_phantom((24, 32), seed=s, dtype="uint8") for s in range(2)])[..., None]
    box = occlusion_mask(24, 32, "outside", 0.5)[..., 0]
    want = enhance(cxr[..., 0].astype(np.float32) / 255 * box, out="uint8") * box[..., None]
    derive = OccludedFeatures("outside", 0.5, PhaseParams().to_json(), "uint8")
    assert derive.fraction == 0.5 and isinstance(derive.fraction, float)
    got = derive(cxr)
    assert got.dtype == np.uint8 and np.array_equal(got, want)
    as_float = OccludedFeatures("outside", 0.5, PhaseParams().to_json(), "float32")(cxr)
    assert as_float.dtype == np.float32 and np.allclose(as_float, want / 255, atol=1e-7)
    keep = np.zeros((2, 24, 32, 1), np.uint8)
    keep[:, 4:20, 6:26] = 1
    lungs = OccludedFeatures("non-lungs", 0.5, PhaseParams().to_json(), "uint8")
    by_mask = enhance(cxr[..., 0].astype(np.float32) / 255 * keep[..., 0], out="uint8") * keep
    assert np.array_equal(lungs(cxr, keep), by_mask)
    with pytest.raises(ValueError, match="needs the images' lung masks"):
        lungs(cxr)


@pytest.mark.parametrize("what", ["cxr", "enh"])
def test_read_inputs_blacks_out_the_lungs_or_all_but_them(store, what):
    indices = [2, 3, 4]
    x, masks = _stored(store, what, indices), _stored(store, "mask", indices)
    with open_store(store) as s:
        assert np.array_equal(read_inputs(s, indices, what), x)
        lungs_out = read_inputs(s, indices, what, lung_mode="lungs")
        only_lungs = read_inputs(s, indices, what, lung_mode="non-lungs")
    assert lungs_out.dtype == x.dtype == only_lungs.dtype
    assert np.array_equal(lungs_out, x * (1 - masks)) and np.array_equal(only_lungs, x * masks)


def test_read_inputs_derives_from_the_radiographs_and_their_masks(store):
    calls = []

    def derive(cxr, keep):
        calls.append((cxr, keep))
        return cxr[..., :1] + 1

    indices = [0, 5]
    with open_store(store) as s:
        out = read_inputs(s, indices, "enh", derive, lung_mode="non-lungs")
        plain = read_inputs(s, indices, "enh", derive)
    cxr, keep = calls[0]
    assert np.array_equal(cxr, _stored(store, "cxr", indices)) and np.array_equal(keep, _stored(store, "mask", indices))
    assert np.array_equal(out, cxr + 1) and calls[1][1] is None and np.array_equal(plain, cxr + 1)


def _by_hand(x):
    x = x.astype(np.float64)
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_channel_stats_are_the_mean_and_std_of_the_scaled_images(store, batch_size):
    indices = np.array([7, 1, 12, 4, 19, 0, 9])  # unsorted, 7 = 2 x 3 + 1
    mean, std = channel_stats(store, indices, "enh", batch_size=batch_size)
    want_mean, want_std = _by_hand(_stored(store, "enh", indices) / 255)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (3,)
    assert mean.tolist() == pytest.approx(want_mean.tolist(), rel=1e-6)
    assert std.tolist() == pytest.approx(want_std.tolist(), rel=1e-5)


def test_channel_stats_after_resize_and_mask_and_for_a_constant_input(store, tmp_path):
    indices = np.arange(0, 20, 3)
    mask = occlusion_mask(8, 8, "center", 0.5)
    mean, std = channel_stats(store, indices, "cxr", image_size=8, mask=mask)
    seen = _resize(_stored(store, "cxr", indices).astype(np.float32) / 255, 8) * mask
    want_mean, want_std = _by_hand(seen)
    assert mean.tolist() == pytest.approx(want_mean.tolist(), rel=1e-6)
    assert std.tolist() == pytest.approx(want_std.tolist(), rel=1e-5)
    flat = tiny_store(tmp_path / "flat.h5", n=6, size=8, enh=np.full((6, 8, 8, 3), 51, np.uint8))
    mean, std = channel_stats(flat, np.arange(6), "enh")
    assert mean.tolist() == pytest.approx([0.2] * 3) and std.tolist() == [pytest.approx(1e-6)] * 3


def test_channel_stats_of_lung_masked_and_derived_inputs(store):
    indices = np.array([0, 2, 4, 6])
    masks = _stored(store, "mask", indices)
    mean, _ = channel_stats(store, indices, "cxr", lung_mode="lungs")
    assert mean.tolist() == pytest.approx(_by_hand(_stored(store, "cxr", indices) * (1 - masks) / 255)[0].tolist())
    derive = OccludedFeatures("center", 0.5, PhaseParams().to_json(), "uint8")
    mean, _ = channel_stats(store, indices, "enh", derive=derive)
    with open_store(store) as s:
        derived = derive(s.read_many(indices, "cxr"))
    assert mean.tolist() == pytest.approx(_by_hand(derived / 255)[0].tolist(), rel=1e-6)


def _batches(store, indices, **kwargs):
    labels = np.arange(20) % 3
    return StoreBatches(store, indices, kwargs.pop("what", "enh"), labels, 3, kwargs.pop("label_mode", "int"),
                        kwargs.pop("batch_size", 3), **kwargs)


@pytest.mark.parametrize("label_mode", ["int", "onehot"])
def test_batches_serve_the_indices_in_order_with_their_labels(store, label_mode):
    indices = np.array([9, 2, 14, 5, 11, 0, 17])
    ds = _batches(store, indices, label_mode=label_mode)
    assert len(ds) == math.ceil(7 / 3) == 3 and ds.num_batches == 3
    served = []
    for i in range(len(ds)):
        x, y = ds[i]
        chosen = np.sort(indices[3 * i:3 * i + 3])  # read in file order within a batch
        assert np.array_equal(x, _stored(store, "enh", chosen)) and x.dtype == np.uint8
        if label_mode == "int":
            assert y.dtype == np.int32 and y.tolist() == (chosen % 3).tolist()
        else:
            assert y.dtype == np.float32 and np.array_equal(y, np.eye(3, dtype=np.float32)[chosen % 3])
        served += chosen.tolist()
    assert sorted(served) == sorted(indices.tolist())
    ds.close()


def test_training_batches_reshuffle_every_epoch_from_the_seed(store):
    indices = np.arange(20)
    ds = _batches(store, indices, shuffle=True, seed=4)
    orders = []
    for epoch in range(3):
        want = indices[np.random.default_rng((4, epoch)).permutation(20)]
        assert np.array_equal(ds._order, want) and ds.epoch == epoch
        orders.append(ds._order.copy())
        ds.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1])
    ds.set_epoch(1)
    assert np.array_equal(ds._order, orders[1]) and len(ds) == 7  # 20 samples in batches of 3
    assert np.array_equal(_batches(store, indices, seed=4)._order, indices)  # no shuffle: index order


def test_augmentation_flips_and_shifts_by_the_seed_epoch_and_batch(store):
    indices = np.arange(6)
    plain, augmented = _batches(store, indices, batch_size=6), _batches(store, indices, batch_size=6, augment=True,
                                                                          seed=2)
    x = plain[0][0]
    for epoch in (0, 1):
        augmented.set_epoch(epoch)
        rng = np.random.default_rng((2, epoch, 0, 7))
        flip = rng.random(6) < 0.5
        shifts = rng.integers(-4, 5, size=(6, 2))
        want = x.copy()
        want[flip] = want[flip, :, ::-1]
        for k, (dy, dx) in enumerate(shifts):
            want[k] = np.roll(want[k], (int(dy), int(dx)), axis=(0, 1))
        got = augmented[0][0]
        assert np.array_equal(got, want) and np.array_equal(augmented[0][0], got)
    assert np.array_equal(plain[0][0], x)  # the stored batch itself is never changed


def test_batches_resize_derive_and_black_out_like_the_statistics(store):
    indices = np.array([0, 2, 4, 6])
    for size in (8, 14, 20):  # down, between the sides (12 x 16), up
        resized = _batches(store, indices, what="cxr", batch_size=4, image_size=size)[0][0]
        want = _resize(_stored(store, "cxr", indices).astype(np.float32), size)
        assert resized.shape == (4, size, size, 1) and np.allclose(resized, want) and resized.max() > 1  # stored scale
    lungs = _batches(store, indices, what="cxr", batch_size=4, lung_mode="lungs")[0][0]
    assert np.array_equal(lungs, _stored(store, "cxr", indices) * (1 - _stored(store, "mask", indices)))
    derive = OccludedFeatures("center", 0.5, PhaseParams().to_json(), "uint8")
    derived = _batches(store, indices, batch_size=4, derive=derive)[0][0]
    assert np.array_equal(derived, derive(_stored(store, "cxr", indices)))


def test_batches_open_the_store_once_per_process_and_close_it(store):
    ds = _batches(store, np.arange(6))
    ds[0]
    first = ds._store
    ds[1]
    assert ds._store is first and ds._pid == os.getpid()
    for other in (-1, os.getpid() + 1):  # as in a forked worker, whose pid may be lower or higher
        ds._pid = other  # the parent's handle must not be used
        ds[0]
        assert ds._store is not first and ds._pid == os.getpid()
        first = ds._store
    ds.close()
    assert ds._store is None
    ds.close()  # twice is fine


def test_batches_refuse_an_unknown_input_and_pass_keras_options_on(store):
    with pytest.raises(ValueError, match=r"input must be one of \['cxr', 'enh'\], got 'mask'"):
        _batches(store, np.arange(3), what="mask")
    ds = _batches(store, np.arange(3), workers=2, use_multiprocessing=False, max_queue_size=5)
    assert (ds.workers, ds.use_multiprocessing, ds.max_queue_size) == (2, False, 5)


def test_a_batch_already_at_the_model_s_size_is_served_as_stored(tmp_path):
    """No resize, no float32 copy: a quarter of the bytes through the reader queue."""
    path = tiny_store(tmp_path / "square.h5", n=4, size=8)
    ds = StoreBatches(path, np.arange(4), "enh", np.arange(4) % 3, 3, "int", 4, image_size=8)
    x = ds[0][0]
    assert x.dtype == np.uint8 and np.array_equal(x, _stored(path, "enh"))
    ds.close()


def test_without_a_seed_batches_shuffle_and_augment_as_with_seed_0(store):
    default = _batches(store, np.arange(9), shuffle=True, augment=True)
    zero = _batches(store, np.arange(9), shuffle=True, augment=True, seed=0)
    assert np.array_equal(default._order, zero._order) and np.array_equal(default[1][0], zero[1][0])


def test_masks_stored_as_0_and_255_black_out_the_same_pixels(store, tmp_path):
    import shutil

    import h5py

    copy = tmp_path / "255.h5"
    shutil.copy(store, copy)
    with h5py.File(copy, "r+") as f:
        f["mask"][...] = f["mask"][...] * 255
    indices = [0, 2, 4]
    with open_store(store) as a, open_store(copy) as b:
        for mode in ("lungs", "non-lungs"):
            assert np.array_equal(read_inputs(a, indices, "cxr", lung_mode=mode),
                                  read_inputs(b, indices, "cxr", lung_mode=mode))


def test_batches_take_their_arguments_by_keyword_as_a_run_passes_them(store):
    """``trainer.experiment`` builds its readers from one dict of keyword arguments."""
    common = {"store_path": store, "what": "enh", "labels": np.arange(20) % 3, "n_classes": 3,
              "label_mode": "int", "batch_size": 4}
    ds = StoreBatches(indices=np.arange(8), shuffle=True, seed=1, **common)
    assert len(ds) == 2 and ds.shuffle and ds.seed == 1
    with pytest.raises(TypeError):
        StoreBatches(store, np.arange(8), "enh", np.arange(20) % 3, 3, "int", 4, True)  # shuffle by keyword only
