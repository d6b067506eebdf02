"""The product's ELEA against the literal reference in ``elea_reference.py``, step by step."""

import numpy as np
import pytest
from conftest import PRESET_NAMES, load_real, real_image_paths
from elea_reference import elea_reference

from phasefeat import PhaseParams, monogenic
from phasefeat.backend import get_backend
from phasefeat.maths import elea as E
from phasefeat.tools.phantom import chest_phantom

NUMPY = get_backend("numpy")


def images():
    """Two phantoms (always) and two shared radiographs (where present), small to stay fast."""
    out = {"phantom-a": chest_phantom((96, 112), seed=21, dtype="float64"),
           "phantom-b": chest_phantom((101, 101), seed=22, dtype="float64", finding="covid")}
    paths = real_image_paths()
    if paths:
        out["real-first"] = load_real(paths[0], 128)
        out["real-last"] = load_real(paths[-1], 128)
    return out


IMAGES = images()


def source_of(image, params):
    maps = monogenic(image[None], params, dtype="float64")
    return maps.lpe if params.elea_source == "lpe" else maps.phase_energy


def reference(source, params, iterations=None):
    return elea_reference(source[0], kappa=params.kappa, c0=params.c0, c1=params.c1,
                          closing_size=params.closing_size, reg_lambda=params.reg_lambda,
                          sigma_w=params.sigma_w, delta=params.delta, eps=params.eps,
                          iterations=params.bccr_iterations if iterations is None else iterations,
                          meng_compat=params.meng_compat)


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize("preset", [*PRESET_NAMES, "kovesi+meng_compat", "qi2021-meng_compat"])
def test_elea_matches_the_literal_reference(preset, name):
    if preset == "kovesi+meng_compat":
        params = PhaseParams.preset("kovesi", meng_compat=True)
    elif preset == "qi2021-meng_compat":
        params = PhaseParams.preset("qi2021", meng_compat=False)
    else:
        params = PhaseParams.preset(preset)
    source = source_of(IMAGES[name], params)
    ref = reference(source, params)
    out, d = E.elea(source, params, NUMPY, return_details=True)
    assert d["rho"].item() == ref["rho"]  # the airlight, exactly
    assert np.abs(d["t_b"][0] - ref["t_b"]).max() < 1e-12
    assert np.abs(d["t_hat"][0] - ref["t_hat"]).max() < 1e-12
    assert np.abs(d["transmission"][0] - ref["after"][6]).max() < 1e-10
    assert np.abs(out[0] - ref["elea"]).max() < 255e-10


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_transmission_after_the_first_iteration(preset):
    params = PhaseParams.preset(preset, bccr_iterations=1)
    source = source_of(IMAGES["phantom-a"], params)
    ref = reference(source, params)
    _, d = E.elea(source, params, NUMPY, return_details=True)
    assert np.abs(d["transmission"][0] - ref["after"][1]).max() < 1e-12
    # and it is not yet the converged map: iterations matter
    assert np.abs(ref["after"][1] - reference(source, params, iterations=6)["after"][6]).max() > 1e-3


@pytest.mark.parametrize(("change", "value"), [("delta", 1.0), ("sigma_w", 1.0), ("reg_lambda", 4.0),
                                               ("kappa", 0.6), ("bccr_iterations", 5)])
def test_the_reference_sees_each_constant(change, value):
    """Each constant moves ELEA far beyond the comparison's tolerance: the comparison above can fail."""
    params = PhaseParams()
    source = source_of(IMAGES["phantom-a"], params)
    base = E.elea(source, params, NUMPY)[0]
    moved = reference(source, params.replace(**{change: value}))["elea"]
    assert np.abs(moved - base).max() > 1e-3


def test_the_reference_sees_the_beta_rate_and_the_threshold_scale(monkeypatch):
    """Mutations that once passed every test: beta growth 2 sqrt 2 -> 2, and the 1/8 of the threshold."""
    import math

    params = PhaseParams()
    source = source_of(IMAGES["phantom-a"], params)
    ref = reference(source, params)["elea"]
    monkeypatch.setattr(E, "BETA_RATE", 2.0)
    assert np.abs(E.elea(source, params, NUMPY)[0] - ref).max() > 1.0
    monkeypatch.setattr(E, "BETA_RATE", 2 * math.sqrt(2))
    assert np.abs(E.elea(source, params, NUMPY)[0] - ref).max() < 255e-10


@pytest.mark.parametrize("changes", [
    {"kappa": 0.5}, {"c1": 250.0}, {"c0": 10.0}, {"closing_size": 2}, {"closing_size": 4},
    {"closing_size": 5}, {"sigma_w": 0.8}, {"reg_lambda": 0.7}, {"delta": 0.6}, {"bccr_iterations": 4},
    {"meng_compat": False, "sigma_w": 0.3},
])
def test_elea_matches_the_reference_away_from_the_default_constants(changes):
    """Constants other than the published ones: a formula that only agrees at 0.5, 30 or 300 fails here."""
    params = PhaseParams(**changes)
    source = source_of(IMAGES["phantom-b"], params)
    ref = reference(source, params)
    out, d = E.elea(source, params, NUMPY, return_details=True)
    assert d["rho"].item() == ref["rho"]
    assert np.abs(d["t_hat"][0] - ref["t_hat"]).max() < 1e-12
    assert np.abs(out[0] - ref["elea"]).max() < 255e-10


def test_airlight_above_c1_falls_back():
    params = PhaseParams(c0=30.0, c1=150.0)  # round(0.7 * 255) = 179 is not below c1
    scaled = np.linspace(0, 255, 64).reshape(1, 8, 8)
    assert E.airlight(scaled, params, np).item() == (30 + 255) / 2
    assert elea_reference(scaled[0], c1=150.0)["rho"] == (30 + 255) / 2


def test_inversion_rescales_a_peak_below_one_and_keeps_an_all_zero_map():
    params = PhaseParams()
    scaled = np.full((1, 4, 4), 60.0)
    scaled[0, 0, 0] = 100.0
    rho = np.full((1, 1, 1), 179.0)
    out = E.invert_attenuation(scaled, np.ones_like(scaled), rho, params, np)
    assert out.max() == pytest.approx(255.0) and out[0, 1, 1] == pytest.approx(60 / 100 * 255)
    dark = E.invert_attenuation(np.zeros((1, 4, 4)), np.full((1, 4, 4), 0.01), rho, params, np)
    assert np.all(dark == 0)  # (0 - 179) / 0.01**0.85 + 179 < 0: r = 0 everywhere


@pytest.mark.parametrize(("c0", "c1"), [(179.0, 300.0), (30.0, 179.0)])
def test_an_airlight_equal_to_a_bound_falls_back(c0, c1):
    """rho must lie strictly between c0 and c1 (round(0.7 * 255) = 179 sits on the bound here)."""
    params = PhaseParams(c0=c0, c1=c1)
    scaled = np.linspace(0, 255, 64).reshape(1, 8, 8)
    assert E.airlight(scaled, params, np).item() == (c0 + 255) / 2


def test_fixed_scaling_inversion_is_255_r_without_the_peak():
    params = PhaseParams(scaling="fixed")
    scaled = np.full((1, 4, 4), 60.0)
    scaled[0, 0, 0] = 100.0
    rho = np.full((1, 1, 1), 179.0)
    out = E.invert_attenuation(scaled, np.ones_like(scaled), rho, params, np)
    assert np.allclose(out, scaled)  # t = 1: ELEA_raw = S, r = S / 255, ELEA = 255 r = S


@pytest.mark.parametrize("kappa", [0.6, 0.7])
def test_fixed_scaling_airlight_is_kappa_times_255(kappa):
    scaled = np.full((1, 4, 4), 40.0)
    assert E.airlight(scaled, PhaseParams(scaling="fixed", kappa=kappa), np).item() == round(kappa * 255 + 1e-10)
