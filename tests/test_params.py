import dataclasses
import json

import pytest

from phasefeat import PhaseParams

# The complete parameter record phasefeat 0.1 wrote into stores for its default (kovesi).
RECORD_0_1 = (
    '{"assd_alpha":0.2,"assd_bandwidth":4.0,"bccr_iterations":6,"border":"periodic","c0":30.0,'
    '"c1":300.0,"channel_order":["lwpa","lpe","elea"],"closing_border":"nearest","closing_size":3,'
    '"delta":0.85,"elea_source":"lpe","eps":0.0001,"filter_family":"log_gabor","kappa":0.7,'
    '"kovesi_odd_grid":false,"lowpass":[0.45,15],"meng_compat":false,"min_wavelength":4.0,'
    '"mult":2.0,"nscale":3,"polarity":0,"reg_lambda":2.0,"sigma_onf":0.65,"sigma_w":0.5}')
DIGEST_0_1 = {"kovesi": "32b614be707cb050a4ecf264d32cbd550a0b23fa78d16d11e0c7ecdf53cb7318",
              "assd_lpe": "4bc13443b4fc587fe177501452cf8ac5092d691765e3a31fc62e3aeb452e8ae8"}


def test_defaults_are_the_qi2021_preset_the_lab_port():
    """phase-features.md section 6 item 8: the lab port's phaseasymmono + BCCR call."""
    p = PhaseParams()
    assert p == PhaseParams.preset("qi2021") and p.preset_name() == "qi2021"
    assert (p.filter_family, p.nscale, p.min_wavelength, p.mult) == ("assd", 2, 25.0, 3.0)
    assert p.wavelengths == (25.0, 75.0)
    assert (p.assd_alpha, p.assd_exponent, p.lowpass, p.polarity) == (0.2, 1.838, (0.40, 10), 1)
    assert p.elea_source == "pe" and p.meng_compat is True and p.kovesi_odd_grid is True
    assert (p.kappa, p.c0, p.c1, p.closing_size) == (0.7, 30.0, 300.0, 3)
    assert (p.reg_lambda, p.sigma_w, p.bccr_iterations, p.delta, p.eps) == (2.0, 0.5, 6, 0.85, 1e-4)
    # The port returns [im3, ELEA, im2] = [mm255(PE * ft), ELEA, mm255(ft)].
    assert p.channel_order == ("lpe", "elea", "lwpa")
    assert p.border == "periodic" and p.scaling == "minmax"


def test_kovesi_preset_is_the_earlier_default():
    p = PhaseParams.preset("kovesi")
    assert (p.filter_family, p.nscale, p.min_wavelength, p.mult, p.sigma_onf) == \
        ("log_gabor", 3, 4.0, 2.0, 0.65)
    assert p.lowpass == (0.45, 15) and p.polarity == 0 and p.elea_source == "lpe"
    assert p.channel_order == ("lwpa", "lpe", "elea")
    assert p.kovesi_odd_grid is False and p.meng_compat is False
    assert p.wavelengths == (4.0, 8.0, 16.0)


def test_assd_lpe_preset_is_what_lab_assd_was():
    p = PhaseParams.preset("assd_lpe")
    assert p.filter_family == "assd" and p.nscale == 2 and p.wavelengths == (25.0, 75.0)
    assert (p.assd_alpha, p.assd_bandwidth, p.assd_exponent) == (0.2, 4.0, None)
    assert (p.lowpass, p.polarity, p.elea_source) == ((0.40, 10), 1, "lpe")


@pytest.mark.parametrize("name", ["kovesi", "assd_lpe"])
def test_digests_of_earlier_parameter_sets_are_unchanged(name):
    assert PhaseParams.preset(name).digest() == DIGEST_0_1[name]


def test_complete_earlier_record_reads_as_what_it_computed():
    p = PhaseParams.from_json(RECORD_0_1)
    assert p == PhaseParams.preset("kovesi")
    assert p.assd_exponent is None and p.scaling == "minmax"
    assert p.to_json() == RECORD_0_1


def test_partial_record_takes_the_defaults():
    p = PhaseParams.from_dict({"delta": 0.9})
    assert p == PhaseParams(delta=0.9) and p.assd_exponent == 1.838


def test_renamed_preset_says_what_to_use():
    with pytest.raises(ValueError, match="renamed 'assd_lpe'.*'qi2021'"):
        PhaseParams.preset("lab_assd")


def test_preset_overrides_and_unknown_preset():
    assert PhaseParams.preset("assd_lpe", nscale=3).nscale == 3
    assert PhaseParams.preset("qi2021", delta=0.9).preset_name() == "custom"
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        PhaseParams.preset("nope")


@pytest.mark.parametrize("params", [PhaseParams(), PhaseParams.preset("kovesi"),
                                    PhaseParams.preset("assd_lpe"), PhaseParams(scaling="fixed"),
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
    ("nscale", 100000), ("bccr_iterations", 100000000), ("closing_size", 10**6),
    ("assd_exponent", 0.0), ("assd_exponent", "1.8"), ("scaling", "zscore"),
    ("scaling_percentile", 50.0), ("scaling_percentile", 101.0), ("scaling_margin", -1),
])
def test_invalid_values_name_the_field(field, value):
    name = field.split("_")[0] if field in ("lowpass",) else field
    with pytest.raises(ValueError, match=name):
        PhaseParams(**{field: value})


def test_from_dict_rejects_unknown_fields():
    data = PhaseParams().to_dict() | {"nscales": 3}
    with pytest.raises(ValueError, match="nscales"):
        PhaseParams.from_dict(data)


@pytest.mark.parametrize(("text", "match"), [("{not json", "not readable"), ("[1, 2]", "JSON object"),
                                             ('{"nscale": [3]}', "nscale"), ('{"nscale": 1e8}', "nscale")])
def test_unreadable_or_wrong_records_raise_value_error(text, match):
    with pytest.raises(ValueError, match=match):
        PhaseParams.from_json(text)
