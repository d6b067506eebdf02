"""BCCR / ELEA checks (spec section 5 item 11) and the Kirsch bank's algebra."""

import numpy as np
import pytest

from phasefeat import PhaseParams, monogenic
from phasefeat.backend import get_backend
from phasefeat.maths import elea as E
from phasefeat.maths import kirsch
from phasefeat.maths._cpu_kernels import kernels
from phasefeat.maths.scaling import minmax_255

NUMPY = get_backend("numpy")


@pytest.fixture(scope="module")
def lpe(radiograph):
    return monogenic(radiograph[None], dtype="float64").lpe


def details(source, params=None, backend=NUMPY):
    return E.elea(source, params or PhaseParams(), backend, return_details=True)


def test_masks_are_kirsch_compass_masks():
    masks = kirsch.kirsch_masks() * np.sqrt(120)
    assert np.allclose(masks[0], [[5, 5, 5], [-3, 0, -3], [-3, -3, -3]])
    assert np.allclose(masks[1], [[-3, 5, 5], [-3, 0, 5], [-3, -3, -3]])
    assert len({m.tobytes() for m in masks}) == 8
    for j in range(8):
        assert np.allclose(masks[(j + 4) % 8], np.rot90(masks[j], 2))  # adjoint of j is j + 4
        assert np.linalg.norm(kirsch.kirsch_masks()[j]) == pytest.approx(1.0)
    compat = kirsch.kirsch_masks(meng_compat=True)
    assert np.array_equal(compat[4], compat[0])


@pytest.mark.parametrize("meng_compat", [False, True])
@pytest.mark.parametrize("shape", [(2, 17, 23), (1, 32, 32)])
def test_correlate_bank_matches_direct_correlation(meng_compat, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    z = kirsch.correlate_bank(x, meng_compat, np)
    masks = kirsch.kirsch_masks(meng_compat)
    for j in range(8):
        direct = sum(masks[j, 1 + dy, 1 + dx] * np.roll(x, (-dy, -dx), axis=(1, 2))
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert np.allclose(z[j], direct, atol=1e-12)


@pytest.mark.parametrize("meng_compat", [False, True])
def test_adjoint_bank_is_the_adjoint(meng_compat):
    rng = np.random.default_rng(1)
    t = rng.standard_normal((2, 19, 26))
    u = rng.standard_normal((8, 2, 19, 26))
    lhs = (kirsch.correlate_bank(t, meng_compat, np) * u).sum()
    rhs = (t * kirsch.adjoint_bank(u, meng_compat, np)).sum()
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_cached_power_spectrum_is_read_only():
    """The cache hands every caller the same array: nobody may write into it."""
    power = kirsch.bank_power_spectrum((24, 30), False, "float32", NUMPY)
    assert power is kirsch.bank_power_spectrum((24, 30), False, "float32", NUMPY)
    assert not power.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        power[0, 0] = 1


@pytest.mark.parametrize("meng_compat", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 5), (31, 47), (64, 64)])
def test_closed_form_power_spectrum_equals_the_masks_ffts(meng_compat, shape):
    h, w = shape
    expected = np.zeros((h, w // 2 + 1))
    for mask in kirsch.kirsch_masks(meng_compat):
        kernel = np.zeros(shape)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                kernel[dy % h, dx % w] += mask[1 + dy, 1 + dx]
        expected += np.abs(np.fft.rfft2(kernel)) ** 2
    power = kirsch.power_spectrum(shape, meng_compat)
    assert power.shape == expected.shape
    assert np.allclose(power, expected, rtol=0, atol=1e-12)
    assert power[0, 0] == 0  # every mask sums to 0: exactly nothing at DC


@pytest.mark.parametrize("meng_compat", [False, True])
@pytest.mark.parametrize("shape", [(21, 21), (20, 33)])
def test_power_spectrum_matches_mask_transfer_functions(meng_compat, shape):
    power = kirsch.bank_power_spectrum(shape, meng_compat, "float64", NUMPY)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, *shape))
    # sum_j ||D_j * x||^2 == sum_k |X_k|^2 P_k / (H W) (Parseval on the full grid).
    energy = (kirsch.correlate_bank(x, meng_compat, np) ** 2).sum()
    full = np.fft.fft2(x[0])
    h, w = shape
    p_full = np.zeros(shape)
    p_full[:, : w // 2 + 1] = power
    p_full[:, w // 2 + 1:] = np.roll(power[::-1, 1:(w + 1) // 2][:, ::-1], 1, axis=0)
    assert energy == pytest.approx((np.abs(full) ** 2 * p_full).sum() / (h * w), rel=1e-12)


@pytest.mark.parametrize("meng_compat", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 31, 47), (1, 64, 64)])
def test_fused_cpu_kernels_match_reference(dtype, shape, meng_compat):
    fused = kernels()
    assert fused is not None, "numba is a core dependency"
    rng = np.random.default_rng(3)
    t = rng.random(shape).astype(dtype)
    weights = rng.random((8, *shape)).astype(dtype)
    if meng_compat:  # the weights of a repeated mask are the same weights
        weights[4] = weights[0]
    z = np.empty((8, *shape), dtype=dtype)
    v = np.full(shape, np.nan, dtype=dtype)  # every pixel must be written
    for n in range(shape[0]):
        fused[0](t[n], 0.0, z[:, n])
        fused[1](t[n], weights[:, n], 1 / (8 * 2.83), meng_compat, v[n])
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert np.allclose(z, kirsch.correlate_bank(t, False, np), atol=tol)
    exponent = np.empty_like(z)
    for n in range(shape[0]):
        fused[0](t[n], 2 * 0.5, exponent[:, n])
    assert np.allclose(exponent, -(z * z) / (2 * 0.5), atol=tol)
    thresholds = weights / 8 / 2.83
    ref = kirsch.adjoint_bank(kirsch.shrink(kirsch.correlate_bank(t, meng_compat, np), thresholds, np),
                              meng_compat, np)
    assert np.allclose(v, ref, atol=tol)


@pytest.mark.parametrize(("dtype", "complex_dtype"), [("float32", "complex64"), ("float64", "complex128")])
@pytest.mark.parametrize("shape", [(31, 24), (64, 33)])
def test_fused_spectral_solve_is_bit_identical_to_numpy(dtype, complex_dtype, shape):
    fused = kernels()
    rng = np.random.default_rng(5)
    t_spec, v_spec = ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(complex_dtype)
                      for _ in range(2))
    power = (3 * rng.random(shape)).astype(dtype)
    gamma = np.dtype(dtype).type(2 / 2.83)
    expected = (gamma * t_spec + v_spec) / (gamma + power)
    fused[3](t_spec, v_spec, power, gamma)
    assert v_spec.dtype == np.dtype(complex_dtype)
    assert np.array_equal(v_spec, expected)


def test_boundary_constraint_range_and_closing_is_extensive(lpe):
    d = details(lpe)[1]
    assert d["rho"].ravel()[0] == 179  # round(0.7 * 255 + 1e-10)
    assert d["t_b"].min() >= 0 and d["t_b"].max() <= 1
    assert np.all(d["t_hat"] >= d["t_b"])
    assert d["transmission"].min() >= 0
    assert d["iterations"] == 6


@pytest.mark.parametrize("size", [2, 3, 4, 5, 6, 7, 9, 12, 31])  # beyond 5: the padding grows with the size
@pytest.mark.parametrize("mode", ["nearest", "wrap"])
def test_closing_matches_scipy(size, mode):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(4).random((2, 30, 41))
    ours = E.closing(x, size, mode, np)
    for n in range(2):
        ref = ndimage.grey_closing(x[n], size=(size, size), mode=mode)
        assert np.allclose(ours[n], ref)
    assert np.all(ours >= x)  # a closing is extensive, whatever the size
    assert np.allclose(E.closing(ours, size, mode, np), ours)  # and idempotent


def test_lambda_to_infinity_returns_t_hat(lpe):
    d = details(lpe, PhaseParams(reg_lambda=1e12))[1]
    assert np.abs(d["transmission"] - d["t_hat"]).max() < 1e-8


def test_unit_transmission_returns_scaled_source(lpe):
    params = PhaseParams()
    scaled = minmax_255(lpe, np)
    rho = E.airlight(scaled, params, np)
    raw_r = E.invert_attenuation(scaled, np.ones_like(scaled), rho, params, np)
    # With t == 1 ELEA_raw == S, so r = S / 255 and ELEA = 255 * S / max S = S.
    assert np.allclose(raw_r, scaled, atol=1e-9)


def test_binariser_identity():
    """lambda -> inf, closing size 1, delta 1: ELEA_raw is c0 below rho and c1 above.

    (Below c0 the constraint saturates at t = 1 and ELEA_raw = S.)"""
    params = PhaseParams(reg_lambda=1e12, closing_size=1, delta=1.0)
    source = np.random.default_rng(5).random((1, 40, 50))
    d = details(source, params)[1]
    s, rho, t = d["scaled"], d["rho"], d["transmission"]
    raw = (s - rho) / np.maximum(np.abs(t), params.eps) ** params.delta + rho
    below, above = (s < rho - 1e-6) & (s > params.c0 + 1e-6), s > rho + 1e-6
    assert below.sum() > 100 and above.sum() > 100
    assert np.allclose(raw[below], params.c0, atol=1e-6)
    assert np.allclose(raw[above], params.c1, atol=1e-6)
    assert np.allclose(raw[s <= params.c0], s[s <= params.c0], atol=1e-6)


def test_iteration_count_follows_params(lpe):
    assert details(lpe, PhaseParams(bccr_iterations=3))[1]["iterations"] == 3
    out, d = details(lpe, PhaseParams(bccr_iterations=0))
    assert d["iterations"] == 0 and np.array_equal(d["transmission"], d["t_hat"])


@pytest.mark.parametrize("preset", ["qi2021", "kovesi", "assd_lpe"])
def test_fused_and_reference_paths_agree_end_to_end(lpe, monkeypatch, preset):
    params = PhaseParams.preset(preset)
    fused = E.elea(lpe, params, NUMPY)
    monkeypatch.setattr(E, "_fused", lambda params, backend: None)
    reference = E.elea(lpe, params, NUMPY)
    assert np.abs(fused - reference).max() < 1e-9


def test_constant_source_gives_zero_without_warnings():
    out = E.elea(np.full((2, 20, 30), 3.0), PhaseParams(), NUMPY)
    assert np.all(out == 0)


@pytest.mark.parametrize("scaling", ["minmax", "fixed"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(20, 30), (127, 131), (37, 211)])
def test_a_source_without_structure_gives_zeros_at_any_size(shape, dtype, scaling):
    """S = 0 everywhere. Where the FFT sizes have large prime factors the transmission comes back a
    rounding step above 1 at some pixels, so ELEA computed through would reach 255 there (checked:
    127 x 131 and 37 x 211 do, 20 x 30 does not); the short-circuit of a map without structure keeps
    it at 0."""
    for source in (np.zeros((1, *shape), dtype), np.full((1, *shape), -2.0, dtype)):
        assert np.all(E.elea(source, PhaseParams(scaling=scaling), NUMPY) == 0)


def test_airlight_fallback_when_out_of_bounds():
    params = PhaseParams(c0=200.0)
    scaled = np.full((1, 4, 4), 255.0)
    assert E.airlight(scaled, params, np).item() == (200 + 255) / 2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scaled_maximum_is_exactly_255(dtype):
    # Regression: (x - lo) * (255 / span) can land on 254.99998 in float32, which
    # turned the airlight round(0.7 * max S + 1e-10) from 179 into 178.
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((200, 9, 11)) * rng.lognormal(0, 3, (200, 1, 1))).astype(dtype)
    scaled = minmax_255(x, np)
    assert np.all(scaled.max(axis=(1, 2)) == 255) and np.all(scaled.min(axis=(1, 2)) == 0)
    assert np.all(E.airlight(scaled, PhaseParams(), np) == 179)


@pytest.mark.parametrize("top", [0.5, 1.0, 1.5, 200.0])
def test_fixed_scaling_sets_the_airlight_from_255_for_any_non_zero_map(top):
    """With scaling="fixed" no pixel sets the airlight: a faint map (max S <= 1 on the 0..255 scale)
    gets the same rho as a bright one; only an all-zero map falls back to (c0 + 255) / 2."""
    params = PhaseParams(scaling="fixed")
    scaled = np.zeros((1, 8, 8))
    scaled[0, 3, 3] = top
    expected = np.round(params.kappa * 255 + 1e-10)
    assert params.c0 < expected < params.c1
    assert E.airlight(scaled, params, np)[0, 0, 0] == expected
    assert E.airlight(np.zeros((1, 8, 8)), params, np)[0, 0, 0] == (params.c0 + 255) / 2


def test_elea_takes_every_argument_by_keyword():
    source = np.random.default_rng(5).standard_normal((1, 24, 28))
    by_keyword = E.elea(source=source, params=PhaseParams(), backend=NUMPY, return_details=False)
    assert np.array_equal(by_keyword, E.elea(source, PhaseParams(), NUMPY))
    with pytest.raises(TypeError):
        E.elea(source, PhaseParams(), NUMPY, True)  # return_details is keyword-only
