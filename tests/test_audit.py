"""trainer audit, trained for real: occlusion of the stored and derived features, the audit on phantoms, lung masks
(the verdicts without training: tests/test_audit_verdicts.py)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from phasefeat import PhaseParams, enhance
from phasefeat.cli import cli as phasefeat_cli
from phasefeat.tools.demo_data import SOURCE_PATTERN, write_demo_data
from trainer.cli import cli
from trainer.data import OccludedFeatures
from trainer.model import occlusion_mask

TRAIN = ["--width", "0.125", "--epochs", "15", "--patience", "5", "--learning-rate", "0.0003",
         "--batch-size", "8", "--repeats", "1", "--inputs", "cxr", "--occlude-fractions", "0.6,0.9"]


def invoke(command, *args, ok=True):
    result = CliRunner().invoke(command, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize(("mode", "visible"), [("none", 64 * 80), ("center", 64 * 80 - 38 * 48),
                                               ("outside", 38 * 48)])
def test_occlusion_mask(mode, visible):
    mask = occlusion_mask(64, 80, mode, 0.6)
    assert mask.shape == (64, 80, 1) and mask.dtype == np.uint8 and int(mask.sum()) == visible
    if mode == "center":
        assert mask[32, 40, 0] == 0 and mask[0, 0, 0] == 1
    with pytest.raises(ValueError, match="fraction"):
        occlusion_mask(8, 8, mode, 1.0)


def test_occluded_features_are_enh_of_the_blacked_out_radiograph():
    from phasefeat.tools.phantom import chest_phantom

    cxr = np.stack([chest_phantom(48, seed=s, dtype="uint8") for s in range(2)])[..., None]
    derive = OccludedFeatures("center", 0.5, PhaseParams().to_json(), "uint8")
    mask = occlusion_mask(48, 48, "center", 0.5)[..., 0]
    want = enhance(cxr[..., 0].astype(np.float32) / 255 * mask, out="uint8") * mask[..., None]
    assert np.array_equal(derive(cxr), want)
    as_float = OccludedFeatures("center", 0.5, PhaseParams().to_json(), "float16")(cxr)
    assert as_float.dtype == np.float16 and np.allclose(as_float, want / 255, atol=1e-3)


def test_stored_enh_carries_the_centre_into_the_border_and_derived_enh_does_not():
    """Why the audit recomputes ENH from the occluded radiograph (docs/shortcut-audit.md)."""
    from phasefeat.tools.phantom import chest_phantom

    a = chest_phantom(128, seed=4, dtype="float64")
    b = a.copy()
    b[50:70, 50:70] += 0.3  # a lesion inside the central box
    border = occlusion_mask(128, 128, "center", 0.6)[..., 0].astype(bool)
    stored = np.abs(enhance(a, out="uint8").astype(int) - enhance(b, out="uint8").astype(int))[border]
    assert stored.mean(axis=0).max() > 20  # grey levels, on average over the border pixels
    derived = [enhance(x * border, out="uint8") for x in (a, b)]
    assert np.array_equal(derived[0][border], derived[1][border])


def _phantom_store(root, shortcut):
    write_demo_data(root / "raw", per_class=40, seed=0, min_size=128, max_size=192, shortcut=shortcut)
    args = ["convert", root / "raw", root / "s.h5", "--size", 64, "--features-at", 64, "-q",
            "--backend", "numpy"]
    if shortcut:
        args += ["--source-pattern", SOURCE_PATTERN]
    invoke(phasefeat_cli, *args)
    return root / "s.h5"


@pytest.mark.slow
def test_audit_flags_a_planted_shortcut(tmp_path):
    store = _phantom_store(tmp_path, shortcut=True)
    result = invoke(cli, "audit", "--store", store, "--out", tmp_path / "audit", *TRAIN)
    record = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert record["verdicts"]["cxr"]["flagged"], result.output
    lung_free = record["results"]["cxr"]["center-0.90"]
    assert lung_free["accuracy"] > lung_free["chance"] + 0.3  # a frame and a corner letter are enough
    assert set(record["results"]["cxr"]) == {"full", "center-0.60", "center-0.90", "source", "external:siteb"}
    assert record["results"]["cxr"]["source"]["accuracy"] > 0.8
    text = (tmp_path / "audit" / "audit.md").read_text()
    assert "confounded by source" in text and "| CXR | center-0.90 |" in text and "sitea" in text
    assert "where no lung is visible" in text and "![Accuracy and macro AUC" in text
    assert (tmp_path / "audit" / "occlusion_curve.png").stat().st_size > 5000
    assert "audit: 5 run(s) of up to 15 epochs; 5 to train" in result.output
    assert "CXR: the CXR model still classifies with 81% of the image blacked out" in result.output
    again = invoke(cli, "audit", "--store", store, "--out", tmp_path / "audit", *TRAIN)
    assert again.output.splitlines()[-2:] == result.output.splitlines()[-2:]  # reused, same answer


@pytest.mark.slow
def test_audit_does_not_flag_clean_phantoms_and_compare_appends_it(tmp_path):
    """One site, no shortcut: never "confounded by source"; compare --audit reuses the grid's runs and
    the browser report holds the whole audit."""
    store = _phantom_store(tmp_path, shortcut=False)
    done = invoke(cli, "compare", "--store", store, "--out", tmp_path / "cmp", "--losses", "cce", "--audit",
                  *TRAIN)
    record = json.loads((tmp_path / "cmp" / "audit" / "audit.json").read_text(),
                        parse_constant=lambda word: pytest.fail(f"audit.json holds {word}: not JSON"))
    assert record["cramers_v"] is None  # one source: undefined, written as null
    assert set(record["results"]["cxr"]) == {"full", "center-0.60", "center-0.90"}  # no probe, no hold-out
    verdict = record["verdicts"]["cxr"]
    assert not verdict["flagged"] and "confounded" not in verdict["headline"], verdict
    # the reference runs are the grid's: trained once
    assert record["results"]["cxr"]["full"]["runs"] == ["../runs/cxr-cce-r0"]
    assert not list((tmp_path / "cmp" / "audit" / "runs").glob("full-*"))
    assert "grid: 1 run(s) of up to 15 epochs; 1 to train" in done.output and "audit: 3 run(s) of up to 15 epochs; 1 finished earlier " \
        "(reused), 2 to train" in done.output
    report = (tmp_path / "cmp" / "report.md").read_text()
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "# Shortcut audit" in report and "![Accuracy and macro AUC" in report
    headings = [line.lstrip("#").strip() for line in report.splitlines() if line.startswith("#")]
    assert "Shortcut audit" in headings and "Experiments" in headings
    for heading in headings:  # every section of report.md is in the browser's page
        assert f">{heading.replace('&', '&amp;')}</h" in page, heading
    assert page.count("data:image/png;base64,") == report.count("![")


def test_audit_refuses_a_source_probe_without_sources(tmp_path):
    store = tmp_path / "s.h5"
    write_demo_data(tmp_path / "raw", per_class=4, seed=0, min_size=64, max_size=70)
    invoke(phasefeat_cli, "convert", tmp_path / "raw", store, "--size", 32, "--features-at", 32, "-q",
           "--backend", "numpy")
    result = invoke(cli, "train", "--store", store, "--target", "source", "--out", tmp_path / "r", ok=False)
    assert result.exit_code == 1 and "no source" in result.output and "--source-pattern" in result.output
    assert not (tmp_path / "r").exists()
    bad = invoke(cli, "train", "--store", store, "--test-source", "nowhere", "--out", tmp_path / "r2",
                 ok=False)
    assert bad.exit_code == 1 and "not in the store" in bad.output and not (tmp_path / "r2").exists()


def _masked_store(tmp_path, per_class=12):
    """Kaggle layout with lung masks: <class>/images/X.png and <class>/masks/X.png."""
    from PIL import Image

    from phasefeat.tools.phantom import chest_phantom

    root = tmp_path / "kaggle"
    k = 0
    for name in ("COVID", "Normal", "Viral Pneumonia"):
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir()
        for i in range(per_class):
            image = chest_phantom((80, 72), seed=k, dtype="uint8", finding=None)
            Image.fromarray(image).save(root / name / "images" / f"{name}-{i}.png")
            mask = np.zeros((64, 64), np.uint8)  # masks come at their own size (Kaggle: 256 px)
            mask[16:56, 8:28] = mask[16:56, 36:56] = 255
            Image.fromarray(mask).save(root / name / "masks" / f"{name}-{i}.png")
            k += 1
    store = tmp_path / "masked.h5"
    invoke(phasefeat_cli, "convert", root, store, "--size", 32, "--features-at", 32, "-q", "--backend", "numpy")
    return store


def test_lung_masks_are_stored_and_used_for_occlusion(tmp_path):
    from phasefeat.io.store import open_store
    from trainer.data import read_inputs

    store = _masked_store(tmp_path)
    with open_store(store) as s:
        assert s.has_masks.all() and s.shape("mask") == (36, 32, 32, 1)
        mask = s.read(0, "mask")[..., 0]
        assert set(np.unique(mask).tolist()) == {0, 1} and 0.2 < mask.mean() < 0.6
        lungs_out = read_inputs(s, [0], "cxr", lung_mode="lungs")[0, ..., 0]
        only_lungs = read_inputs(s, [0], "cxr", lung_mode="non-lungs")[0, ..., 0]
        cxr = s.read(0, "cxr")[..., 0]
        assert np.all(lungs_out[mask == 1] == 0) and np.array_equal(lungs_out[mask == 0], cxr[mask == 0])
        assert np.all(only_lungs[mask == 0] == 0)
        derived = OccludedFeatures("lungs", 0.6, s.attrs["params_json"], "uint8")(
            s.read_many([0], "cxr"), 1 - s.read_many([0], "mask"))
        assert np.all(derived[0][mask == 1] == 0)
    assert "lung masks   36 of 36" in invoke(phasefeat_cli, "inspect", store).output
    result = invoke(cli, "train", "--store", store, "--occlude", "lungs", "--epochs", "1", "--width", "0.0625",
                    "--out", tmp_path / "run")
    assert "accuracy" in result.output
    evaluated = invoke(cli, "evaluate", "--model", tmp_path / "run" / "model.keras", "--store", store, "--json")
    assert json.loads(evaluated.output)["input"] == "enh"
    explained = invoke(cli, "explain", "--model", tmp_path / "run" / "model.keras", "--store", store,
                       "--method", "occlusion", "--n", "1", "--out", tmp_path / "x")
    record = json.loads((tmp_path / "x" / "explain.json").read_text())["models"][0]
    assert "inside the lung masks" in explained.output and 0 <= record["mass_in_lungs_mean"] <= 1
    from trainer.audit import plan
    from trainer.experiment import store_info

    assert [e.key for e in plan(store_info(store, "cxr"), (0.6,))] == ["full", "center-0.60", "lungs"]


def test_lung_occlusion_without_masks_is_refused(tmp_path):
    store = tmp_path / "s.h5"
    write_demo_data(tmp_path / "raw", per_class=4, seed=0, min_size=64, max_size=70)
    invoke(phasefeat_cli, "convert", tmp_path / "raw", store, "--size", 32, "--features-at", 32, "-q",
           "--backend", "numpy")
    result = invoke(cli, "train", "--store", store, "--occlude", "lungs", "--out", tmp_path / "r", ok=False)
    assert result.exit_code == 1 and "needs a lung mask for every image" in result.output
