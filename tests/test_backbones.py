"""Backbones beyond VGG16: each builds for CXR and ENH, trains a step, saves, loads safely, evaluates."""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from trainer.backbones import BACKBONES, MODEL_NAMES, load_weights
from trainer.cli import cli
from trainer.model import classifier
from trainer.saved import load_model, model_info

# Each backbone trains with one channel count (alternating: the stem is the only difference) and is
# built with the other. The step runs eagerly: traced into a graph, densenet121's one step took 50 s on the
# 2-core VM (4 s eagerly; the whole test 66 s -> 14 s), which tests TensorFlow, not the backbone; graph-mode
# training of a backbone other than VGG16 is the CLI's, in test_compare_over_two_models_and_two_inputs.
TRAINED = [(name, 1 if k % 2 == 0 else 3) for k, name in enumerate(BACKBONES)]


@pytest.mark.parametrize(("name", "channels"), [(n, 4 - c) for n, c in TRAINED])
def test_backbone_builds_for_the_other_input(name, channels):
    model = classifier(name, (64, 64, channels), 2)
    assert model.input_shape == (None, 64, 64, channels) and model.output_shape == (None, 2)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "channels"), TRAINED)
def test_backbone_trains_a_step_saves_and_loads_safely(name, channels, tmp_path):
    model = classifier(name, (64, 64, channels), 3, preprocessing={"scale": 1 / 255, "mean": [0.5] * channels,
                                                                   "std": [0.25] * channels},
                       info={"model": name, "input": "cxr" if channels == 1 else "enh",
                             "class_names": ["a", "b", "c"]})
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    # Seeded: eager random ops (dropout) refuse to run unseeded once a run in this process has turned on
    # TensorFlow's op determinism (trainer's --deterministic, the default).
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 64, 64, channels)).astype("uint8")
    y = np.array([0, 1, 2, 0])
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    assert model_info(loaded)["input"] == ("cxr" if channels == 1 else "enh")
    assert np.allclose(loaded(x, training=False), model(x, training=False), atol=1e-5)


def test_width_is_a_vgg16_option_only():
    with pytest.raises(ValueError, match="--width scales VGG16 only"):
        classifier("resnet50", (64, 64, 1), 3, width=0.5)
    with pytest.raises(ValueError, match="unknown model"):
        classifier("inception", (64, 64, 1), 3)


def test_one_channel_weights_sum_the_rgb_kernels():
    """Local weights for 3 channels load into a 1-channel backbone with the first kernels summed."""
    reference = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(64, 64, 3),
                                                     include_preprocessing=False)
    target = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(64, 64, 1),
                                                  include_preprocessing=False)
    load_weights(target, reference)
    ref_first = next(layer for layer in reference.layers
                     if layer.get_weights() and layer.get_weights()[0].ndim == 4)
    got_first = target.get_layer(ref_first.name).get_weights()[0]
    assert np.allclose(got_first, ref_first.get_weights()[0].sum(axis=2, keepdims=True))
    later = [layer.name for layer in reference.layers if layer.get_weights()][5]
    assert all(np.array_equal(a, b) for a, b in zip(target.get_layer(later).get_weights(),
                                                    reference.get_layer(later).get_weights(), strict=True))


def test_compare_over_two_models_and_two_inputs(store, tmp_path):
    out = tmp_path / "g"
    result = CliRunner().invoke(cli, ["compare", "--store", str(store), "--model", "vgg16,mobilenetv3small",
                                      "--losses", "cce", "--repeats", "1", "--epochs", "1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in results["runs"]} == {"vgg16", "mobilenetv3small"}
    assert {(c["a"], c["b"]) for c in results["comparisons"]} == {
        ("cxr+cce", "enh+cce"), ("mobilenetv3small+cxr+cce", "mobilenetv3small+enh+cce")}
    report = (out / "report.md").read_text()
    assert "## Models" in report and "## mobilenetv3small: ENH + CCE" in report
    model = out / "runs" / "mobilenetv3small-enh-cce-r0" / "model.keras"
    done = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--store", str(store)])
    assert done.exit_code == 0, done.output


def test_mixed_grids_refuse_width_for_other_models(store, tmp_path):
    result = CliRunner().invoke(cli, ["compare", "--store", str(store), "--model", "vgg16,resnet50",
                                      "--width", "0.125", "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and "--width scales VGG16 only" in result.output
    assert not (tmp_path / "g").exists()
    assert set(MODEL_NAMES) >= {"vgg16", "resnet50", "densenet121", "efficientnetv2b0", "mobilenetv3small",
                                "convnexttiny"}


@pytest.mark.parametrize("channels", [1, 3])
def test_weights_file_loads_into_a_backbone(tmp_path, channels):
    """``--weights FILE`` for a backbone other than VGG16: a local ImageNet-style notop file."""
    reference = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(64, 64, 3),
                                                     include_preprocessing=False)
    rng = np.random.default_rng(1)
    reference.set_weights([rng.normal(size=w.shape).astype("float32") for w in reference.get_weights()])
    path = tmp_path / "mobilenet_v3_small_notop.weights.h5"
    reference.save_weights(path)
    model = classifier("mobilenetv3small", (64, 64, channels), 3, weights=str(path))
    inner = model.get_layer("mobilenetv3small_backbone")
    first = next(layer for layer in reference.layers if layer.get_weights() and layer.get_weights()[0].ndim == 4)
    want = first.get_weights()[0]
    if channels == 1:
        want = want.sum(axis=2, keepdims=True)
    assert np.allclose(inner.get_layer(first.name).get_weights()[0], want)
    last = [layer for layer in reference.layers if layer.get_weights()][-1]
    assert all(np.array_equal(a, b) for a, b in zip(inner.get_layer(last.name).get_weights(),
                                                    last.get_weights(), strict=True))
