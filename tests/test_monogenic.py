"""Analytic properties of the monogenic stage (spec section 5), float64 unless noted."""

import math

import numpy as np
import pytest

from phasefeat import PhaseParams, monogenic
from phasefeat.maths.filters import bandpass_bank, frequency_grid, riesz

GRID = [False, True]


def grating(shape, k, a=1.7, b=4.0, phi=0.3):
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    theta = 2 * np.pi * (k[0] * x / w + k[1] * y / h) + phi
    return a * np.cos(theta) + b, theta


def wrap(theta):
    return (theta + np.pi) % (2 * np.pi) - np.pi


def bank_gain(shape, k, params):
    """Sum over scales of B_s at the grating's frequency bin."""
    bank = bandpass_bank(shape, params, half=False)
    return bank[:, k[1] % shape[0], k[0] % shape[1]]


# Frequencies inside the filters' pass band, so the amplitude is not tiny next to the DC term.
GRATINGS = [(128, (16, 0)), (128, (0, 12)), (128, (9, -5)), (128, (3, 11)),
            (299, (37, 0)), (299, (0, 30)), (299, (9, -5)), (299, (18, -25))]


def polarised(x, polarity):
    return np.abs(x) if polarity == 0 else polarity * x


@pytest.mark.parametrize(("n", "k"), GRATINGS)
@pytest.mark.parametrize("kovesi_odd_grid", GRID)
def test_grating(backend_name, n, k, kovesi_odd_grid, preset):
    params = preset.replace(kovesi_odd_grid=kovesi_odd_grid)
    image, theta = grating((n, n), k)
    r = monogenic(image, params, backend=backend_name, dtype="float64")
    gains = bank_gain((n, n), k, params)
    a = 1.7
    assert np.abs(r.lwpa - (np.pi / 2 - np.abs(wrap(theta)))).max() < 1e-12
    assert np.abs(r.amplitude / (a * gains.sum()) - 1).max() < 1e-12
    # (O1, O2) = -a * sum_s B_s * (k / |k|) * sin(theta)
    kx, ky = k
    norm = math.hypot(kx, ky)
    o1, o2 = r.odd_x.sum(0), r.odd_y.sum(0)
    assert np.abs(o1 + a * gains.sum() * kx / norm * np.sin(theta)).max() < 1e-11
    assert np.abs(o2 + a * gains.sum() * ky / norm * np.sin(theta)).max() < 1e-11
    if ky == 0:
        assert np.abs(o2).max() < 1e-12
    # Orientation is exactly the grating direction (mod pi) wherever the odd part is not tiny.
    big = np.hypot(o1, o2) > 1e-3 * a * gains.sum()
    orient = np.arctan2(o2, o1)[big]
    diff = (orient - math.atan2(ky, kx)) % np.pi
    assert np.minimum(diff, np.pi - diff).max() < 1e-10
    pe = a * sum(g * (polarised(np.cos(theta), params.polarity) - np.abs(np.sin(theta)))
                 for g in gains)
    assert np.abs(r.phase_energy - pe).max() < 1e-11


def step_edge(h, w):
    c = w // 2
    row = np.zeros(w)
    row[c] = 0.5
    for k in range(1, math.ceil(w / 2)):
        row[(c + k) % w] = 1.0
        row[(c - k) % w] = 0.0
    if w % 2 == 0:
        row[(c + w // 2) % w] = 0.5
    return np.tile(row, (h, 1)), c


@pytest.mark.parametrize("w", [128, 299, 64, 63])
def test_step_edge_has_zero_phase_and_antisymmetry(backend_name, w, preset):
    image, c = step_edge(16, w)
    r = monogenic(image, preset.replace(lowpass=None), backend=backend_name, dtype="float64")
    lwpa = r.lwpa[0]
    assert abs(lwpa[c]) < 1e-12
    d = np.arange(1, w // 4)
    assert np.abs(lwpa[c + d] + lwpa[c - d]).max() < 1e-12


@pytest.mark.parametrize(("value", "expected"), [(1.0, np.pi / 2), (-1.0, -np.pi / 2)])
@pytest.mark.parametrize("shape", [(64, 64), (299, 299), (40, 63)])
def test_thin_line(backend_name, value, expected, shape, preset):
    image = np.zeros(shape)
    image[:, shape[1] // 2] = value
    r = monogenic(image, preset, backend=backend_name, dtype="float64")
    assert np.abs(r.lwpa[:, shape[1] // 2] - expected).max() < 1e-12


def significant(r, frac=1e-6):
    return r.amplitude > frac * r.amplitude.max()


@pytest.mark.parametrize(("a", "b"), [(3.5, 100.0), (0.01, -7.0), (1000.0, 0.0)])
def test_affine_invariance(backend_name, radiograph, a, b, preset):
    r1 = monogenic(radiograph, preset, backend=backend_name, dtype="float64")
    r2 = monogenic(a * radiograph + b, preset, backend=backend_name, dtype="float64")
    m = significant(r1)
    assert np.abs(r2.lwpa - r1.lwpa)[m].max() < 1e-10
    assert np.abs(r2.phase_energy - a * r1.phase_energy).max() < 1e-10 * a * np.abs(r1.phase_energy).max()


def test_negation(backend_name, radiograph, preset):
    """LwPA(-I) = -LwPA(I); PE(-I) = PE(I) with polarity 0, and polarity +1 <-> -1."""
    r1 = monogenic(radiograph, preset, backend=backend_name, dtype="float64")
    r2 = monogenic(-radiograph, preset, backend=backend_name, dtype="float64")
    m = significant(r1)
    assert np.abs(r2.lwpa + r1.lwpa)[m].max() < 1e-10
    mirror = monogenic(radiograph, preset.replace(polarity=-preset.polarity), backend=backend_name,
                       dtype="float64")
    assert np.allclose(r2.phase_energy, mirror.phase_energy, rtol=0,
                       atol=1e-10 * np.abs(r1.phase_energy).max())


def test_linearity(backend_name, preset):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 50, 61))
    rx, ry = (monogenic(v, preset, backend=backend_name, dtype="float64") for v in (x, y))
    rxy = monogenic(2 * x - 3 * y, preset, backend=backend_name, dtype="float64")
    for name in ("even", "odd_x", "odd_y"):
        expect = 2 * getattr(rx, name) - 3 * getattr(ry, name)
        assert np.allclose(getattr(rxy, name), expect, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shift", [(5, -9), (0, 1), (150, 299)])
def test_shift_equivariance(backend_name, radiograph, shift, preset):
    r1 = monogenic(radiograph, preset, backend=backend_name, dtype="float64")
    r2 = monogenic(np.roll(radiograph, shift, axis=(0, 1)), preset, backend=backend_name,
                   dtype="float64")
    for name in ("lwpa", "phase_energy", "lpe"):
        a, b = np.roll(getattr(r1, name), shift, axis=(0, 1)), getattr(r2, name)
        scale = max(np.abs(a).max(), 1.0)
        assert np.abs(a - b).max() < 1e-10 * scale, name
    for name in ("even", "odd_x", "odd_y"):
        a = np.roll(getattr(r1, name), shift, axis=(1, 2))
        assert np.abs(a - getattr(r2, name)).max() < 1e-10 * np.abs(a).max()


@pytest.mark.parametrize("shape", [(40, 63), (64, 64), (299, 299)])
def test_transpose_swaps_odd_components(backend_name, shape, preset):
    img = np.random.default_rng(5).random(shape)
    r1 = monogenic(img, preset, backend=backend_name, dtype="float64")
    r2 = monogenic(img.T.copy(), preset, backend=backend_name, dtype="float64")
    assert np.abs(r2.lwpa - r1.lwpa.T).max() < 1e-11
    assert np.abs(r2.odd_x - r1.odd_y.transpose(0, 2, 1)).max() < 1e-11
    assert np.abs(r2.odd_y - r1.odd_x.transpose(0, 2, 1)).max() < 1e-11


@pytest.mark.parametrize("n", [63, 64, 299])
def test_rot90(backend_name, n, preset):
    img = np.random.default_rng(6).random((n, n))
    r1 = monogenic(img, preset, backend=backend_name, dtype="float64")
    r2 = monogenic(np.rot90(img).copy(), preset, backend=backend_name, dtype="float64")
    assert np.abs(r2.lwpa - np.rot90(r1.lwpa)).max() < 1e-11


@pytest.mark.parametrize("shape", [(63, 63), (299, 299), (45, 81)])
def test_parseval_per_scale(backend_name, shape, preset):
    img = np.random.default_rng(7).random(shape)
    r = monogenic(img, preset, backend=backend_name, dtype="float64")
    for s in range(preset.nscale):
        odd = (r.odd_x[s] ** 2).sum() + (r.odd_y[s] ** 2).sum()
        assert odd / (r.even[s] ** 2).sum() == pytest.approx(1, abs=1e-13)


@pytest.mark.parametrize("shape", [(63, 63), (45, 81)])
def test_riesz_squared_is_minus_identity(shape):
    img = np.random.default_rng(8).random(shape)
    rx, ry = riesz(shape)
    spec = np.fft.rfft2(img) * ((1j * rx) ** 2 + (1j * ry) ** 2)
    assert np.allclose(np.fft.irfft2(spec, s=shape), -(img - img.mean()), atol=1e-13)


def test_grid_radius_range():
    _, _, rho = frequency_grid((299, 299), half=False)
    assert rho.max() <= math.sqrt(2) / 2


def test_shapes_and_batch_equals_single(backend_name, preset):
    rng = np.random.default_rng(9)
    batch = rng.random((3, 37, 52))
    rb = monogenic(batch, preset, backend=backend_name, dtype="float64")
    assert rb.even.shape == (preset.nscale, 3, 37, 52) and rb.lwpa.shape == (3, 37, 52)
    for i in range(3):
        ri = monogenic(batch[i], preset, backend=backend_name, dtype="float64")
        assert ri.even.shape == (preset.nscale, 37, 52) and ri.lpe.shape == (37, 52)
        for name in ("even", "odd_x", "odd_y"):
            assert np.allclose(getattr(rb, name)[:, i], getattr(ri, name), rtol=0, atol=1e-13)
        for name in ("lwpa", "phase_energy", "lpe", "amplitude"):
            assert np.allclose(getattr(rb, name)[i], getattr(ri, name), rtol=0, atol=1e-12)


def test_float32_close_to_float64(backend_name, radiograph, preset):
    r64 = monogenic(radiograph, preset, backend=backend_name, dtype="float64")
    r32 = monogenic(radiograph.astype(np.float32), preset, backend=backend_name, dtype="float32")
    assert r32.lwpa.dtype == np.float32 and r32.even.dtype == np.float32
    m = significant(r64, 1e-3)
    assert np.abs(r32.lwpa - r64.lwpa)[m].max() < 1e-3
    assert np.median(np.abs(r32.lwpa - r64.lwpa)[m]) < 3e-5
    pe_scale = np.abs(r64.phase_energy).max()
    assert np.abs(r32.phase_energy - r64.phase_energy).max() < 1e-5 * pe_scale


@pytest.mark.parametrize(("value", "dtype"), [(17, "uint8"), (65535, "uint16"), (0.1, "float32"),
                                              (-3e5, "float64")])
@pytest.mark.parametrize("compute", ["float32", "float64"])
def test_constant_image_gives_zeros(backend_name, value, dtype, compute, preset):
    r = monogenic(np.full((299, 301), value, dtype=dtype), preset, backend=backend_name, dtype=compute)
    for name in ("even", "odd_x", "odd_y", "lwpa", "phase_energy", "lpe", "amplitude"):
        assert np.all(getattr(r, name) == 0), name


def test_reflect_border_keeps_shape_and_tames_wraparound():
    # Top and bottom differ strongly: periodic filtering sees a false edge at the border.
    ramp = np.tile(np.linspace(0, 1, 120)[:, None], (1, 90))
    kovesi = PhaseParams.preset("kovesi")
    per = monogenic(ramp, kovesi, dtype="float64")
    ref = monogenic(ramp, kovesi.replace(border="reflect"), dtype="float64")
    assert ref.lwpa.shape == ramp.shape and ref.even.shape == (3, 120, 90)
    assert np.abs(ref.phase_energy[0]).mean() < 0.2 * np.abs(per.phase_energy[0]).mean()


def _smooth_size(n: int) -> int:
    """Smallest 2-3-5-smooth number >= n, by listing them (not the product's search)."""
    smooth = sorted(2**a * 3**b * 5**c for a in range(16) for b in range(10) for c in range(7))
    return next(m for m in smooth if m >= n)


@pytest.mark.parametrize("shape", [(120, 90), (37, 64), (20, 24), (27, 44)])  # 3 x 27 - 1 = 80 is smooth
@pytest.mark.parametrize("name", ["kovesi", "qi2021"])
def test_reflect_border_is_periodic_filtering_of_the_mirror_padded_image(shape, name):
    """border="reflect": mirror padding by 2 x the longest wavelength (at most size - 1 on a side,
    the rest moved before the image), up to a 2-3-5-smooth length, then periodic filtering and a crop."""
    params = PhaseParams.preset(name)
    image = np.random.default_rng(sum(shape)).random(shape)
    pads = []
    for n in shape:
        before = min(math.ceil(2 * params.wavelengths[-1]), n - 1)
        after = _smooth_size(n + 2 * before) - n - before
        if after > n - 1:
            before, after = before + after - (n - 1), n - 1
        pads.append((before, after))
    padded = np.pad(image, pads, mode="symmetric")
    assert all(m == _smooth_size(m) for m in padded.shape)
    want = monogenic(padded, params.replace(border="periodic"), dtype="float64")
    got = monogenic(image, params.replace(border="reflect"), dtype="float64")
    rows, cols = slice(pads[0][0], pads[0][0] + shape[0]), slice(pads[1][0], pads[1][0] + shape[1])
    for field in ("lwpa", "phase_energy", "lpe", "amplitude"):
        a, b = getattr(got, field), getattr(want, field)[rows, cols]
        assert a.shape == shape and np.abs(a - b).max() <= 1e-12 * max(1.0, np.abs(b).max()), field
    assert np.abs(got.even - want.even[:, rows, cols]).max() <= 1e-12 * np.abs(want.even).max()


@pytest.mark.parametrize("border", ["reflect", "periodic"])
def test_a_batch_is_its_images_one_by_one(border):
    """Padding pads the image axes only: a batch of three gives each image's own result."""
    params = PhaseParams.preset("kovesi", border=border)
    images = np.random.default_rng(3).random((3, 40, 52))
    batch = monogenic(images, params, dtype="float64")
    assert batch.lwpa.shape == images.shape and batch.even.shape == (3, 3, 40, 52)
    for k in range(3):
        alone = monogenic(images[k], params, dtype="float64")
        for field in ("lwpa", "phase_energy", "amplitude"):
            assert np.allclose(getattr(batch, field)[k], getattr(alone, field), rtol=0, atol=1e-12), field


@pytest.mark.parametrize("polarity", [0, 1, -1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_phase_maps_match_reference(radiograph, polarity, dtype, monkeypatch, preset):
    import sys

    module = sys.modules["phasefeat.maths.monogenic"]
    params = preset.replace(polarity=polarity)
    fused = monogenic(radiograph, params, backend="numpy", dtype=dtype)
    monkeypatch.setattr(module, "cpu_kernels", lambda: None)
    ref = monogenic(radiograph, params, backend="numpy", dtype=dtype)
    tol = 1e-4 if dtype == "float32" else 1e-12
    for name in ("lwpa", "phase_energy", "lpe", "amplitude"):
        a, b = getattr(fused, name), getattr(ref, name)
        assert np.abs(a - b).max() <= tol * max(np.abs(b).max(), 1), name


def test_options_by_keyword_equal_options_by_position():
    image = np.random.default_rng(5).random((40, 48))
    params = PhaseParams.preset("kovesi")
    a = monogenic(image, params=params, backend="numpy", dtype="float64")
    b = monogenic(image, params, backend="numpy", dtype="float64")
    assert np.array_equal(a.lwpa, b.lwpa) and np.array_equal(a.lpe, b.lpe)


def test_result_is_frozen():
    """MonogenicResult is a frozen dataclass: a caller cannot rebind its fields."""
    import dataclasses

    result = monogenic(np.random.default_rng(0).random((16, 16)), PhaseParams.preset("kovesi"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.lwpa = result.amplitude


def test_moved_pad_is_below_twice_the_size():
    """When the smooth length leaves more than n - 1 after the image, the excess moved before it is
    ``after - n + 1`` with ``n <= after < 2 n``, for every size and pad up to 400."""
    import bisect

    smooth = sorted(2**a * 3**b * 5**c for a in range(12) for b in range(8) for c in range(6))
    moved = 0
    for n in range(1, 401):
        for pad in range(1, 401):
            before = min(pad, n - 1)
            after = smooth[bisect.bisect_left(smooth, n + 2 * before)] - n - before
            if after > n - 1:
                moved += 1
                assert after < 2 * n, (n, pad)
    assert moved > 1000  # the branch is reached


def _lwpa_cases():
    rng = np.random.default_rng(8)
    scale = rng.choice([1e-30, 1e-6, 1.0, 1e3, 1e30], (6, 400))
    e = (rng.standard_normal((6, 400)) * scale).astype(np.float32)
    o = np.abs(rng.standard_normal((6, 400)) * scale[::-1]).astype(np.float32)
    o[0] = 0  # on the axis: +-pi/2
    e[1, :200], e[1, 200:] = 0.0, -0.0  # +-0 over any norm, 0 over 0
    o[1, :100] = 0
    o[2] = np.abs(e[2])  # the diagonal, where the range reduction switches
    o[3] = np.abs(e[3]) * np.float32(1 + 2**-20)
    o[4] = np.abs(e[4]) * np.float32(1 - 2**-20)
    return e, o


def test_fused_lwpa_is_within_one_float32_ulp_of_the_exact_angle():
    from phasefeat.maths._cpu_kernels import kernels

    e, o = _lwpa_cases()
    out = np.full_like(e, np.nan)
    kernels()[4](e, o, out)
    exact = np.arctan2(e.astype(np.float64), o.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(out - exact) <= ulp)
    assert np.array_equal(np.signbit(out), np.signbit(exact))  # -0 stays -0
    assert np.all(out[0][e[0] != 0] == np.copysign(np.float32(np.pi / 2), e[0][e[0] != 0]))
    assert np.all(out[2][e[2] != 0] == np.copysign(np.float32(np.pi / 4), e[2][e[2] != 0]))


def test_the_atan_polynomial_is_within_2e_10_on_its_range():
    from phasefeat.maths._cpu_kernels import ATAN_COEFFS, TAN_PI_8

    x = np.linspace(0.0, TAN_PI_8, 200_001)
    approx = x * np.polynomial.polynomial.polyval(x * x, ATAN_COEFFS)
    assert np.abs(approx - np.arctan(x)).max() < 2e-10  # a float32 ulp there is 3e-8
