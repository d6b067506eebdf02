import dataclasses
import json

import pytest

from phasefeat import PhaseParams


def test_defaults_are_the_kovesi_preset():
    p = PhaseParams()
    assert p == PhaseParams.preset("kovesi")
    assert (p.filter_family, p.nscale, p.min_wavelength, p.mult, p.sigma_onf) == \
        ("log_gabor", 3, 4.0, 2.0, 0.65)
    assert p.lowpass == (0.45, 15)
    assert (p.polarity, p.kappa, p.c0, p.c1, p.closing_size) == (0, 0.7, 30.0, 300.0, 3)
    assert (p.reg_lambda, p.sigma_w, p.bccr_iterations, p.delta, p.eps) == (2.0, 0.5, 6, 0.85, 1e-4)
    assert p.channel_order == ("lwpa", "lpe", "elea")
    assert p.border == "periodic" and p.kovesi_odd_grid is False
    assert p.wavelengths == (4.0, 8.0, 16.0)


def test_lab_assd_preset():
    p = PhaseParams.preset("lab_assd")
    assert p.filter_family == "assd" and p.nscale == 2
    assert p.wavelengths == (25.0, 75.0)
    assert (p.assd_alpha, p.assd_bandwidth, p.lowpass, p.polarity) == (0.2, 4.0, (0.40, 10), 1)


def test_preset_overrides_and_unknown_preset():
    assert PhaseParams.preset("lab_assd", nscale=3).nscale == 3
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        PhaseParams.preset("nope")


@pytest.mark.parametrize("params", [PhaseParams(), PhaseParams.preset("lab_assd"),
                                    PhaseParams(lowpass=None, channel_order=("elea", "lwpa", "lpe"))])
def test_json_round_trip(params):
    text = json.dumps(params.to_dict())
    back = PhaseParams.from_dict(json.loads(text))
    assert back == params
    assert back.digest() == params.digest()
    assert PhaseParams.from_json(params.to_json()) == params


def test_digest_is_stable_and_sensitive():
    assert PhaseParams().digest() == PhaseParams().digest()
    assert len(PhaseParams().digest()) == 64
    assert PhaseParams().digest() != PhaseParams(delta=0.9).digest()
    # Field order of construction does not matter; the canonical JSON sorts keys.
    assert PhaseParams(mult=3.0, nscale=2).digest() == PhaseParams(nscale=2, mult=3.0).digest()


def test_frozen_and_hashable():
    p = PhaseParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.nscale = 4
    assert {p: 1}[PhaseParams()] == 1
    assert p.replace(nscale=4).nscale == 4


@pytest.mark.parametrize(("field", "value"), [
    ("nscale", 0), ("nscale", 2.5), ("min_wavelength", -4.0), ("min_wavelength", 1.0),
    ("mult", 0.0), ("sigma_onf", 0.0), ("sigma_onf", 1.0), ("sigma_onf", 1.3),
    ("filter_family", "gabor"), ("lowpass", (0.7, 15)), ("lowpass", (0.45, 0)),
    ("lowpass", 3), ("polarity", 2), ("kappa", 1.5), ("kappa", float("nan")),
    ("c0", 400.0), ("closing_size", 0), ("closing_border", "mirror"), ("reg_lambda", -1.0),
    ("sigma_w", 0.0), ("bccr_iterations", -1), ("delta", float("inf")), ("eps", 0.0),
    ("channel_order", ("lwpa", "lwpa", "elea")), ("border", "zero"),
    ("kovesi_odd_grid", "yes"), ("elea_source", "lwpa"), ("meng_compat", 1),
])
def test_invalid_values_name_the_field(field, value):
    name = field.split("_")[0] if field in ("lowpass",) else field
    with pytest.raises(ValueError, match=name):
        PhaseParams(**{field: value})


def test_from_dict_rejects_unknown_fields():
    data = PhaseParams().to_dict() | {"nscales": 3}
    with pytest.raises(ValueError, match="nscales"):
        PhaseParams.from_dict(data)
