"""ENH = [LwPA, LPE, ELEA]: output contract and the invariances that survive ELEA."""

import numpy as np
import pytest

from phasefeat import PhaseParams, enhance
from phasefeat.tools.phantom import chest_phantom


@pytest.fixture(scope="module")
def picture():
    return chest_phantom((95, 121), seed=11, dtype="uint8")


def channel(enh, params, name):
    return enh[..., params.channel_order.index(name)]


def test_output_contract(backend_name, radiograph, preset):
    enh = enhance(radiograph, preset, backend=backend_name)
    assert enh.shape == (*radiograph.shape, 3) and enh.dtype == np.float32
    assert enh.min() >= 0 and enh.max() <= 1
    u8 = enhance(radiograph, preset, backend=backend_name, out="uint8")
    assert u8.dtype == np.uint8
    for name in ("lwpa", "lpe"):  # min-max scaled channels span the full range
        assert channel(u8, preset, name).min() == 0 and channel(u8, preset, name).max() == 255
    assert channel(u8, preset, "elea").max() == 255
    assert np.array_equal(u8, np.clip(np.rint(enh.astype(np.float64) * 255), 0, 255).astype(np.uint8)) \
        or np.mean(u8 != np.rint(enh * 255)) < 1e-4  # rint of the same numbers, up to x/255*255 rounding


def test_float64_output(backend_name, picture):
    enh = enhance(picture, backend=backend_name, dtype="float64")
    assert enh.dtype == np.float64


@pytest.mark.parametrize(("a", "b"), [(3.0, 50.0), (0.002, -1.0)])
def test_affine_invariance(backend_name, radiograph, a, b, preset):
    e1 = enhance(radiograph, preset, backend=backend_name, dtype="float64")
    e2 = enhance(a * radiograph + b, preset, backend=backend_name, dtype="float64")
    assert np.abs(e1 - e2).max() * 255 < 1e-9


def test_negation_flips_lwpa_and_polarity_0_lpe(backend_name, radiograph, preset):
    """Spec 5.5: -I negates LwPA; with polarity 0 PE is unchanged, so LPE is negated too."""
    e1 = enhance(radiograph, preset, backend=backend_name, dtype="float64")
    e2 = enhance(-radiograph, preset, backend=backend_name, dtype="float64")
    flipped = ("lwpa", "lpe") if preset.polarity == 0 else ("lwpa",)
    for name in flipped:
        assert np.abs(channel(e2, preset, name) - (1 - channel(e1, preset, name))).max() * 255 < 1e-9


def test_shift_equivariance_with_wrap_closing(backend_name, picture):
    params = PhaseParams(closing_border="wrap")
    img = picture.astype(np.float64)
    e1 = enhance(img, params, backend=backend_name, dtype="float64")
    e2 = enhance(np.roll(img, (13, -40), axis=(0, 1)), params, backend=backend_name, dtype="float64")
    assert np.abs(np.roll(e1, (13, -40), axis=(0, 1)) - e2).max() * 255 < 1e-9


@pytest.mark.parametrize("compute", ["float32", "float64"])
def test_input_dtypes_agree(backend_name, picture, compute):
    versions = [picture, picture.astype(np.uint16) * 257, picture.astype(np.float32) / 255,
                picture.astype(np.float64)]
    outs = [enhance(v, backend=backend_name, dtype=compute, out="uint8").astype(int) for v in versions]
    for other in outs[1:]:
        diff = np.abs(other - outs[0])
        assert diff.max() <= 1 if compute == "float32" else diff.max() == 0
        assert np.mean(diff > 0) < 1e-3


def test_float32_within_quantisation_of_float64(backend_name, real_images):
    for image in real_images:
        e32 = enhance(image.astype(np.float32), backend=backend_name, out="uint8").astype(int)
        e64 = enhance(image, backend=backend_name, dtype="float64", out="uint8").astype(int)
        diff = np.abs(e32 - e64)
        assert np.mean(diff <= 1) >= 0.999
        assert np.mean(diff[..., :2] == 0) > 0.99


def test_constant_image_gives_zeros(backend_name):
    for dtype in ("uint8", "uint16", "float32"):
        enh = enhance(np.full((40, 52), 7, dtype=dtype), backend=backend_name, out="uint8")
        assert enh.shape == (40, 52, 3) and not enh.any()
        assert not enhance(np.zeros((3, 40, 52)), backend=backend_name).any()


@pytest.mark.parametrize("shape", [(33, 64), (64, 33), (50, 50), (51, 51), (3, 40, 61)])
def test_shapes(backend_name, shape):
    img = np.random.default_rng(sum(shape)).random(shape)
    enh = enhance(img, backend=backend_name)
    assert enh.shape == (*shape, 3) and np.isfinite(enh).all()


def test_batch_equals_one_by_one(backend_name):
    batch = np.stack([chest_phantom((64, 80), seed=s) for s in range(3)])
    together = enhance(batch, backend=backend_name, dtype="float64")
    for i in range(3):
        alone = enhance(batch[i], backend=backend_name, dtype="float64")
        assert np.abs(together[i] - alone).max() < 1e-12


@pytest.mark.parametrize("scaling", ["minmax", "fixed"])
def test_a_constant_image_in_a_batch_gives_zeros_and_leaves_the_others_alone(backend_name, scaling):
    """With fixed scaling a constant image's LwPA would map to mid-grey; the flat-image rule zeros it.

    On the GPU the three images are one chunk, so the rule must be per image, not per batch.
    """
    params = PhaseParams(scaling=scaling)
    picture = chest_phantom((48, 40), seed=4)
    batch = np.stack([np.full((48, 40), 0.3), picture, np.zeros((48, 40))])
    enh = enhance(batch, params, backend=backend_name, dtype="float64")
    assert not enh[0].any() and not enh[2].any()
    assert np.abs(enh[1] - enhance(picture, params, backend=backend_name, dtype="float64")).max() < 1e-12
    assert enh[1].max() > 0.9


def test_options_by_keyword_equal_options_by_position(picture):
    params = PhaseParams.preset("kovesi")
    assert np.array_equal(enhance(picture, params=params, backend="numpy", dtype="float32", out="uint8"),
                          enhance(picture, params, backend="numpy", out="uint8"))


def test_batch_larger_than_a_chunk_equals_one_by_one():
    batch = np.stack([chest_phantom(40, seed=s) for s in range(11)])
    together = enhance(batch, out="uint8")
    assert all(np.array_equal(together[i], enhance(batch[i], out="uint8")) for i in range(11))


def test_channel_order(picture):
    base = enhance(picture)
    order = ("elea", "lwpa", "lpe")
    permuted = enhance(picture, PhaseParams(channel_order=order))
    for c, name in enumerate(order):
        assert np.array_equal(permuted[..., c], channel(base, PhaseParams(), name))


def test_variants_run_and_change_the_maps(picture):
    base = enhance(picture)
    for params in (PhaseParams.preset("kovesi"), PhaseParams.preset("assd_lpe"),
                   PhaseParams(elea_source="lpe"), PhaseParams(border="reflect"),
                   PhaseParams(meng_compat=False), PhaseParams(kovesi_odd_grid=False),
                   PhaseParams(polarity=-1), PhaseParams(assd_exponent=None),
                   PhaseParams(scaling="fixed")):
        enh = enhance(picture, params)
        assert enh.shape == base.shape and np.isfinite(enh).all()
        assert not np.allclose(enh, base), params


@pytest.mark.parametrize(("images", "match"), [
    (np.zeros((64, 64, 3)), "colour"),
    (np.zeros((64, 64, 4), dtype=np.uint8), "colour"),
    (np.zeros(64), "1-D"),
    (np.zeros((2, 2, 64, 64)), "4-D"),
    (np.zeros((0, 64, 64)), "empty"),
    (np.zeros((4, 4)), "at least"),
    (np.full((16, 16), np.nan), "NaN"),
    (np.full((16, 16), np.inf, dtype=np.float32), "infinite"),
    (np.zeros((16, 16), dtype=np.complex128), "complex"),
    (np.zeros((16, 16), dtype=np.int32), "dtype"),
    (np.zeros((16, 16), dtype=bool), "dtype"),
    ([[0.0] * 16] * 16, "NumPy or CuPy array"),
])
def test_bad_images_raise_clear_errors(images, match):
    with pytest.raises(ValueError, match=match):
        enhance(images)


def test_bad_options_raise(picture):
    with pytest.raises(ValueError, match="out must be"):
        enhance(picture, out="png")
    with pytest.raises(ValueError, match="dtype must be"):
        enhance(picture, dtype="float16")
    with pytest.raises(ValueError, match="backend must be"):
        enhance(picture, backend="torch")
