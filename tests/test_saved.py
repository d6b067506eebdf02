"""A saved model and the store it is evaluated on (trainer.saved): what fits, what is refused and why.

The rules are checked on the dictionaries a model and a store are described by, and on small saved
models; the commands that use them (`trainer evaluate`, `trainer explain`) are tested end to end in
tests/test_trainer.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer.saved import (
    ModelError,
    check_fit,
    evaluation_split,
    input_rescale,
    load_model,
    model_info,
    model_inputs,
    pixels_note,
)

NAMES = ["covid", "normal", "pneumonia"]


def info(**changes):
    base = {"input": "enh", "class_names": NAMES, "n_outputs": 3, "channels": 3, "target": "class",
            "occlude": "none", "occlude_fraction": 0.6, "store_params_digest": "a" * 64, "input_scale": 1 / 255,
            "split": {"split_seed": 0, "split_by": "patient", "test_sources": []},
            "store_identity": {"samples": {"count": 10}, "pixels": {"size": 32, "dtype": "uint8"}}}
    return {**base, **changes}


# -- does the model fit the store ---------------------------------------------------------------------------

def test_a_fitting_model_gives_its_input():
    assert check_fit(info(), NAMES, None, "a" * 64) == "enh"
    assert check_fit(info(), NAMES, "".join(["e", "nh"])) == "enh"  # as the command line gives it: equal, not the same
    assert check_fit(info(input="cxr", channels=1), NAMES, "cxr", "b" * 64) == "cxr"  # CXR needs no ENH params


@pytest.mark.parametrize(("changes", "names", "requested", "message"), [
    ({"input": None, "channels": 2}, NAMES, None,
     "the model takes 2-channel images; a store holds 1 (cxr) or 3 (enh)"),
    ({}, NAMES, "cxr", "the model was trained on ENH (3 channel(s)); --input cxr does not fit it"),
    ({"input": "cxr", "channels": 1}, NAMES, "enh", "the model was trained on CXR (1 channel(s)); --input enh does "
                                                    "not fit it"),
    ({}, NAMES[:2], None, "the model predicts 3 classes; the store has 2 (covid, normal)"),
    ({"target": "source", "n_outputs": 2}, ["a", "b", "c"], None,
     "the model predicts 2 sourcees; the store has 3 (a, b, c)"),
    ({}, ["normal", "covid", "pneumonia"], None,
     "the model's class names ['covid', 'normal', 'pneumonia'] differ from the store's ['normal', 'covid', "
     "'pneumonia'] (names and order must match)"),
    ({"class_names": ["normal", "covid", "pneumonia"]}, NAMES, None,
     "the model's class names ['normal', 'covid', 'pneumonia'] differ from the store's ['covid', 'normal', "
     "'pneumonia'] (names and order must match)"),
])
def test_a_model_that_does_not_fit_is_refused_with_why(changes, names, requested, message):
    with pytest.raises(ModelError) as refused:
        check_fit(info(**changes), names, requested, "a" * 64)
    assert str(refused.value) == message


@pytest.mark.parametrize(("model", "store"), [("a", "b"), ("b", "a")])
def test_an_enh_model_needs_enh_made_with_its_parameters(model, store):
    with pytest.raises(ModelError) as refused:
        check_fit(info(store_params_digest=model * 64), NAMES, None, store * 64)
    assert str(refused.value) == (f"the model was trained on ENH made with other feature parameters (digest "
                                  f"{model * 12}, the store's {store * 12}); convert the store with the model's "
                                  "parameters")
    assert check_fit(info(store_params_digest=None), NAMES, None, "b" * 64) == "enh"  # an earlier version's model
    assert check_fit(info(), NAMES, None, None) == "enh"


def test_a_model_of_hundreds_of_outputs_fits_a_store_of_as_many_names():
    names = [f"site {k}" for k in range(300)]
    assert check_fit(info(target="source", n_outputs=300, class_names=names), names, None, "a" * 64) == "enh"


def test_a_model_without_class_names_fits_any_store_of_as_many_classes():
    assert check_fit(info(class_names=None), ["x", "y", "z"], None) == "enh"


# -- what the batches need ------------------------------------------------------------------------------------

def _data(has_masks=(True, True), dtype="uint8"):
    return {"has_masks": np.array(has_masks), "params_json": "{}", "dtype": dtype}


def test_an_unoccluded_model_reads_the_stored_images():
    assert model_inputs(info(), "enh", _data()) == {"derive": None, "lung_mode": None, "rescale": None}


@pytest.mark.parametrize("occlude", ["center", "outside"])
def test_an_enh_model_trained_occluded_gets_enh_recomputed_after_the_same_occlusion(occlude):
    inputs = model_inputs(info(occlude=occlude, occlude_fraction=0.75), "enh", _data(dtype="float32"))
    derive = inputs["derive"]
    assert (derive.mode, derive.fraction, derive.params_json, derive.enh_dtype) == (occlude, 0.75, "{}",
                                                                                    np.dtype("float32"))
    assert inputs["lung_mode"] is None and inputs["rescale"] == pytest.approx(255.0)


@pytest.mark.parametrize("occlude", ["lungs", "non-lungs"])
def test_a_model_trained_with_lung_masks_needs_every_mask(occlude):
    inputs = model_inputs(info(occlude=occlude, input="cxr"), "cxr", _data())
    assert inputs["derive"] is None and inputs["lung_mode"] == occlude
    assert model_inputs(info(occlude=occlude), "enh", _data())["derive"].mode == occlude
    with pytest.raises(ModelError, match=f"^the model was trained with --occlude {occlude}; the store lacks "
                                         "lung masks$"):
        model_inputs(info(occlude=occlude), "enh", _data(has_masks=(True, False)))


def test_a_box_occlusion_needs_no_masks():
    assert model_inputs(info(occlude="center", input="cxr"), "cxr", _data(has_masks=(False,)))["derive"] is None


@pytest.mark.parametrize(("scale", "dtype", "factor"), [
    (None, "uint8", None), (0.0, "float32", None), (1 / 255, "uint8", None), (1 / 255, "float32", 255.0),
    (1 / 255, "uint16", 255 / 65535), (1.0, "uint8", 1 / 255), (1.0, "float32", None),
    (1 / 255 * (1 + 1e-7), "uint8", None),  # within rounding of the recorded factor: no rescale
])
def test_values_are_rescaled_to_the_scale_the_model_was_trained_on(scale, dtype, factor):
    got = input_rescale(info(input_scale=scale), dtype)
    assert got == (None if factor is None else pytest.approx(factor, rel=1e-9))


def test_a_rescale_of_almost_one_is_applied():
    assert input_rescale(info(input_scale=1 / 255 * (1 + 1e-5)), "uint8") == pytest.approx(1 / (1 + 1e-5))


def test_the_pixels_note_says_what_differs_and_how_values_are_rescaled():
    same = {"store_identity": {"pixels": {"size": 32, "dtype": "uint8"}}, "dtype": "uint8"}
    assert pixels_note(info(), same) == ""
    other = {"store_identity": {"pixels": {"size": 64, "dtype": "float32"}}, "dtype": "float32"}
    assert pixels_note(info(), other) == (
        "the store's pixels were made otherwise than the model's training images (size 32 -> 64; dtype uint8 -> "
        "float32): the results describe these pixels; its float32 values are rescaled by 255 to the scale the "
        "model was trained on (1.0 = 255)")
    assert pixels_note(info(store_identity="legacy digest"), other).startswith("its float32 values are rescaled")
    assert pixels_note(info(input_scale=0.4), {**same, "dtype": "float32"}) == (
        "its float32 values are rescaled by 2.5 to the scale the model was trained on (1.0 = 2.5)")
    assert pixels_note(info(store_identity={"samples": {"count": 10}}), other).startswith("its float32 values")


# -- which test set -------------------------------------------------------------------------------------------

STORE = {"samples": {"count": 10}, "pixels": {}}


def test_the_models_own_split_by_default():
    assert evaluation_split(info(), STORE) == ({"split_seed": 0, "split_by": "patient", "test_sources": []}, "")


def test_asking_for_the_models_own_settings_is_its_own_test_set():
    assert evaluation_split(info(), STORE, split_seed=0, split_by="patient", test_sources=())[1] == ""


def test_another_split_is_said_not_to_be_the_models_test_set():
    settings, note = evaluation_split(info(), STORE, split_seed=3, test_sources=("rsna",))
    assert settings == {"split_seed": 3, "split_by": "patient", "test_sources": ["rsna"]}
    assert note == ("not the model's own test set (split seed, test sources differ from the model's split seed 0, "
                    "grouped by patient): these test images may include ones it was trained on")


def test_settings_asked_below_the_models_are_said_to_differ():
    recorded = info(split={"split_seed": 5, "split_by": "source", "test_sources": ["b"]})
    note = evaluation_split(recorded, STORE, split_seed=2, split_by="patient", test_sources=["a"])[1]
    assert note.startswith("not the model's own test set (split by, split seed, test sources differ from the model's")


def test_a_store_of_other_samples_is_refused_unless_a_split_is_asked():
    other = {"samples": {"count": 12}, "pixels": {}}
    with pytest.raises(ModelError) as refused:
        evaluation_split(info(), other, store_path="b.h5")
    assert str(refused.value) == ("b.h5 does not hold the samples this model was split on (sample count 10 -> 12), so "
                                  "its test set cannot be rebuilt here; pass --split-seed (and --split-by, "
                                  "--test-source) to evaluate on a split of this store")
    settings, note = evaluation_split(info(), other, split_by="file", store_path="b.h5")
    assert settings["split_by"] == "file" and note == (
        "b.h5 is not the store the model was split on: the test part of split seed 0, grouped by file may hold "
        "images the model was trained on")


def test_a_model_of_an_earlier_version_is_evaluated_on_the_default_split_with_a_warning():
    settings, note = evaluation_split(info(split=None), STORE, test_sources=["x"])
    assert settings == {"split_seed": 0, "split_by": "patient", "test_sources": ["x"]}
    assert note == ("the model does not record its split (an earlier version): this is the test part of split "
                    "seed 0, grouped by patient, test sources x; make sure it is the split the model was trained "
                    "with")


def test_an_earlier_versions_store_digest_is_matched_against_the_stores():
    old = info(store_identity="digest-1")
    settings, note = evaluation_split(old, STORE, legacy_identity="-".join(["digest", "1"]))  # equal, not the same
    assert note.startswith("the model records an earlier version's store identity, which left out patient ids")
    for other in ("digest-0", "digest-2"):  # another store's digest, sorting either way
        with pytest.raises(ModelError, match=r"\(the model records an earlier version's identity\)"):
            evaluation_split(old, STORE, legacy_identity=other)
    assert evaluation_split(old, STORE, split_seed=0, legacy_identity="-".join(["digest", "1"]))[1] == ""


def test_a_model_that_records_no_store_is_evaluated_on_its_split():
    assert evaluation_split(info(store_identity=None), STORE) == (info()["split"], "")


# -- loading ---------------------------------------------------------------------------------------------------

def test_what_is_not_a_keras_model_is_named(tmp_path):
    with pytest.raises(ModelError, match=r"^model file \S+gone.keras does not exist$"):
        load_model(tmp_path / "gone.keras")
    (tmp_path / "store.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ModelError, match=r"store.h5 is not a Keras model \(.keras files are zip archives; this one "
                                         r"is not; it looks like an HDF5 store: pass it as --store\)$"):
        load_model(tmp_path / "store.h5")
    (tmp_path / "image.keras").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)  # sorts after HDF5's signature
    with pytest.raises(ModelError, match=r"image.keras is not a Keras model \(.keras files are zip archives; this "
                                         r"one is not\)$"):
        load_model(tmp_path / "image.keras")
    (tmp_path / "notes.keras").write_text("hello")
    with pytest.raises(ModelError, match=r"notes.keras is not a Keras model \(.keras files are zip archives; this "
                                         r"one is not\)$"):
        load_model(tmp_path / "notes.keras")


def test_a_loading_error_is_one_line_of_300_characters_at_most():
    from trainer.saved import _one_line

    assert _one_line(ValueError("\x1b[31mbad\x1b[0m\n  file " + "x" * 400)) == ("bad file " + "x" * 400)[:300]


def test_code_that_safe_mode_refuses_is_named_so(tmp_path, monkeypatch):
    import zipfile

    import keras

    with zipfile.ZipFile(tmp_path / "custom.keras", "w") as archive:
        archive.writestr("config.json", "{}")

    def refuse(*args, **kwargs):  # what Keras says of a custom function in a model file
        raise ValueError("Requested the deserialization of `my_function`, a Python function. Pass "
                         "`safe_mode=False` to load it")

    monkeypatch.setattr(keras.saving, "load_model", refuse)
    with pytest.raises(ModelError, match=r"^refused: \S+custom.keras contains code safe mode does not load; safe "
                                         r"mode does not run code from model files$"):
        load_model(tmp_path / "custom.keras")


def test_a_zip_that_is_no_model_and_a_model_with_code_are_refused(tmp_path):
    import zipfile

    import keras

    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("readme.txt", "\x1b[31mnot\n a   model\x1b[0m")
    with pytest.raises(ModelError, match=r"^cannot load \S+other.keras as a Keras model \(.+\)$") as refused:
        load_model(tmp_path / "other.keras")
    assert "\n" not in str(refused.value) and "\x1b" not in str(refused.value)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(tmp_path / "code.keras")
    with pytest.raises(ModelError, match=r"^refused: \S+code.keras contains a Lambda layer; safe mode does not run "
                                         r"code from model files$"):
        load_model(tmp_path / "code.keras")


def test_a_saved_model_tells_what_it_was_trained_on(tmp_path):
    from trainer.model import classifier

    recorded = {"input": "cxr", "class_names": NAMES, "target": "class", "occlude": "center",
                "occlude_fraction": 0.5, "store_params_digest": "d", "split": {"split_seed": 1},
                "store_identity": {"samples": "s"}}
    model = classifier("vgg16", (32, 32, 1), 3, width=0.0625, info=recorded,
                       preprocessing={"scale": 1 / 255, "mean": [0.5], "std": [0.25]})
    model.save(tmp_path / "m.keras")
    got = model_info(load_model(tmp_path / "m.keras"))
    assert got == {**recorded, "n_outputs": 3, "image_size": 32, "channels": 1, "recorded": True,
                   "input_scale": pytest.approx(1 / 255)}


def test_only_the_layer_named_run_info_tells_what_the_model_was_trained_on():
    import keras

    from trainer.model import run_info_layer

    inputs = keras.Input((8, 8, 1))
    x = run_info_layer({"input": "cxr", "class_names": NAMES})(inputs)
    x = run_info_layer({"input": "enh", "class_names": ["a", "b", "c"]}, name="source_info")(x)
    x = run_info_layer({"input": "enh", "class_names": ["d", "e", "f"]}, name="audit_info")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    got = model_info(model)
    assert (got["input"], got["class_names"]) == ("cxr", NAMES)


def test_the_input_scale_is_read_from_the_layer_named_scale_only():
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)  # has a `scale` attribute too (True: use gamma)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    assert model_info(model)["input_scale"] == pytest.approx(1 / 255)


def test_a_model_is_loaded_without_its_optimizer_and_loss(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert loaded.compiled is False and getattr(loaded, "optimizer", None) is None


def test_the_image_size_is_the_inputs_height():
    import keras

    model = keras.Sequential([keras.Input((16, 24, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    assert model_info(model)["image_size"] == 16


def test_an_earlier_versions_model_is_evaluated_on_its_split_of_the_store(tmp_path):
    from datasets import tiny_store

    from phasefeat.io.identity import legacy_identity
    from phasefeat.io.store import open_store
    from trainer.experiment import store_info
    from trainer.saved import model_test_split

    path = tiny_store(tmp_path / "s.h5", n=12)
    with open_store(path) as store:
        digest = legacy_identity(store)
    data = store_info(path, "cxr")
    old = info(input="cxr", store_identity=digest, split={"split_seed": 1, "split_by": "patient", "test_sources": []})
    split, settings, note = model_test_split(path, old, data, "cxr")
    assert settings["split_seed"] == 1 and len(split.test) > 0
    assert note.startswith("the model records an earlier version's store identity")
    new = info(input="cxr", store_identity=data["store_identity"], split=settings)
    assert model_test_split(path, new, data, "cxr")[2] == ""


def test_the_outputs_are_counted_on_the_last_axis():
    import keras

    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(6),
                              keras.layers.Reshape((2, 3))])
    assert model_info(model)["n_outputs"] == 3


@pytest.mark.parametrize(("channels", "inferred"), [(1, "cxr"), (3, "enh"), (2, None)])
def test_a_model_of_an_earlier_version_is_described_by_its_shape(channels, inferred):
    import keras

    model = keras.Sequential([keras.Input((16, 16, channels)), keras.layers.Flatten(), keras.layers.Dense(4)])
    assert model_info(model) == {"input": inferred, "class_names": None, "n_outputs": 4, "image_size": 16,
                                 "channels": channels, "target": "class", "occlude": "none",
                                 "occlude_fraction": 0.6, "recorded": False, "store_params_digest": None,
                                 "split": None, "store_identity": None, "input_scale": None}
