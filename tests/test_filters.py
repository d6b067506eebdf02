import math

import numpy as np
import pytest

from phasefeat import PhaseParams
from phasefeat.maths.filters import (
    assd,
    assd_bandwidth_octaves,
    assd_exponent,
    bandpass_bank,
    butterworth_lowpass,
    frequency_grid,
    half_amplitude_bandwidth,
    log_gabor,
    riesz,
)

FREQS = np.geomspace(1e-4, 0.7, 200001)


@pytest.mark.parametrize(("sigma_onf", "octaves"), [(0.41, 3.03), (0.55, 2.03), (0.65, 1.46),
                                                    (0.75, 0.98)])
def test_log_gabor_bandwidth(sigma_onf, octaves):
    g = log_gabor(FREQS, 8.0, sigma_onf)
    assert half_amplitude_bandwidth(g, FREQS) == pytest.approx(octaves, abs=0.005)
    # The analytic relation B = 2 sqrt(2 ln 2) |ln sigma| / ln 2.
    assert half_amplitude_bandwidth(g, FREQS) == pytest.approx(
        2 * math.sqrt(2 * math.log(2)) * abs(math.log(sigma_onf)) / math.log(2), rel=1e-4)


@pytest.mark.parametrize("wavelength", [4.0, 8.0, 25.0])
def test_log_gabor_peak_and_dc(wavelength):
    rho = np.array([0.0, 1 / wavelength, 0.5 / wavelength, 2 / wavelength])
    g = log_gabor(rho, wavelength, 0.65)
    assert g[0] == 0.0
    assert g[1] == pytest.approx(1.0, abs=1e-15)
    assert np.all(g[2:] < 1)


def test_assd_exponent_field_overrides_the_bandwidth():
    explicit = bandpass_bank((64, 64), PhaseParams(assd_exponent=1.838, lowpass=None), half=False)
    solved = bandpass_bank((64, 64), PhaseParams(assd_exponent=None, lowpass=None), half=False)
    _, _, rho = frequency_grid((64, 64), kovesi_odd_grid=True, half=False)
    assert np.allclose(explicit[0], assd(rho, 25.0, 0.2, 1.838))
    assert np.allclose(solved[0], assd(rho, 25.0, 0.2, assd_exponent(0.2, 4.0)))
    assert not np.allclose(explicit, solved)


def test_assd_exponent_and_bandwidth():
    a = assd_exponent(0.2, 4.0)
    assert a == pytest.approx(1.8339, abs=1e-4)
    assert assd_bandwidth_octaves(1.838, 0.2) == pytest.approx(3.995, abs=1e-3)
    g = assd(FREQS, 25.0, 0.2, a)
    assert half_amplitude_bandwidth(g, FREQS) == pytest.approx(4.00, abs=0.005)
    assert FREQS[np.argmax(g)] == pytest.approx(1 / 25.0, rel=1e-3)
    assert g.max() == pytest.approx(1.0, abs=1e-9)
    assert assd(np.array([0.0]), 25.0, 0.2, a)[0] == 0.0


@pytest.mark.parametrize("preset", ["qi2021", "kovesi", "assd_lpe"])
@pytest.mark.parametrize("shape", [(64, 64), (63, 80), (299, 299)])
def test_bank_is_zero_at_dc_and_peaks_near_one(preset, shape):
    params = PhaseParams.preset(preset, lowpass=None)
    bank = bandpass_bank(shape, params, half=False)
    assert bank.shape == (params.nscale, *shape)
    assert np.all(bank[:, 0, 0] == 0)
    assert np.all(bank <= 1 + 1e-12)


def test_frequency_grid_conventions():
    ux, uy, rho = frequency_grid((5, 6), half=False)
    assert np.allclose(ux[0], np.fft.fftfreq(6)) and np.allclose(uy[:, 0], np.fft.fftfreq(5))
    assert rho.max() <= math.sqrt(2) / 2
    # Kovesi divides odd axes by N - 1 and leaves even axes alone.
    kx, ky, _ = frequency_grid((5, 6), kovesi_odd_grid=True, half=False)
    assert np.allclose(ky[:, 0], np.fft.fftfreq(5) * 5 / 4)
    assert np.allclose(kx[0], np.fft.fftfreq(6))
    hx, _, _ = frequency_grid((5, 6))
    assert hx.shape == (5, 4)


@pytest.mark.parametrize("shape", [(31, 31), (32, 48), (33, 40)])
def test_riesz_is_all_pass_and_hermitian(shape):
    h, w = shape
    rx, ry = riesz(shape)
    mag = np.hypot(rx, ry)
    mask = np.ones_like(mag, dtype=bool)
    mask[0, 0] = False
    if w % 2 == 0:
        mask[:, -1] = False
    if h % 2 == 0:
        mask[h // 2, :] = False
    assert np.allclose(mag[mask], 1.0, atol=1e-15)
    assert mag[0, 0] == 0
    # Multiplier i*r applied to a real signal must give a real result: the
    # inverse real FFT and the real part of the complex inverse agree exactly.
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    spec = np.fft.rfft2(x) * 1j * rx
    via_real = np.fft.irfft2(spec, s=shape)
    ux, _, rho = frequency_grid(shape, half=False)
    rfull = np.where(rho == 0, 0, ux / np.where(rho == 0, 1, rho))
    via_complex = np.fft.ifft2(np.fft.fft2(x) * 1j * rfull).real
    assert np.allclose(via_real, via_complex, atol=1e-12)


def test_filter_bank_is_built_once_per_shape_params_dtype():
    from phasefeat.backend import get_backend
    from phasefeat.maths.filters import filter_bank
    from phasefeat.maths.kirsch import bank_power_spectrum

    be = get_backend("numpy")
    a = filter_bank((64, 70), PhaseParams(), "float32", be)
    assert filter_bank((64, 70), PhaseParams(), np.float32, be) is a
    assert a.dtype == np.complex64 and a.shape == (6, 64, 36) and not a.flags.writeable
    assert filter_bank((64, 70), PhaseParams(), "float64", be).dtype == np.complex128
    assert filter_bank((64, 71), PhaseParams(), "float32", be) is not a
    assert filter_bank((64, 70), PhaseParams(nscale=3), "float32", be).shape[0] == 9
    p = bank_power_spectrum((64, 70), False, "float32", be)
    assert bank_power_spectrum((64, 70), False, "float32", be) is p


def test_half_amplitude_bandwidth_interpolates_both_flanks():
    """Five samples: the half-amplitude points lie 1/3 of the way into the flanking intervals,
    at 2 + 2/3 and 8 - 4/3, so the bandwidth is log2(6.667 / 2.667) = log2(2.5) octaves."""
    samples = np.array([0.0, 0.25, 1.0, 0.25, 0.0])
    freqs = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    assert half_amplitude_bandwidth(samples, freqs) == pytest.approx(math.log2(2.5), abs=1e-12)


@pytest.mark.parametrize(("cutoff", "order"), [(0.40, 10), (0.45, 15), (0.25, 1)])
def test_butterworth_lowpass_values(cutoff, order):
    rho = np.array([0.0, 0.5 * cutoff, cutoff, 1.5 * cutoff, 2 * cutoff])
    expected = [1.0, 1 / (1 + 0.5 ** (2 * order)), 0.5, 1 / (1 + 1.5 ** (2 * order)), 1 / (1 + 4.0**order)]
    assert np.allclose(butterworth_lowpass(rho, cutoff, order), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("preset", ["qi2021", "kovesi"])
@pytest.mark.parametrize("shape", [(48, 40), (47, 40), (2, 5), (3, 4)])
@pytest.mark.parametrize("half", [True, False])
def test_bank_is_the_radial_filter_times_the_lowpass(preset, shape, half):
    """Every scale is G_s * L, written out here on every row (the bank computes half the rows and mirrors
    them; odd and even heights, and the corners beyond the cut-off, where L acts)."""
    params = PhaseParams.preset(preset)
    _, _, rho = frequency_grid(shape, params.kovesi_odd_grid, half=half)
    cutoff, order = params.lowpass
    lowpass = 1 / (1 + (rho / cutoff) ** (2 * order))
    for s, wavelength in enumerate(params.wavelengths):
        if params.filter_family == "log_gabor":
            radial = log_gabor(rho, wavelength, params.sigma_onf)
        else:
            radial = assd(rho, wavelength, params.assd_alpha, params.assd_exponent)
        assert np.array_equal(bandpass_bank(shape, params, half=half)[s], radial * lowpass)  # to the bit
    if shape[0] > 8:
        assert lowpass.min() < 0.1  # the check reaches where the low-pass matters


@pytest.mark.parametrize(("a", "alpha"), [(1.0, 0.5), (0.5, 0.5), (1.838, 0.2)])
def test_assd_bandwidth_formula_equals_the_measured_bandwidth(a, alpha):
    """The closed-form half points against the bandwidth measured on a dense sampling of the filter;
    (1, 0.5) and (0.5, 0.5) have their upper half point beyond y = 2, where the root search widens."""
    g = assd(FREQS, 25.0, alpha, a)
    assert assd_bandwidth_octaves(a, alpha) == pytest.approx(half_amplitude_bandwidth(g, FREQS), abs=1e-3)


@pytest.mark.parametrize("shape", [(32, 48), (33, 40), (32, 41), (31, 31)])
def test_riesz_nyquist_lines_are_zero_for_even_sizes(shape):
    """rx on the Nyquist column (even W), ry on the Nyquist row (even H): cuFFT's inverse real
    transform does not promise to drop the non-Hermitian part there, so it is zeroed."""
    h, w = shape
    rx, ry = riesz(shape)
    assert np.all(rx[:, -1] == 0) == (w % 2 == 0)
    assert np.all(ry[h // 2, :] == 0) == (h % 2 == 0)


@pytest.mark.parametrize(("alpha", "bandwidth"), [(0.2, 4.0), (0.2, 6.0), (0.5, 4.0), (0.5, 2.0)])
def test_assd_exponent_gives_the_asked_bandwidth(alpha, bandwidth):
    """Round trip, also where the exponent is below 1 (alpha 0.2 at 6 octaves, alpha 0.5 at 4)."""
    a = assd_exponent(alpha, bandwidth)
    assert assd_bandwidth_octaves(a, alpha) == pytest.approx(bandwidth, abs=1e-9)
    g = assd(FREQS, 25.0, alpha, a)
    assert half_amplitude_bandwidth(g, FREQS) == pytest.approx(bandwidth, abs=2e-3)


@pytest.mark.parametrize("alpha", [0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("bandwidth", [0.25, 1.0, 4.0, 8.0, 10.0])
def test_assd_exponent_round_trips_or_refuses(alpha, bandwidth):
    """Every bandwidth an ASSD filter with this alpha can have is solved exactly; one it cannot have is
    refused, never answered with the end of the search bracket."""
    widest = assd_bandwidth_octaves(1e-6, alpha)
    if bandwidth < widest:
        a = assd_exponent(alpha, bandwidth)
        assert assd_bandwidth_octaves(a, alpha) == pytest.approx(bandwidth, rel=1e-9)
    else:
        with pytest.raises(ValueError, match="spans"):
            assd_exponent(alpha, bandwidth)


@pytest.mark.parametrize(("fields", "message"), [({"assd_bandwidth": 600.0}, "at most 32 octaves"),
                                                 ({"assd_alpha": 1.5}, "assd_alpha must lie in"),
                                                 ({"assd_alpha": 1.0, "assd_bandwidth": 16.0}, "spans")])
def test_phase_params_refuse_assd_filters_that_cannot_be_built(fields, message):
    with pytest.raises(ValueError, match=message):
        PhaseParams(filter_family="assd", assd_exponent=None, **fields)
