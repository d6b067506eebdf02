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
from phasefeat.io.identity import describe_difference, identity_digest, legacy_identity
from phasefeat.io.store import open_store
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


def _replace_images(f, what: str, values) -> None:
    """``/what`` rewritten with ``values`` (another dtype), as a conversion with that dtype writes it."""
    del f[what]
    f.create_dataset(what, data=values, chunks=(1, *values.shape[1:]))


# What each change reads as in one line: (part, how the identity's description names it).
IDENTITY_CHANGES = {
    "label": ("samples", "labels differ"), "sha256": ("samples", "image files differ"),
    "class name": ("samples", "class names differ"), "patient id": ("samples", "patient ids differ"),
    "source": ("samples", "sources differ"), "mask": ("samples", "lung masks differ"),
    "params digest": ("pixels", "feature parameters differ"), "preset": ("pixels", "preset qi2021 -> kovesi"),
    "features at": ("pixels", "features at (none) -> native"), "fit": ("pixels", "fit (none) -> pad"),
    "size": ("pixels", "CXR 8x8x1 uint8 -> 9x9x1 uint8; ENH 8x8x3 uint8 -> 9x9x3 uint8"),
    "cxr dtype": ("pixels", "CXR 8x8x1 uint8 -> 8x8x1 uint16"),
    "enh dtype": ("pixels", "ENH 8x8x3 uint8 -> 8x8x3 float32"),
}


@pytest.mark.parametrize("change", list(IDENTITY_CHANGES))
def test_the_store_identity_follows_the_content_not_the_path(tmp_path, change):
    """Everything that decides what a model sees is in the identity: the samples a split is made of,
    and how their pixels were made (a store converted again with --fit, --cxr-dtype, --enh-dtype or
    --patient-pattern had the same identity before)."""
    a, b = tiny_store(tmp_path / "a.h5", masks=True), tiny_store(tmp_path / "b.h5", masks=True)
    assert _identity(a) == _identity(b)
    if change == "size":
        a = tiny_store(tmp_path / "c.h5", masks=True, size=8)
        b = tiny_store(tmp_path / "d.h5", masks=True, size=9)
    with h5py.File(b, "r+") as f:
        if change == "label":
            f["labels"][1] = 2
        elif change == "sha256":
            f["meta/sha256"][0] = "f" * 64
        elif change == "class name":
            f["class_names"][0] = "covid19"
        elif change == "patient id":
            f["meta/patient_id"][1] = "p0"  # grouped with sample 0: another split
        elif change == "source":
            f["meta/source"][0] = "b"
        elif change == "mask":
            f["meta/has_mask"][1] = True
        elif change == "params digest":
            f.attrs["params_digest"] = "0" * 64
        elif change == "preset":
            f.attrs["preset"] = "kovesi"
        elif change == "features at":
            f.attrs["features_at"] = "native"
        elif change == "fit":
            f.attrs["fit"] = "pad"
        elif change == "cxr dtype":
            _replace_images(f, "cxr", f["cxr"][()].astype(np.uint16) * 257)
        elif change == "enh dtype":
            _replace_images(f, "enh", f["enh"][()].astype(np.float32) / 255)
    if change == "preset":
        with h5py.File(a, "r+") as f:
            f.attrs["preset"] = "qi2021"
    old, new = _identity(a), _identity(b)
    part, said = IDENTITY_CHANGES[change]
    assert old != new and identity_digest(old) != identity_digest(new)
    assert [k for k in old if old[k] != new[k]] == [part]
    assert describe_difference(old, new) == said


def test_an_identity_of_an_earlier_version_is_said_to_be_one(tmp_path):
    path = tiny_store(tmp_path / "a.h5")
    with open_store(path) as store:
        legacy = legacy_identity(store)
    assert describe_difference(legacy, _identity(path)).startswith("one of them was recorded by an earlier version")
    assert identity_digest(legacy) == legacy and len(legacy) == 64
    assert describe_difference(_identity(path), _identity(path)) == ""


@pytest.mark.parametrize("empty", ["covid", "pneumonia"])
def test_a_class_without_images_is_refused_first_or_last(tmp_path, empty):
    """An empty last class trained a 3-class model and averaged the empty class into macro F1;
    an empty first class was refused by the split. Both are refused alike, by name."""
    labels = [CLASSES.index(c) for c in CLASSES if c != empty] * 4
    path = tiny_store(tmp_path / "s.h5", n=len(labels), labels=labels)
    with pytest.raises(GridError, match=rf"class '{empty}' holds no image \(its files failed to convert"):
        store_info(path, "enh")
    with pytest.raises(GridError, match=rf"class '{empty}' holds no image"):
        prepare_split(path, RunConfig(input="enh"))
    one = tiny_store(tmp_path / "one.h5", n=4, labels=[1, 1, 1, 1])
    with pytest.raises(GridError, match=r"classes 'covid' and 'pneumonia' hold no image"):
        store_info(one, "enh")


def test_the_split_counts_every_class_of_the_store():
    """The split's class count comes from the store's class list, not from the largest label."""
    from trainer.splits import SplitError, make_split

    labels = np.array([0, 1] * 10)
    make_split(labels, seed=0)  # two classes seen: two checked
    with pytest.raises(SplitError, match=r"class\(es\) \[2\] have fewer than 1 sample\(s\) in the train part "
                                         r"\(class sizes \[10, 10, 0\]\)"):
        make_split(labels, seed=0, n_classes=3)


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
    # a probability a rounding step above 1 counts as certainty: a loss is never negative
    assert _cross_entropy(np.array([[1.0000001, 0.0]]), np.array([0])) == 0.0


# ---- training (a few seconds each) ---------------------------------------------------------------

# Four training batches: a batch order drawn from Python's global generator (Keras' own shuffle, which a
# checkpoint cannot restore) would make the resumed run differ from the uninterrupted one.
CFG = RunConfig(input="enh", width=0.0625, epochs=2, patience=3, batch_size=4, learning_rate=1e-2, augment=True)


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


def _interrupt_after(monkeypatch, epochs_done: int) -> None:
    """Make a run stop right after writing the checkpoint of epoch ``epochs_done``, as a kill would."""
    from trainer import checkpoint

    real = checkpoint.save_checkpoint

    def save_then_stop(path, model, identity, state):
        real(path, model, identity, state)
        if state["epochs_done"] == epochs_done:
            raise Interrupted

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_stop)


def _forbid_training(monkeypatch) -> None:
    import keras

    def no_fit(*args, **kwargs):
        raise AssertionError("a run with all its epochs done trained again")

    monkeypatch.setattr(keras.Model, "fit", no_fit)


def test_a_run_killed_after_an_epoch_resumes_to_the_same_weights(small_store, uninterrupted, tmp_path,
                                                                  monkeypatch):
    from trainer.experiment import train_run

    _interrupt_after(monkeypatch, 1)
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


# ---- a run up to its training, or around it (no training: a second or two each) ------------------

class Stopped(Exception):
    pass


def _stop_at_fit(monkeypatch) -> dict:
    """Make ``train_run`` stop where it would train; returns what it had built by then: the model,
    the normalisation statistics and the mask they were computed with."""
    from trainer import data, experiment

    seen = {}
    real_stats = data.channel_stats

    def stats(*args, **kwargs):
        seen["mask"] = kwargs.get("mask")
        seen["stats"] = real_stats(*args, **kwargs)
        return seen["stats"]

    def stop(model, *args):
        seen["model"] = model
        raise Stopped

    monkeypatch.setattr(data, "channel_stats", stats)
    monkeypatch.setattr(experiment, "_fit", stop)
    return seen


def _run_to_fit(monkeypatch, store, cfg, out, **kwargs) -> dict:
    pytest.importorskip("keras")
    from trainer.experiment import train_run

    seen = _stop_at_fit(monkeypatch)
    with pytest.raises(Stopped):
        train_run(store, cfg, out, **kwargs)
    return seen


@pytest.mark.parametrize(("image_size", "shape"), [(None, (32, 40)), (48, (48, 48))])
def test_a_run_keeps_a_non_square_store_s_shape_unless_resized(tmp_path, monkeypatch, image_size, shape):
    store = tiny_store(tmp_path / "s.h5", n=30, size=(32, 40))
    cfg = dataclasses.replace(CFG, image_size=image_size)
    seen = _run_to_fit(monkeypatch, store, cfg, tmp_path / "run", progress=False)
    assert tuple(seen["model"].input_shape) == (None, *shape, 3)


@pytest.mark.parametrize("what", ["cxr", "enh"])
def test_a_box_occluded_run_on_a_non_square_store_normalises_what_the_model_sees(tmp_path, monkeypatch, what):
    """``outside`` keeps only the central box; CXR statistics are those of the masked radiographs, ENH
    statistics those of ENH recomputed from them (not of the stored ENH, masked or not)."""
    from trainer.data import OccludedFeatures, channel_stats
    from trainer.model import occlusion_mask

    store = tiny_store(tmp_path / "s.h5", n=30, size=(32, 40))
    cfg = dataclasses.replace(CFG, input=what, occlude="outside", occlude_fraction=0.5)
    seen = _run_to_fit(monkeypatch, store, cfg, tmp_path / "run", progress=False)
    mask = occlusion_mask(32, 40, "outside", 0.5)
    assert np.array_equal(seen["mask"], mask)
    train = prepare_split(store, cfg).train
    info = store_info(store, what)
    derive = OccludedFeatures("outside", 0.5, info["params_json"], info["dtype"]) if what == "enh" else None
    expected = channel_stats(store, train, what, mask=mask, derive=derive)
    assert seen["stats"][0].tolist() == pytest.approx(expected[0].tolist(), rel=1e-6)
    assert seen["stats"][0].tolist() != pytest.approx(channel_stats(store, train, what)[0].tolist(), rel=1e-3)
    if what == "enh":
        stored = channel_stats(store, train, what, mask=mask)
        assert seen["stats"][0].tolist() != pytest.approx(stored[0].tolist(), rel=1e-3)


def test_a_weighted_cce_run_weighs_by_the_training_split_s_classes(tmp_path, monkeypatch):
    from trainer.losses import class_weights

    labels = np.array([0] * 20 + [1] * 7 + [2] * 6)  # weights far from 1
    store = tiny_store(tmp_path / "s.h5", n=33, size=32, labels=labels)
    cfg = dataclasses.replace(CFG, loss="weighted_cce")
    seen = _run_to_fit(monkeypatch, store, cfg, tmp_path / "run", progress=False)
    weights = class_weights(labels[prepare_split(store, cfg).train], 3)
    assert seen["model"].loss.weights == pytest.approx(weights) and max(weights) > 1.5 * min(weights)


@pytest.mark.parametrize("loss", ["cce", "scce", "focal", "weighted_cce"])
def test_only_the_weighted_loss_needs_every_class_in_the_training_split(tmp_path, monkeypatch, loss):
    """An external test source can leave a class's only training patient in validation. The class weights
    divide by the training counts, so `weighted_cce` refuses that split in one line; every other loss trains."""
    from trainer.splits import Split

    labels = np.arange(30) % 3
    store = tiny_store(tmp_path / "s.h5", n=30, size=32, labels=labels)
    index = np.arange(30)
    split = Split(train=index[:20][labels[:20] != 2], val=np.sort(np.r_[index[:20][labels[:20] == 2], 20, 21, 22]),
                  test=index[23:], seed=0, test_fraction=0.2, val_fraction=0.3, grouped=False)
    cfg = dataclasses.replace(CFG, loss=loss)
    if loss == "weighted_cce":
        with pytest.raises(ValueError, match="a class has no training samples"):
            _run_to_fit(monkeypatch, store, cfg, tmp_path / "run", split=split, progress=False)
        return
    seen = _run_to_fit(monkeypatch, store, cfg, tmp_path / "run", split=split, progress=False)
    assert seen["model"].output_shape == (None, 3)  # built, compiled and handed to fit


def test_full_width_vgg16_on_a_cpu_warns_with_the_image_size(tmp_path, monkeypatch, capsys):
    """With the defaults (progress shown) the warning names the model's input size, height x width."""
    from trainer import experiment

    monkeypatch.setattr(experiment, "training_device", lambda: "CPU")  # also on a GPU machine
    store = tiny_store(tmp_path / "s.h5", n=30, size=(32, 40))
    _run_to_fit(monkeypatch, store, dataclasses.replace(CFG, width=1.0), tmp_path / "run")
    shown = capsys.readouterr()
    assert "warning: full-width VGG16 at 32x40 is training on a CPU" in shown.out + shown.err
    _run_to_fit(monkeypatch, store, dataclasses.replace(CFG, width=1.0), tmp_path / "run", progress=False)
    assert "warning" not in "".join(capsys.readouterr())


def test_a_run_reads_in_threads_shuffles_its_training_batches_and_closes_the_store(small_store, tmp_path,
                                                                                  monkeypatch):
    """Training skipped (the evaluation of the untrained model follows): the batch readers are threads
    of this process (h5py handles must not cross processes), the training reader serves a new order
    of the training split each epoch, val and test read in index order (the predictions follow
    ``split.test``), and all of them are closed when the run ends, which also finishes when its
    checkpoint is already gone (another worker finished the same run)."""
    pytest.importorskip("keras")
    from trainer import data, experiment

    readers = []

    class Recorded(data.StoreBatches):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            readers.append(self)

    monkeypatch.setattr(data, "StoreBatches", Recorded)
    monkeypatch.setattr(experiment, "_fit", lambda *args: ({"loss": [1.0], "val_loss": [1.0]}, 0.0, []))
    result = experiment.train_run(small_store, CFG, tmp_path / "run", progress=False)
    split = prepare_split(small_store, CFG)
    train, val, test = readers
    assert result["epochs_run"] == 1 and (tmp_path / "run" / "result.json").is_file()
    assert not any(r.use_multiprocessing for r in readers) and {r.workers for r in readers} == {1}
    assert all(r._store is None for r in readers)
    assert val._order.tolist() == split.val.tolist() and test._order.tolist() == split.test.tolist()
    orders = []
    for epoch in (0, 1):
        train.set_epoch(epoch)
        orders.append(train._order.tolist())
    assert sorted(orders[0]) == sorted(split.train.tolist()) and orders[0] != orders[1]


def test_a_run_killed_after_its_last_epoch_finishes_without_training_again(small_store, uninterrupted, tmp_path,
                                                                          monkeypatch, capsys):
    """Killed between its last checkpoint and its result: the resumed run trains no epoch and ends
    with the weights of the uninterrupted run. With the defaults, Keras prints nothing of its own."""
    from trainer.experiment import train_run

    _interrupt_after(monkeypatch, CFG.epochs)
    with pytest.raises(Interrupted):
        train_run(small_store, CFG, tmp_path / "run")
    assert "Epoch 1/" not in capsys.readouterr().out  # verbose 0: no Keras epoch lines
    monkeypatch.undo()
    _forbid_training(monkeypatch)
    resumed = train_run(small_store, CFG, tmp_path / "run", progress=False)
    whole = uninterrupted[1]
    assert resumed["resumed_at_epochs"] == [CFG.epochs] and resumed["history"] == whole["history"]
    assert resumed["weights_sha256"] == whole["weights_sha256"] and resumed["test_loss"] == whole["test_loss"]


def _as_if_of(checkpoint_path, cfg, epochs_done: int, out) -> None:
    """The checkpoint at ``checkpoint_path`` rewritten as one of ``cfg`` after ``epochs_done`` epochs."""
    with np.load(checkpoint_path) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["identity"]["config_digest"] = cfg.digest()
    meta["state"]["epochs_done"] = epochs_done
    out.mkdir()
    np.savez(out / "checkpoint.npz", meta=np.array(json.dumps(meta)), **arrays)


def test_a_long_run_killed_after_its_last_epoch_does_not_train_again(small_store, tmp_path, monkeypatch):
    """300 epochs, all done: the epoch count read from the checkpoint is another int object than the
    setting's (CPython shares only -5..256), and the run still sees that it has finished."""
    from trainer.experiment import train_run

    _interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        train_run(small_store, CFG, tmp_path / "cut", progress=False)
    monkeypatch.undo()
    long = dataclasses.replace(CFG, epochs=300)
    _as_if_of(tmp_path / "cut" / "checkpoint.npz", long, 300, tmp_path / "run")
    _forbid_training(monkeypatch)
    resumed = train_run(small_store, long, tmp_path / "run", progress=False)
    assert resumed["resumed_at_epochs"] == [300] and resumed["epochs_run"] == 1


def test_a_run_s_data_workers_do_not_change_its_result(small_store, uninterrupted, tmp_path):
    """Two reader threads (``--workers 2``) train the same weights as one: each batch's order and
    augmentation are drawn from (seed, epoch, batch), not from a shared generator."""
    from trainer.experiment import train_run

    result = train_run(small_store, CFG, tmp_path / "run", progress=False, workers=2)
    assert result["weights_sha256"] == uninterrupted[1]["weights_sha256"]
    assert result["history"] == uninterrupted[1]["history"]
