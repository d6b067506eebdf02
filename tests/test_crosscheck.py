"""Independent cross-check against `phasecongruency.monofilt` (MIT; a port of Kovesi's Julia code).

Same settings: k/N grid, no low-pass, (nscale, min wavelength, mult, sigma_onf) = (3, 4, 2, 0.65).
Its even/odd outputs use our sign and order conventions (f = even, h1f = odd_x, h2f = odd_y).
"""

import numpy as np
import pytest

from phasefeat import PhaseParams, monogenic

pc = pytest.importorskip("phasecongruency")

PARAMS = PhaseParams.preset("kovesi", lowpass=None)  # monofilt: log-Gabor, no low-pass


def assert_matches_monofilt(image):
    f, h1, h2, _, _, psi = pc.monofilt(image, 3, 4, 2, 0.65)
    r = monogenic(image, PARAMS, backend="numpy", dtype="float64")
    for s in range(3):
        for ours, theirs in ((r.even[s], f[s]), (r.odd_x[s], h1[s]), (r.odd_y[s], h2[s])):
            assert np.abs(ours - theirs).max() <= 1e-6 * np.abs(theirs).max()
    # LwPA assembled from their per-scale outputs equals ours.
    e, o1, o2 = sum(f), sum(h1), sum(h2)
    assert np.allclose(r.lwpa, np.arctan2(e, np.hypot(o1, o2)), rtol=0, atol=1e-9)
    assert psi[0].shape == image.shape


@pytest.mark.parametrize("shape", [(64, 64), (63, 63), (299, 299), (63, 80), (80, 63), (128, 97)])
def test_random_images(shape):
    assert_matches_monofilt(np.random.default_rng(sum(shape)).random(shape))


def test_real_radiographs(real_images):
    for image in real_images:
        assert image.shape == (299, 299)
        assert_matches_monofilt(image)
