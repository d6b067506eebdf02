"""trainer explain: Grad-CAM (TensorFlow) and occlusion sensitivity, and the mass inside the central box."""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from trainer.cli import cli
from trainer.explain import box_share, grad_cam, occlusion_sensitivity


def test_box_share_of_maps_inside_and_outside():
    maps = np.zeros((3, 40, 40), np.float32)
    maps[0, 18:22, 18:22] = 1  # all in the centre
    maps[1, :3, :3] = 1  # all in a corner
    share = box_share(maps, 0.6)
    assert share[0] == 1.0 and share[1] == 0.0 and np.isnan(share[2])


def corner_model(size=32):
    """A model that sees only the top-left 8 x 8 corner, with the layer names explain expects."""
    corner = np.zeros((1, size, size, 1), np.float32)
    corner[:, :8, :8] = 1
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1.0, name="scale")(inputs) * keras.ops.convert_to_tensor(corner)
    x = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="block1_conv1")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions",
                                 kernel_initializer=keras.initializers.Constant([[1.0, -1.0]]))(pooled)
    return keras.Model(inputs, outputs)


def test_occlusion_sensitivity_finds_what_the_model_reads():
    rng = np.random.default_rng(0)
    images = rng.random((3, 32, 32, 1)).astype(np.float32) + 0.5
    maps = occlusion_sensitivity(corner_model(), images, np.zeros(3, np.int64), grid=4)
    assert maps.shape == (3, 32, 32) and maps[:, :8, :8].min() > 0.99
    assert np.all(box_share(maps, 0.6) < 0.1)  # the box reaches 2 px into the 8 px corner cell


def test_explain_writes_maps_and_box_shares(store, tmp_path):
    run = tmp_path / "run"
    trained = CliRunner().invoke(cli, ["train", "--store", str(store), "--input", "cxr", "--epochs", "1",
                                       "--width", "0.0625", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    for method in ("grad-cam", "occlusion"):
        out = tmp_path / method
        result = CliRunner().invoke(cli, ["explain", "--model", str(run / "model.keras"), "--store", str(store),
                                          "--n", "1", "--method", method, "--out", str(out)])
        assert result.exit_code == 0, result.output
        record = json.loads((out / "explain.json").read_text())
        model = record["models"][0]
        assert record["method"] == method and model["input"] == "cxr" and model["images"] >= 1
        shares = np.array(model["mass_in_box"], dtype=float)
        assert np.all((shares[~np.isnan(shares)] >= 0) & (shares[~np.isnan(shares)] <= 1))
        assert (out / "explain.png").stat().st_size > 1000
        assert "inside the central 60% box" in result.output


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="Grad-CAM here needs TensorFlow")
def test_grad_cam_of_a_corner_reader_sits_in_the_corner():
    model = corner_model()
    rng = np.random.default_rng(1)
    images = rng.random((2, 32, 32, 1)).astype(np.float32) + 0.5
    maps = grad_cam(model, images, np.zeros(2, np.int64))
    assert maps.shape == (2, 32, 32) and np.all(maps.max(axis=(1, 2)) == 1)
    assert np.all(box_share(maps, 0.6) < 0.1)
