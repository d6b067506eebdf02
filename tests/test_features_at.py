"""``convert --features-at``: ENH computed at the native resolution or a working size, then resized."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from phasefeat import PhaseParams, enhance
from phasefeat.cli import cli
from phasefeat.io.imageio import fit, read_image, resize, square
from phasefeat.io.pieces import ConvertOptions
from phasefeat.io.store import open_store
from phasefeat.tools.phantom import chest_phantom

SMALL = ["--size", "32", "-q", "--backend", "numpy", "--workers", "1"]


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def raw(tmp_path):
    """Two classes of 16-bit phantoms, non-square and of different sizes."""
    root = tmp_path / "raw"
    for c, name in enumerate(("normal", "covid")):
        (root / name).mkdir(parents=True)
        for k, shape in enumerate([(120, 90), (77, 101)]):
            grey = chest_phantom(shape, seed=10 * c + k, dtype="uint16")
            Image.fromarray(grey).save(root / name / f"{k}.png")
    return root


def expected(path, size, working, how, params=None):
    """The recipe written out: features on the (native or working-size) image, resized maps."""
    pixels = read_image(path).pixels
    image = square(pixels, how) if working == "native" else fit(pixels, working, how)
    maps = enhance(np.clip(image, 0, 1), params or PhaseParams())
    resized = np.stack([resize(maps[..., c], (size, size)) for c in range(3)], axis=-1)
    return np.rint(np.clip(resized, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize(("working", "how"), [("native", "stretch"), ("native", "pad"),
                                             ("native", "crop"), (64, "stretch"), (48, "pad")])
def test_maps_are_computed_at_the_working_resolution_then_resized(raw, tmp_path, working, how):
    out = tmp_path / "enh.h5"
    run("convert", raw, out, *SMALL, "--features-at", working, "--fit", how)
    with open_store(out) as store:
        assert store.attrs["features_at"] == str(working)
        for i, rel in enumerate(store.source_paths):
            want = expected(raw / rel, 32, working, how)
            assert np.array_equal(store.read(i), want), rel
            cxr = np.rint(np.clip(fit(read_image(raw / rel).pixels, 32, how), 0, 1) * 255)
            assert np.array_equal(store.read(i, "cxr")[..., 0], cxr.astype(np.uint8))


def test_working_size_equal_to_the_store_size_is_the_plain_store(raw, tmp_path):
    run("convert", raw, tmp_path / "a.h5", *SMALL, "--features-at", 32)
    with open_store(tmp_path / "a.h5") as store:
        assert store.attrs["features_at"] == "store size"
        for i, rel in enumerate(store.source_paths):
            grey = np.clip(fit(read_image(raw / rel).pixels, 32), 0, 1)
            assert np.array_equal(store.read(i), enhance(grey, out="uint8"))


def test_native_differs_from_the_store_size(raw, tmp_path):
    run("convert", raw, tmp_path / "n.h5", *SMALL, "--features-at", "native")
    run("convert", raw, tmp_path / "s.h5", *SMALL, "--features-at", 32)
    with open_store(tmp_path / "n.h5") as a, open_store(tmp_path / "s.h5") as b:
        assert np.abs(a.read(0).astype(int) - b.read(0).astype(int)).mean() > 5


def test_store_records_the_preset_and_features_at(raw, tmp_path):
    run("convert", raw, tmp_path / "k.h5", *SMALL, "--preset", "kovesi", "--features-at", 40)
    with open_store(tmp_path / "k.h5") as store:
        assert store.attrs["preset"] == "kovesi" and store.attrs["features_at"] == "40"
        assert store.params == PhaseParams.preset("kovesi")
    params = tmp_path / "p.json"
    params.write_text(PhaseParams(delta=0.9).to_json())
    run("convert", raw, tmp_path / "c.h5", *SMALL, "--params", params)
    with open_store(tmp_path / "c.h5") as store:
        assert store.attrs["preset"] == "custom"


@pytest.mark.parametrize(("value", "message"), [("huge", "expected 'native' or a size"),
                                                ("4", "must be 8..16384"), ("-3", "must be 8..16384"),
                                                ("99999", "must be 8..16384")])
def test_bad_features_at_is_a_one_line_error(raw, tmp_path, value, message):
    result = run("convert", raw, tmp_path / "x.h5", *SMALL, "--features-at", value, ok=False)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("value", ["Native", 0, 7, 2.5, True])
def test_options_validate_features_at(value):
    with pytest.raises(ValueError, match="features_at"):
        ConvertOptions(features_at=value)


@pytest.mark.parametrize("features_at", [None, "native", 40])
def test_batched_features_equal_per_image_features(raw, features_at):
    """The GPU path's batching (runs of one shape) gives what the CPU path computes image by image."""
    from phasefeat.io.pieces import finish_piece, process_piece

    paths = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png"))
    task = {"root": str(raw), "piece_id": 0, "params_json": PhaseParams().to_json(), "batch_size": 2,
            "options": {"size": 32, "features_at": features_at},
            "entries": [(i, rel, 0, "", "") for i, rel in enumerate(paths)]}
    here = process_piece({**task, "enhance_here": True})
    later = finish_piece(process_piece({**task, "enhance_here": False}), task, "numpy")
    assert "features" not in later and np.array_equal(here["enh"], later["enh"])


def test_native_features_on_the_gpu_match_the_cpu(raw, tmp_path, cupy_module):
    run("convert", raw, tmp_path / "cpu.h5", *SMALL, "--features-at", "native")
    run("convert", raw, tmp_path / "gpu.h5", "--size", 32, "-q", "--backend", "cupy",
        "--features-at", "native", "--batch-size", 3)
    with open_store(tmp_path / "cpu.h5") as a, open_store(tmp_path / "gpu.h5") as b:
        ea, eb = a.read_many(range(len(a))).astype(int), b.read_many(range(len(b))).astype(int)
        assert np.abs(ea - eb).max() <= 2 and np.mean(np.abs(ea - eb) <= 1) >= 0.999
