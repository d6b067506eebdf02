"""From phase maps to 0..255: the published min-max and the fixed mapping (``scaling="fixed"``)."""

import math

import numpy as np
import pytest

from phasefeat import PhaseParams, enhance, monogenic
from phasefeat.backend import get_backend
from phasefeat.maths.scaling import angle_255, energy_255, minmax_255

FIXED = PhaseParams(scaling="fixed")


def test_angle_mapping_is_the_same_for_every_image():
    lwpa = np.array([[[-math.pi / 2, 0.0, math.pi / 2, math.pi / 4]]])
    assert np.allclose(angle_255(lwpa, np), [[[0.0, 127.5, 255.0, 191.25]]], atol=1e-12)


def test_energy_mapping_puts_zero_at_mid_grey_and_the_percentile_at_the_ends():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 60, 70))
    out = energy_255(x, 99.0, 5, np)
    q = np.percentile(np.abs(x[:, 5:-5, 5:-5]).reshape(2, -1), 99.0, axis=1)
    for n in range(2):
        assert np.allclose(out[n], np.clip(127.5 * (1 + x[n] / q[n]), 0, 255))
    assert energy_255(np.zeros((1, 8, 8)), 99.0, 1, np).max() == 0
    assert np.mean(out == 255) == pytest.approx(0.005, abs=0.004)


def test_energy_percentile_leaves_the_border_out():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 64, 64))
    spiked = x.copy()
    spiked[:, :4, :] = 1e6  # a burned-in marker or a wrap-around edge
    a, b = energy_255(x, 99.0, 8, np), energy_255(spiked, 99.0, 8, np)
    assert np.array_equal(a[:, 8:-8, 8:-8], b[:, 8:-8, 8:-8])
    assert not np.array_equal(minmax_255(x, np)[:, 8:-8, 8:-8], minmax_255(spiked, np)[:, 8:-8, 8:-8])


def test_margin_wider_than_the_image_uses_all_of_it():
    x = np.random.default_rng(2).standard_normal((1, 10, 10))
    assert np.array_equal(energy_255(x, 99.0, 50, np), energy_255(x, 99.0, 0, np))


def test_fixed_lwpa_channel_is_the_angle_mapping(backend_name, radiograph):
    enh = enhance(radiograph, FIXED, backend=backend_name, dtype="float64")
    lwpa = monogenic(radiograph, FIXED, backend=backend_name, dtype="float64").lwpa
    got = enh[..., FIXED.channel_order.index("lwpa")] * 255
    assert np.abs(got - (lwpa + math.pi / 2) * 255 / math.pi).max() < 1e-9


def test_fixed_scaling_keeps_the_constant_image_at_zero(backend_name):
    assert not enhance(np.full((40, 52), 9.0), FIXED, backend=backend_name).any()


def test_a_corner_marker_moves_min_max_but_not_fixed_grey_levels(radiograph):
    """A bright label in a corner sets the min-max range of the whole image (and, through it,
    every ELEA value); with fixed scaling the centre keeps its grey levels."""
    marked = radiograph.copy()
    marked[4:14, 4:30] = radiograph.max()
    centre = (slice(100, 200), slice(100, 200))
    change = {}
    for scaling in ("minmax", "fixed"):
        params = PhaseParams(scaling=scaling)
        a = enhance(radiograph, params, dtype="float64")[centre] * 255
        b = enhance(marked, params, dtype="float64")[centre] * 255
        change[scaling] = np.abs(a - b).mean(axis=(0, 1))
    assert change["fixed"].max() < 1.5
    assert change["minmax"].max() > 10 * change["fixed"].max()


def test_fixed_airlight_does_not_follow_the_brightest_pixel():
    from phasefeat.maths.elea import airlight

    scaled = np.full((2, 4, 4), 100.0)
    scaled[1, 0, 0] = 255.0
    assert np.all(airlight(scaled, FIXED, np) == 179)
    assert airlight(scaled, PhaseParams(), np).ravel().tolist() == [70.0, 179.0]


def test_energy_mapping_on_cupy_equals_numpy(cupy_module):
    cp = cupy_module
    x = np.random.default_rng(3).standard_normal((3, 50, 61))
    got = energy_255(cp.asarray(x), 99.0, 6, cp)
    assert np.allclose(cp.asnumpy(got), energy_255(x, 99.0, 6, np), atol=1e-9)
    assert get_backend("cupy").name == "cupy"


@pytest.mark.parametrize("margin", [1, 3, 5])
def test_the_interior_at_its_edge_cases(margin):
    """A map exactly 2 x margin wide has no interior: all of it is used; one pixel more leaves one row."""
    whole = np.zeros((1, 2 * margin, 2 * margin))
    whole[0, 0, 0] = 4.0  # the only energy: on the border
    assert energy_255(whole, 100.0, margin, np)[0, 0, 0] == 255  # q = 4 from the whole map
    one = np.zeros((1, 2 * margin + 1, 2 * margin + 1))
    one[0, 0, 0], one[0, margin, margin] = 4.0, 2.0  # border 4, the single interior pixel 2
    assert energy_255(one, 100.0, margin, np)[0, margin, margin] == pytest.approx(255.0)  # q = 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [1e-20, 1e-6, 1.0, 1e20])
def test_min_max_scaling_ignores_the_image_scale(dtype, c):
    """ENH(c I) = ENH(I): min-max scaling is scale-free down to the smallest spans a dtype holds;
    only a constant map (span exactly 0) gives 0."""
    x = np.random.default_rng(3).random((2, 9, 11)).astype(dtype)
    assert np.allclose(minmax_255((x * dtype(c)).astype(dtype), np), minmax_255(x, np), atol=1e-3)
    assert not minmax_255(np.full((1, 4, 4), c, dtype), np).any()


@pytest.mark.parametrize(("shape", "margin"), [((2, 20), 1), ((20, 2), 1), ((4, 40), 2), ((40, 4), 2),
                                               ((3, 40), 4), ((40, 3), 4)])
def test_a_map_too_narrow_on_one_side_uses_all_of_it(shape, margin):
    """The border is left out only when both sides leave an interior (one side exactly 2 x margin, or less)."""
    x = np.random.default_rng(5).standard_normal((1, *shape))
    assert np.array_equal(energy_255(x, 99.0, margin, np), energy_255(x, 99.0, 0, np))


def test_min_max_values_by_hand():
    x = np.array([[[3.0, 5.0, 7.0]]])  # lo 3, span 4
    assert minmax_255(x, np).tolist() == [[[0.0, 127.5, 255.0]]]
    assert minmax_255(x.astype(np.float32), np).dtype == np.float32


def test_energy_values_by_hand_also_below_one():
    """q = the 100th percentile of |x| = 0.5 (below 1): (x / q + 1) * 127.5; with the 50th (q = 0.25)
    the ends are clipped to 0 and 255."""
    x = np.array([[[-0.5, -0.25, 0.0, 0.25, 0.5]]])
    assert energy_255(x, 100.0, 0, np).tolist() == [[[0.0, 63.75, 127.5, 191.25, 255.0]]]
    assert energy_255(x, 50.0, 0, np).tolist() == [[[0.0, 0.0, 127.5, 255.0, 255.0]]]


def test_scale_map_picks_the_mapping_of_the_scaling_and_the_kind():
    from phasefeat.maths.scaling import scale_map

    x = np.random.default_rng(6).standard_normal((1, 12, 12))
    minmax, fixed = PhaseParams(scaling="minmax"), FIXED
    for kind in ("angle", "energy"):
        assert np.array_equal(scale_map(x, kind, minmax, np), minmax_255(x, np))
    assert np.array_equal(scale_map(x, "angle", fixed, np), angle_255(x, np))
    assert np.array_equal(scale_map(x, "energy", fixed, np),
                          energy_255(x, fixed.scaling_percentile, fixed.scaling_margin, np))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_minmax_equals_the_array_path_bit_for_bit(dtype, monkeypatch):
    import phasefeat.maths.scaling as S

    x = np.random.default_rng(7).standard_normal((3, 19, 26)).astype(dtype)
    x[1] = 4.5  # a constant image gives zeros
    fused = S.minmax_255(x, np)
    monkeypatch.setattr(S, "cpu_kernels", lambda: None)
    reference = S.minmax_255(x, np)
    assert fused.dtype == reference.dtype and np.array_equal(fused, reference)
    assert np.all(fused[1] == 0) and fused[0].max() == 255 and fused[0].min() == 0
