"""Exit 0 means the result is right when the data changes under the tool: a store converted again
(another fit, dtype or patient grouping), another thread count, a float store (docs/store-format.md,
"Identity"). Each case ended in exit 0 with a wrong result before the identity said how pixels were
made and how samples are grouped."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GRID_ARGS

pytest.importorskip("keras")

from trainer import checkpoint
from trainer.cli import cli
from trainer.experiment import RunConfig, RunFailed, train_run

# What `phasefeat convert` writes differently with each option; the rest of the store is the same.
RECONVERSIONS = {
    "--fit pad": ("fit stretch -> pad", None),
    "--cxr-dtype uint16": ("CXR 32x32x1 uint8 -> 32x32x1 uint16", ("cxr", np.uint16, 257)),
    "--enh-dtype float32": ("ENH 32x32x3 uint8 -> 32x32x3 float32", ("enh", np.float32, 1 / 255)),
}


def converted_again(store, path, option: str):
    """A copy of ``store`` at ``path`` as `phasefeat convert` writes it with ``option`` (same images)."""
    shutil.copy(store, path)
    with h5py.File(path, "r+") as f:
        if option == "--fit pad":
            f.attrs["fit"] = "pad"
        elif option == "--patient-pattern":  # each pair of files one patient: another grouping
            n = len(f["labels"])
            f["meta/patient_id"][...] = np.array([f"p{i // 2}" for i in range(n)], dtype=object)
        else:
            what, dtype, factor = RECONVERSIONS[option][1]
            values = (f[what][()].astype(np.float64) * factor).astype(dtype)
            del f[what]
            f.create_dataset(what, data=values, chunks=(1, *values.shape[1:]))
            f.attrs[f"{what}_dtype"] = np.dtype(dtype).name
    return path


def compare(store, out):
    return CliRunner().invoke(cli, ["compare", "--store", str(store), *GRID_ARGS, "--out", str(out)])


@pytest.mark.slow
@pytest.mark.parametrize("option", list(RECONVERSIONS))
def test_a_grid_on_a_store_converted_again_with_other_pixels_is_refused(grid, store, tmp_path, option):
    """Item 1: the old runs were reused as if they had trained on the new pixels."""
    out = tmp_path / "grid"
    shutil.copytree(grid, out)
    path = tmp_path / "enh.h5"
    shutil.copy(store, path)
    assert compare(path, out).exit_code == 0  # the same store elsewhere: every run reused
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    converted_again(store, path, option)
    again = compare(path, out)
    said = RECONVERSIONS[option][0]
    assert again.exit_code == 1 and "converted again" in again.output and f"({said})" in again.output, \
        again.output
    assert len(again.output.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")} == before


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_a_grid_killed_mid_run_does_not_resume_on_a_store_converted_again(store, tmp_path, monkeypatch):
    """Item 2: a run resumed from its first checkpoint on other pixels mixed the two stores."""
    path = tmp_path / "enh.h5"
    shutil.copy(store, path)
    out = tmp_path / "grid"
    real = checkpoint.save_checkpoint

    def save_then_stop(where, model, identity, state):
        real(where, model, identity, state)
        raise Interrupted  # killed right after the first run's first checkpoint

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_stop)
    killed = compare(path, out)
    assert isinstance(killed.exception, Interrupted)
    monkeypatch.undo()
    (saved,) = out.glob("runs/*/checkpoint.npz")
    converted_again(store, path, "--enh-dtype float32")
    again = compare(path, out)
    assert again.exit_code == 1 and "(ENH 32x32x3 uint8 -> 32x32x3 float32)" in again.output, again.output
    assert saved.exists() and not list(out.glob("runs/*/result.json"))
    # The run itself, started on its folder without the grid, refuses its checkpoint alike.
    settings = json.loads((out / "grid.json").read_text())["base"]
    cfg = RunConfig(**{**settings, "test_sources": tuple(settings["test_sources"]), "input": "cxr",
                       "loss": "cce", "seed": 0})
    with pytest.raises(RunFailed, match=r"checkpoint.npz belongs to a run with other settings \(ENH 32x32x3 "
                                        r"uint8 -> 32x32x3 float32, the checkpoint's first\)"):
        train_run(path, cfg, saved.parent, progress=False)


@pytest.mark.slow
def test_evaluate_refuses_the_models_test_set_on_a_store_grouped_otherwise(grid, store, tmp_path):
    """Item 4: a store converted again with --patient-pattern had the same identity, and evaluate
    rebuilt "the model's own test set" with the new grouping (images it had trained on)."""
    model = str(grid / "runs" / "enh-cce-r0" / "model.keras")
    path = converted_again(store, tmp_path / "enh.h5", "--patient-pattern")
    refused = CliRunner().invoke(cli, ["evaluate", "--model", model, "--store", str(path)])
    assert refused.exit_code == 1, refused.output
    assert "does not hold the samples this model was split on (patient ids differ)" in refused.output
    asked = CliRunner().invoke(cli, ["evaluate", "--model", model, "--store", str(path), "--split-seed", "0"])
    assert asked.exit_code == 0 and "may hold images the model was trained on" in asked.output


@pytest.mark.slow
@pytest.mark.parametrize(("what", "option", "factor"), [("enh", "--enh-dtype float32", "255"),
                                                        ("cxr", "--cxr-dtype uint16", "0.00389105")])
def test_evaluate_puts_a_store_of_another_dtype_on_the_models_scale(grid, store, tmp_path, what, option, factor):
    """Item 5: an ENH model trained on uint8 scaled float32 values in [0, 1] by 1/255 again: macro AUC
    0.94 became 0.14, exit 0. The model's own scale is applied to whatever dtype the store holds."""
    run = grid / "runs" / f"{what}-cce-r0"
    saved = json.loads((run / "result.json").read_text())["metrics"]
    path = converted_again(store, tmp_path / "s.h5", option)
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(run / "model.keras"), "--store", str(path),
                                      "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["note"] == ""  # the same samples: the model's own test set
    assert f"values are rescaled by {factor} to the scale the model was trained on" in record["pixels_note"]
    assert RECONVERSIONS[option][0] in record["pixels_note"]
    assert record["confusion_matrix"] == saved["confusion_matrix"]
    assert record["macro_auc_ovr"] == pytest.approx(saved["macro_auc_ovr"], abs=1e-3)


def test_a_model_passed_as_a_store_and_a_store_passed_as_input_are_named(grid, store, tmp_path):
    """A model.keras as --store said "not an HDF5 file or unreadable (... file signature not found)";
    a store as convert's INPUT said "Directory '.../enh.h5' is a file"."""
    from phasefeat.cli import cli as phasefeat_cli

    model = grid / "runs" / "enh-cce-r0" / "model.keras"
    result = CliRunner().invoke(cli, ["compare", "--store", str(model), "--out", str(tmp_path / "g")])
    assert result.exit_code == 1 and f"{model}: a Keras model, not a store (a model is passed as --model" \
        in result.output, result.output
    converted = CliRunner().invoke(phasefeat_cli, ["convert", str(store), str(tmp_path / "x.h5")])
    assert converted.exit_code == 2 and "is a phasefeat store (what convert writes), not a folder of radiographs" \
        in converted.output
    other = CliRunner().invoke(phasefeat_cli, ["convert", str(model), str(tmp_path / "x.h5")])
    assert other.exit_code == 2 and "is a Keras model, not a folder of radiographs" in other.output
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "g").exists()
