"""One run: what defines it (settings, digest, store identity), its checks, and its training and resume.

The fast tests come first; the few that train use a 32 x 32 store and a VGG16 of 1/16 width.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest
from datasets import CLASSES, tiny_store

from phasefeat import PhaseParams
from trainer.experiment import (
    LATER_FIELDS,
    GridError,
    RunConfig,
    RunFailed,
    _cross_entropy,
    check_values,
    prepare_split,
    run_name,
    store_identity,
    store_info,
)

#: The digest of the default settings. Finished runs record it, and a grid reuses a run whose digest
#: matches: if it changed, every finished run of the default settings would train again.
DEFAULT_DIGEST = "c3855b5dc69d27dd4a2907a1f71015ac3a603363f44c1ee4a3cffbfdd82d1a77"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("target", "organ", "target must be one of"), ("occlude", "half", "occlude must be one of"),
    ("split_by", "site", "split_by must be one of"), ("model", "vgg19", "model must be one of"),
    ("head_activation", "step", "head_activation must be one of"),
    ("width", 0, "--width must be a number in \\(0, 1\\]"), ("width", 1.01, "--width must be"),
    ("width", float("nan"), "--width must be"), ("width", "0.5", "--width must be"),
    ("image_size", 31, "--image-size must lie in \\[32, 2048\\]"), ("image_size", 2049, "--image-size"),
    ("occlude_fraction", 0, "occlude_fraction must lie in \\(0, 1\\)"), ("occlude_fraction", 1, "occlude_fraction"),
    ("occlude_fraction", -0.5, "occlude_fraction"), ("occlude_fraction", 1.5, "occlude_fraction"),
    ("width", -0.5, "--width must be"),
    ("learning_rate", 0, "learning rate must be a positive finite number"), ("learning_rate", -1e-4, "learning"),
    ("learning_rate", float("inf"), "learning rate"), ("learning_rate", float("nan"), "learning rate"),
    ("learning_rate", "1e-4", "learning rate"), ("weights", "no-such-file.weights.h5", "no such file"),
])
def test_settings_out_of_range_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**{field: value})


@pytest.mark.parametrize(("field", "value"), [("width", 1), ("width", 0.0625), ("image_size", 32),
                                              ("image_size", 2048), ("occlude_fraction", 0.05),
                                              ("occlude_fraction", 0.95), ("learning_rate", 1), ("model", "resnet50"),
                                              ("target", "source"), ("occlude", "lungs"), ("split_by", "source")])
def test_settings_at_their_bounds_are_accepted(field, value):
    assert getattr(RunConfig(**{field: value}), field) == value


def test_other_backbones_refuse_a_width_and_weights_must_exist(tmp_path):
    for width in (0.5, 1.5):  # either side of 1: the backbone's rule is said first
        with pytest.raises(ValueError, match="--width scales VGG16 only"):
            RunConfig(model="resnet50", width=width)
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")
    assert RunConfig(weights=str(weights)).weights == str(weights)


def test_the_digest_of_the_defaults_does_not_move():
    assert RunConfig().digest() == DEFAULT_DIGEST


def test_settings_added_later_are_left_out_at_their_legacy_values():
    """The digest is SHA-256 of the settings as sorted JSON, without the later ones at their old values."""
    fields = {k: v for k, v in dataclasses.asdict(RunConfig()).items() if k not in LATER_FIELDS}
    assert RunConfig().digest() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    assert LATER_FIELDS == {"target": "class", "occlude": "none", "occlude_fraction": 0.6, "split_by": "patient",
                            "test_sources": [], "model": "vgg16"}


@pytest.mark.parametrize(("field", "value"), [
    ("input", "cxr"), ("loss", "scce"), ("seed", 1), ("split_seed", 1), ("epochs", 21), ("batch_size", 8),
    ("image_size", 64), ("width", 0.5), ("learning_rate", 2e-4), ("optimizer", "sgd"), ("patience", 4),
    ("deterministic", False), ("jit_compile", True), ("mixed_precision", True), ("augment", True),
    ("test_fraction", 0.2), ("val_fraction", 0.2), ("head_units", 128), ("head_activation", "gelu"),
    ("dropout", 0.3), ("focal_gamma", 1.0), ("target", "source"), ("occlude", "center"),
    ("occlude_fraction", 0.7), ("split_by", "source"), ("test_sources", ("a",)), ("model", "resnet50"),
])
def test_every_setting_is_in_the_digest(field, value):
    changed = RunConfig(**{field: value})
    assert changed.digest() != DEFAULT_DIGEST
    assert changed.digest() == RunConfig(**{field: value}).digest()


def test_test_sources_are_a_tuple_whatever_they_were_given_as():
    assert RunConfig(test_sources=["a", "b"]).test_sources == ("a", "b")
    assert RunConfig(test_sources=["a", "b"]).digest() == RunConfig(test_sources=("a", "b")).digest()
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().seed = 1


def test_run_names():
    assert run_name(RunConfig(input="cxr", loss="scce"), 2) == "cxr-scce-r2"
    assert run_name(RunConfig(model="densenet121"), 0) == "densenet121-enh-cce-r0"


def _identity(path):
    from phasefeat.io.store import open_store

    with open_store(path) as store:
        return store_identity(store)


@pytest.mark.parametrize("change", ["label", "sha256", "class name", "params digest", "features at", "size"])
def test_the_store_identity_follows_the_content_not_the_path(tmp_path, change):
    a, b = tiny_store(tmp_path / "a.h5"), tiny_store(tmp_path / "b.h5")
    assert _identity(a) == _identity(b)
    if change == "size":
        b = tiny_store(tmp_path / "c.h5", size=9)
    with h5py.File(b, "r+") as f:
        if change == "label":
            f["labels"][1] = 2
        elif change == "sha256":
            f["meta/sha256"][0] = "f" * 64
        elif change == "class name":
            f["class_names"][0] = "covid19"
        elif change == "params digest":
            f.attrs["params_digest"] = "0" * 64
        elif change == "features at":
            f.attrs["features_at"] = "native"
    assert _identity(a) != _identity(b)


def _float_store(path, bad):
    enh = np.full((6, 8, 8, 3), 0.5, np.float32)
    for i in bad:
        enh[i, 0, 0, 0] = np.nan
    return tiny_store(path, n=6, enh_dtype="float32", enh=enh)


def test_check_values_names_the_first_three_bad_samples_and_counts_the_rest(tmp_path):
    with pytest.raises(GridError, match=r"holds NaN.* in 2 sample\(s\): #1 \(f1.png\), #4 \(f4.png\); convert"):
        check_values(_float_store(tmp_path / "a.h5", [1, 4]), "enh")
    with pytest.raises(GridError, match=r"in 6 sample\(s\): #0 \(f0.png\), #1 \(f1.png\), #2 \(f2.png\) and 3 more"):
        check_values(_float_store(tmp_path / "b.h5", [0, 1, 2, 3, 4, 5]), "enh")
    with pytest.raises(GridError, match=r"in 4 sample\(s\): #0 \(f0.png\), #1 \(f1.png\), #2 \(f2.png\) and 1 more"):
        check_values(_float_store(tmp_path / "e.h5", [0, 1, 2, 5]), "enh")
    with pytest.raises(GridError, match=r"in 3 sample\(s\): #0 \(f0.png\), #1 \(f1.png\), #2 \(f2.png\); convert"):
        check_values(_float_store(tmp_path / "c.h5", [0, 1, 2]), "enh")
    check_values(_float_store(tmp_path / "d.h5", []), "enh")
    with pytest.raises(GridError, match="no such file"):
        check_values(tmp_path / "none.h5", "enh")


def test_store_info_reads_what_a_run_needs(tmp_path):
    path = tiny_store(tmp_path / "s.h5", n=6, masks=True)
    info = store_info(path, "cxr")
    assert info["labels"].tolist() == [0, 1, 2, 0, 1, 2] and info["class_names"] == CLASSES
    assert info["shape"] == (6, 8, 8, 1) and info["dtype"] == np.uint8 and info["sources"] == ["a"] * 6
    assert PhaseParams.from_json(info["params_json"]) == PhaseParams() and info["params_digest"] == ""
    assert info["has_masks"].tolist() == [True, False] * 3 and info["store_identity"] == _identity(path)
    assert info["patient_ids"] == ["p0", "", "p2", "", "p4", ""] and info["sha256"][5] == f"{5:064d}"
    with pytest.raises(GridError, match="input must be cxr or enh, got 'mask'"):
        store_info(path, "mask")
    with pytest.raises(GridError, match="no such file"):
        store_info(tmp_path / "none.h5", "enh")
    with pytest.raises(GridError, match="holds no samples"):
        store_info(tiny_store(tmp_path / "empty.h5", n=0), "enh")


def test_store_info_of_the_source_target(tmp_path):
    path = tiny_store(tmp_path / "s.h5", n=6)
    with h5py.File(path, "r+") as f:
        f["meta/source"][...] = np.array(["zeta", "alpha", "zeta", "alpha", "mid", "zeta"], dtype=object)
    info = store_info(path, "enh", target="source")
    assert info["class_names"] == ["alpha", "mid", "zeta"] and info["labels"].tolist() == [2, 0, 2, 0, 1, 2]
    assert info["labels"].dtype == np.int32
    assert info["class_labels"].tolist() == [0, 1, 2, 0, 1, 2] and info["class_names_of_store"] == CLASSES
    with h5py.File(path, "r+") as f:
        f["meta/source"][1] = ""
        f["meta/source"][3] = ""
    with pytest.raises(GridError, match="2 of 6 samples of .* have no source; convert with --source-pattern"):
        store_info(path, "enh", target="source")


def test_prepare_split_follows_the_settings(tmp_path):
    path = tiny_store(tmp_path / "s.h5", n=60, masks=True)
    with h5py.File(path, "r+") as f:
        f["meta/source"][...] = np.array([f"s{i // 6}" for i in range(60)], dtype=object)  # 10 of 6 images
        f["meta/sha256"][7] = f["meta/sha256"][9]  # two identical files: one part
    split = prepare_split(path, RunConfig(split_seed=3))
    assert split.seed == 3 and split.test_fraction == 0.3 and len(split.test) == 18
    parts = {int(i): k for k, idx in enumerate((split.train, split.val, split.test)) for i in idx}
    assert parts[7] == parts[9]
    assert prepare_split(path, RunConfig(test_fraction=0.5)).test.size == 30
    external = prepare_split(path, RunConfig(test_sources=("s9",), split_seed=1))
    with h5py.File(path) as f:
        sources = f["meta/source"].asstr()[()]
    assert set(sources[external.test]) == {"s9"} and external.seed == 1 and len(external.test) == 6
    by_source = prepare_split(path, RunConfig(split_by="source"))
    assert by_source.grouped
    for part in (by_source.train, by_source.val, by_source.test):
        for s in set(sources[part]):
            assert (sources == s).sum() == (sources[part] == s).sum()  # a source lies in one part
    with h5py.File(path, "r+") as f:
        f["meta/has_mask"][:40] = True  # 10 of 60 without a mask (the odd ones from 41)
    with pytest.raises(GridError, match="--occlude lungs needs a lung mask for every image; 10 of 60 have none"):
        prepare_split(path, RunConfig(occlude="lungs"))
    with h5py.File(path, "r+") as f:
        f["meta/source"][0] = ""
    with pytest.raises(GridError, match="--split-by source needs a source for every sample"):
        prepare_split(path, RunConfig(split_by="source"))
    with pytest.raises(GridError, match="not in the store"):
        prepare_split(path, RunConfig(test_sources=("z",)))


def test_prepare_split_with_masks_everywhere_may_hide_the_lungs(tmp_path):
    path = tiny_store(tmp_path / "s.h5", n=30, masks=True)
    with h5py.File(path, "r+") as f:
        f["meta/has_mask"][...] = True
    assert len(prepare_split(path, RunConfig(occlude="non-lungs")).test) == 9


def test_cross_entropy_by_hand_and_clipped():
    p = np.array([[0.5, 0.5], [0.0, 1.0], [0.9, 0.1]])
    assert _cross_entropy(p, np.array([0, 1, 0])) == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 3)
    assert _cross_entropy(p, np.array([1, 0, 0])) == pytest.approx(-(np.log(0.5) + np.log(1e-7) + np.log(0.9)) / 3)


# ---- training (a few seconds each) ---------------------------------------------------------------

CFG = RunConfig(input="enh", width=0.0625, epochs=2, patience=3, batch_size=8, learning_rate=1e-2, augment=True)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return tiny_store(tmp_path_factory.mktemp("store") / "s.h5", n=30, size=32, seed=1)


@pytest.fixture(scope="module")
def uninterrupted(small_store, tmp_path_factory):
    pytest.importorskip("keras")
    from trainer.experiment import train_run

    out = tmp_path_factory.mktemp("whole") / "run"
    return out, train_run(small_store, CFG, out, progress=False)


def test_a_run_writes_what_defines_it(small_store, uninterrupted):
    out, result = uninterrupted
    split = prepare_split(small_store, CFG)
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result, default=float))
    assert result["config_digest"] == CFG.digest() and result["store_identity"] == _identity(small_store)
    assert result["config"] == dataclasses.asdict(CFG) and result["run"] == "run" and result["seed"] == 0
    assert result["split_sizes"] == [len(split.train), len(split.val), len(split.test)] == [15, 6, 9]
    assert result["epochs_run"] == 2 == len(result["history"]["loss"]) and result["resumed_at_epochs"] == []
    assert result["test_classes_present"] == CLASSES and result["class_names"] == CLASSES
    with np.load(out / "predictions.npz") as pred:
        assert pred["indices"].tolist() == split.test.tolist()
        assert pred["labels"].tolist() == (split.test % 3).tolist()
        probabilities = pred["probabilities"]
    assert probabilities.shape == (9, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert result["test_cross_entropy"] == pytest.approx(_cross_entropy(probabilities, split.test % 3), rel=1e-5)
    assert result["test_accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) == split.test % 3))
    assert result["metrics"]["confusion_matrix"] == np.bincount(
        3 * (split.test % 3) + probabilities.argmax(1), minlength=9).reshape(3, 3).tolist()
    assert not (out / "checkpoint.npz").exists() and (out / "model.keras").is_file()
    assert len(result["train_mean"]) == 3 == len(result["train_std"])


def test_a_run_trains_in_float32_deterministically_on_values_scaled_to_one(small_store, uninterrupted):
    import keras

    model = keras.saving.load_model(uninterrupted[0] / "model.keras", compile=False)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights()))
    assert uninterrupted[1]["weights_sha256"] == digest.hexdigest()  # the twin check of the report uses it
    assert model.get_layer("scale").scale == pytest.approx(1 / 255)  # uint8 images: 0..255 -> 0..1
    assert keras.config.dtype_policy().name == "float32" and model.dtype_policy.name == "float32"
    if keras.backend.backend() == "tensorflow":
        from tensorflow.python.framework import config  # the public API can only turn it on

        assert config.is_op_determinism_enabled()


class Interrupted(Exception):
    pass


def test_a_run_killed_after_an_epoch_resumes_to_the_same_weights(small_store, uninterrupted, tmp_path,
                                                                  monkeypatch):
    from trainer import checkpoint
    from trainer.experiment import train_run

    real = checkpoint.save_checkpoint

    def save_then_stop(path, model, identity, state):
        real(path, model, identity, state)
        if state["epochs_done"] == 1:
            raise Interrupted

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        train_run(small_store, CFG, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert (tmp_path / "run" / "checkpoint.npz").exists() and not (tmp_path / "run" / "result.json").exists()
    (tmp_path / "other").mkdir()
    shutil.copy(tmp_path / "run" / "checkpoint.npz", tmp_path / "other" / "checkpoint.npz")
    resumed = train_run(small_store, CFG, tmp_path / "run", progress=False,
                        expected_identity=_identity(small_store))  # as a grid runs it: the same store
    whole = uninterrupted[1]
    assert resumed["resumed_at_epochs"] == [1] and resumed["history"] == whole["history"]
    assert resumed["weights_sha256"] == whole["weights_sha256"] and resumed["test_loss"] == whole["test_loss"]
    # a checkpoint of other settings is not resumed from: the run says so instead of training on
    with pytest.raises(RunFailed, match="checkpoint"):
        train_run(small_store, dataclasses.replace(CFG, seed=1), tmp_path / "other", progress=False)


def test_a_run_on_another_store_than_planned_fails_before_training(small_store, tmp_path):
    pytest.importorskip("keras")
    from trainer.experiment import train_run

    for other in ("0" * 64, "f" * 64):  # an identity before or after this store's, in any order
        with pytest.raises(RunFailed, match="is not the store this grid was planned on"):
            train_run(small_store, CFG, tmp_path / "run", progress=False, expected_identity=other)
    assert not (tmp_path / "run").exists()


def test_a_run_outside_a_grid_checks_the_values_first(tmp_path):
    """A grid checks a float store's values once when it plans; a run on its own checks them itself."""
    pytest.importorskip("keras")
    from trainer.experiment import train_run

    enh = np.full((30, 32, 32, 3), 0.5, np.float32)
    enh[4, 0, 0, 0] = np.nan
    path = tiny_store(tmp_path / "s.h5", n=30, size=32, enh_dtype="float32", enh=enh)
    with pytest.raises(GridError, match=r"holds NaN.* in 1 sample\(s\): #4 \(f4.png\)"):
        train_run(path, CFG, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_seeding_on_another_backend_leaves_tensorflow_alone(monkeypatch, backend):
    """Only the TensorFlow backend is asked for op determinism: another backend may run without TensorFlow."""
    keras = pytest.importorskip("keras")
    import sys

    from trainer.experiment import _seed_everything

    pytest.importorskip(backend)  # keras seeds the backend's own generator
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # importing it now raises ImportError
    _seed_everything(3, deterministic=True)


def test_an_occluded_enh_run_derives_enh_from_the_occluded_radiograph(small_store, tmp_path, capsys):
    """Box 0.5 on ENH: the normalisation statistics are those of ENH recomputed from the blacked-out
    radiograph of the training images, not of the stored ENH."""
    pytest.importorskip("keras")
    from trainer.data import OccludedFeatures, channel_stats
    from trainer.experiment import train_run
    from trainer.model import occlusion_mask

    cfg = dataclasses.replace(CFG, occlude="center", occlude_fraction=0.5, epochs=1)
    result = train_run(small_store, cfg, tmp_path / "run")  # with its progress bar
    shown = capsys.readouterr()
    assert "None" not in (shown.out + shown.err).split()  # no empty CPU warning
    assert "━" not in shown.out + shown.err  # Keras' own progress bar stays off (verbose 0)
    assert "run(s) after it" not in shown.out + shown.err  # a run on its own has no grid to estimate
    split = prepare_split(small_store, cfg)
    info = store_info(small_store, "enh")
    mask = occlusion_mask(32, 32, "center", 0.5)
    derived = channel_stats(small_store, split.train, "enh", mask=mask,
                            derive=OccludedFeatures("center", 0.5, info["params_json"], info["dtype"]))
    stored = channel_stats(small_store, split.train, "enh", mask=mask)
    assert result["train_mean"] == pytest.approx(derived[0].tolist(), rel=1e-5)
    assert result["train_mean"] != pytest.approx(stored[0].tolist(), rel=1e-3)
