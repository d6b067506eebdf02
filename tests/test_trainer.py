"""trainer: losses, model, streaming data, and the paired grid end to end (CPU, tiny)."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

keras = pytest.importorskip("keras")

from datasets import class_folder_dataset  # noqa: E402

from trainer.cli import cli  # noqa: E402
from trainer.data import StoreBatches, channel_stats  # noqa: E402
from trainer.model import vgg16_classifier  # noqa: E402


def test_model_standardises_inside():
    model = vgg16_classifier((32, 32, 3), 3, width=0.125,
                             preprocessing={"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.1, 0.4]})
    probe = keras.Model(model.input, model.get_layer("standardise").output)
    x = np.full((1, 32, 32, 3), 51, dtype=np.uint8)
    out = keras.ops.convert_to_numpy(probe(x.astype(np.float32)))[0, 0, 0]
    assert np.allclose(out, (0.2 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.1, 0.4]), atol=1e-5)


@pytest.mark.parametrize(("channels", "width"), [(1, 0.125), (3, 0.125), (3, 0.25)])
def test_model_shapes_and_width(channels, width):
    model = vgg16_classifier((32, 32, channels), 3, width=width)
    assert model.output_shape == (None, 3)
    assert model.get_layer("block1_conv1").filters == round(64 * width)
    out = model(np.zeros((2, 32, 32, channels), np.float32))
    assert np.allclose(keras.ops.convert_to_numpy(out).sum(axis=1), 1, atol=1e-5)


def test_imagenet_weights_are_loaded_and_summed_for_one_channel(tmp_path):
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    reference.save_weights(path)
    model = vgg16_classifier((32, 32, 1), 3, weights=str(path))
    kernel = model.get_layer("block1_conv1").get_weights()[0]
    assert kernel.shape == (3, 3, 1, 64)
    assert np.allclose(kernel, reference.get_layer("block1_conv1").get_weights()[0].sum(axis=2, keepdims=True))
    assert np.array_equal(model.get_layer("block5_conv3").get_weights()[0],
                          reference.get_layer("block5_conv3").get_weights()[0])
    with pytest.raises(ValueError, match="width 1.0"):
        vgg16_classifier((32, 32, 3), 3, width=0.5, weights=str(path))


def test_streaming_batches(store):
    from phasefeat.io.store import open_store

    with open_store(store) as s:
        labels = s.labels.copy()
    idx = np.arange(0, len(labels), 2)
    mean, std = channel_stats(store, idx, "enh")
    assert mean.shape == (3,) and (std > 0).all()
    ds = StoreBatches(store, idx, "enh", labels, 3, "onehot", 16, shuffle=True, seed=5)
    seen = []
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and y.shape[1] == 3
        seen.append(y.argmax(1))
    assert sorted(np.concatenate(seen).tolist()) == sorted(labels[idx].tolist())
    first = ds._order.copy()
    ds.on_epoch_end()
    assert not np.array_equal(first, ds._order) and sorted(first) == sorted(ds._order)
    again = StoreBatches(store, idx, "enh", labels, 3, "onehot", 16, shuffle=True, seed=5)
    assert np.array_equal(again._order, first)  # same seed, same batch order for every arm
    cxr = StoreBatches(store, idx, "cxr", labels, 3, "int", 16, image_size=48)
    x, y = cxr[0]
    assert x.shape[1:] == (48, 48, 1) and y.dtype == np.int32 and x.max() > 1  # stored scale kept
    for d in (ds, again, cxr):
        d.close()


def test_grid_says_what_it_will_do_before_it_trains(grid, store):
    """The run count first, then after the first epoch an estimate for the runs left; none on a rerun."""
    output = grid.with_name(f"{grid.name}-output.txt").read_text()  # bars (stderr) interleave the lines
    plan = output.find("grid: 8 run(s) of up to 2 epochs; 8 to train\n")
    estimate = output.find("cxr-cce-r0: first epoch ")
    after_run = output.find("cxr-cce-r0 took ")
    assert 0 <= plan < estimate < after_run, output[-2000:]
    assert "(it includes compiling the model), second " in output[estimate:].split("\n", 1)[0]
    assert "and the 7 run(s) after it about" in output[estimate:].split("\n", 1)[0]
    assert re.match(r"cxr-cce-r0 took [\d.]+ (s|min) \(2 epoch\(s\)\); at that time each, the 7 run\(s\) left "
                    r"need about [\d.]+ (s|min) ", output[after_run:])
    assert output.count("first epoch") == 1 and output.count(" took ") == 1
    again = CliRunner().invoke(cli, ["compare", "--store", str(store), "--epochs", "2", "--width", "0.125",
                                     "--repeats", "2", "--batch-size", "16", "--out", str(grid)])
    assert again.exit_code == 0, again.output
    assert "grid: 8 run(s) of up to 2 epochs; 8 finished earlier (reused), 0 to train" in again.output
    assert "first epoch" not in again.output


def test_grid_writes_consistent_tables(grid):
    with open(grid / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {r["input"] for r in rows} == {"cxr", "enh"}
    report = (grid / "report.md").read_text()
    for r in rows:
        assert f"| {r['run']} | {r['seed']} | {100 * float(r['val_loss']):.2f} | {100 * float(r['test_loss']):.2f} |" in report
    for fig in ("learning_curves.png", "confusion_matrices.png", "per_seed_losses.png"):
        assert (grid / fig).stat().st_size > 1000
    results = json.loads((grid / "results.json").read_text())
    assert len(results["comparisons"]) == 6
    assert (grid / "split.json").exists()


def test_report_reads_without_the_code(grid, store):
    from phasefeat.io.store import open_store

    report = (grid / "report.md").read_text()
    split = json.loads((grid / "split.json").read_text())
    with open_store(store) as s:
        labels, names, digest = s.labels, s.class_names, s.attrs["params_digest"]
    for c, name in enumerate(names):  # split sizes per class, as the split file has them
        counts = [int((labels[np.asarray(split[p])] == c).sum()) for p in ("train", "val", "test")]
        assert f"| {name} | {counts[0]} | {counts[1]} | {counts[2]} |" in report
    assert ("The split is grouped by patient" in report) == split["grouped"]
    assert ("**Warning:** the store has no patient ids" in report) != split["grouped"]
    assert digest[:16] in report and "preset `qi2021`" in report and "Keras" in report
    assert "x 100, as in the study's tables" in report and "mean ± std" in report
    with open(grid / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    for r in rows:
        assert f"{100 * float(r['macro_f1']):.2f} | {float(r['macro_auc_ovr']):.3f} |" in report
    # CCE and SCCE are bit-identical twins here: CXR vs ENH is compared once, not four times.
    table = report.split("## Paired comparisons")[1].split("## Bit identity")[0]
    pairs = [line for line in table.splitlines() if line.startswith("| cxr") or line.startswith("| enh")]
    assert len(pairs) == 1 and "one arm here" in table
    assert (grid / "roc_curves.png").stat().st_size > 1000


def test_html_report_is_self_contained(grid):
    """Every heading, table row (not the separator) and figure of report.md is in report.html, escaped."""
    import html as html_module

    page = (grid / "report.html").read_text()
    text = (grid / "report.md").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    assert page.count('src="data:image/png;base64,') == 4 == text.count("](") - text.count("](http")
    for line in text.splitlines():
        if line.startswith("## "):
            assert f"<h2>{html_module.escape(line[3:], quote=False)}</h2>" in page, line
    rows = [line for line in text.splitlines() if line.startswith("|")]
    separators = [line for line in rows if set(line) <= set("|-: ")]
    assert page.count("<tr>") == len(rows) - len(separators) and "---" not in page
    assert page.count("<table>") == len(separators)


def test_every_figure_has_axis_labels_and_a_title_naming_its_run(grid, monkeypatch):
    import trainer.report_figures as figs

    seen = []
    monkeypatch.setattr(figs, "_save", lambda fig, path: seen.append((path.name, fig)) or path.name)
    results = [json.loads(p.read_text()) for p in sorted(grid.glob("runs/*/result.json"))]
    figs.draw_figures(results, grid)
    assert {name for name, _ in seen} == {"learning_curves.png", "confusion_matrices.png",
                                          "per_seed_losses.png", "roc_curves.png"}
    for name, fig in seen:
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), name
            if name != "per_seed_losses.png":
                assert "seed" in ax.get_title(), name
        if name == "roc_curves.png":  # shown at its own size on a 1,280 px page: legends of 12.5 px
            assert fig.get_figwidth() * fig.dpi <= 1150 and len(fig.axes) == 4
            assert all(t.get_fontsize() >= 9 for ax in fig.axes for t in ax.get_legend().get_texts())
        if name == "per_seed_losses.png":
            ax = fig.axes[0]
            assert all(float(t).is_integer() for t in ax.get_xticks())
            assert any(" = " in text.get_text() for text in ax.get_legend().get_texts())  # CCE = SCCE


def test_cce_and_scce_are_bit_identical_on_the_same_seed_only(grid):
    with open(grid / "runs.csv") as handle:
        rows = {r["run"]: r for r in csv.DictReader(handle)}
    for what in ("cxr", "enh"):
        for k in (0, 1):
            assert rows[f"{what}-cce-r{k}"]["weights_sha256"] == rows[f"{what}-scce-r{k}"]["weights_sha256"]
            assert rows[f"{what}-cce-r{k}"]["bit_identical_to"] == "scce"
        assert rows[f"{what}-cce-r0"]["weights_sha256"] != rows[f"{what}-cce-r1"]["weights_sha256"]
    assert "bit-identical for seeds [0, 1]" in (grid / "report.md").read_text()


def test_rerun_reuses_finished_runs_and_refuses_other_settings(grid, store):
    before = {p: p.stat().st_mtime_ns for p in grid.glob("runs/*/result.json")}
    args = ["compare", "--store", str(store), "--epochs", "2", "--width", "0.125", "--repeats", "2",
            "--batch-size", "16", "--out", str(grid)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in grid.glob("runs/*/result.json")} == before
    other = CliRunner().invoke(cli, [*args[:-2], "--learning-rate", "0.01", "--out", str(grid)])
    assert other.exit_code != 0 and "other settings" in other.output


@pytest.mark.parametrize("what", ["enh", "cxr"])
def test_evaluate_takes_its_input_from_the_model(grid, store, what):
    model = grid / "runs" / f"{what}-cce-r0" / "model.keras"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    saved = json.loads((grid / "runs" / f"{what}-cce-r0" / "result.json").read_text())["metrics"]
    assert metrics["input"] == what and metrics["confusion_matrix"] == saved["confusion_matrix"]
    table = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--store", str(store)])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert f"({what.upper()}, target: class" in lines[0]
    assert f"accuracy {100 * saved['accuracy']:.1f} %" in lines[1]
    matrix = lines[lines.index("confusion matrix (rows: true class, columns: predicted)") + 2:]
    assert [[int(v) for v in line.split()[1:]] for line in matrix] == saved["confusion_matrix"]
    other = "cxr" if what == "enh" else "enh"
    wrong = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--store", str(store), "--input", other])
    assert wrong.exit_code == 1 and f"--input {other} does not fit" in wrong.output
    assert "Traceback" not in wrong.output and "\x1b[" not in wrong.output


def test_clear_errors(tmp_path, store):
    missing = CliRunner().invoke(cli, ["train", "--store", str(tmp_path / "none.h5"), "--out", str(tmp_path / "r")])
    assert missing.exit_code != 0 and "no such file" in missing.output
    bad = CliRunner().invoke(cli, ["compare", "--store", str(store), "--losses", "cce,hinge", "--out", str(tmp_path / "g")])
    assert bad.exit_code == 2 and "unknown 'hinge'" in bad.output and not (tmp_path / "g").exists()


def test_streaming_never_holds_the_whole_store(tmp_path):
    """One epoch over a 1.2 GB store: peak memory grows by far less than the store."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import numpy as np, sys
        from phasefeat.io.assemble import random_store
        from trainer.data import StoreBatches
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        path = random_store({str(tmp_path / 'big.h5')!r}, 3400)
        import os; size = os.path.getsize(path)
        labels = np.zeros(3400, dtype=np.int32)
        ds = StoreBatches(path, np.arange(3400), "enh", labels, 3, "int", 32, shuffle=True, seed=0)
        ds[0]
        before = status("VmRSS")
        for i in range(len(ds)):
            x, y = ds[i]
        print(size, status("VmHWM") - before, status("VmHWM"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    size, growth, peak = map(int, out.stdout.split()[-3:])
    assert size > 1.0e9
    assert growth < 0.05 * size, f"reading grew memory by {growth / 1e6:.0f} MB for a {size / 1e9:.1f} GB store"


def test_interrupted_grid_redoes_only_the_missing_run(grid, store):
    victim = grid / "runs" / "enh-scce-r1" / "result.json"
    victim.unlink()
    before = {p: p.stat().st_mtime_ns for p in grid.glob("runs/*/result.json")}
    args = ["compare", "--store", str(store), "--epochs", "2", "--width", "0.125", "--repeats", "2",
            "--batch-size", "16", "--out", str(grid)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in grid.glob("runs/*/result.json") if p != victim} == before
    assert victim.exists()


def test_other_losses_train_save_and_load_safely(store, tmp_path):
    out = tmp_path / "g"
    result = CliRunner().invoke(cli, ["compare", "--store", str(store), "--inputs", "enh", "--losses",
                                      "focal,weighted_cce,cce_ls", "--repeats", "1", "--epochs", "1",
                                      "--width", "0.125", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for loss in ("focal", "weighted_cce", "cce_ls"):
        saved = out / "runs" / f"enh-{loss}-r0" / "model.keras"
        model = keras.saving.load_model(saved, safe_mode=True)
        assert model.output_shape == (None, 3)
    with open(out / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["loss"] for r in rows} == {"focal", "weighted_cce", "cce_ls"}
    assert all(not r["bit_identical_to"] for r in rows)  # different losses, different weights


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_keras_backends_train(backend, store, tmp_path):
    """The same run on Keras' JAX or PyTorch backend (skipped where that library is absent)."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} not installed (pip install {backend})")
    env = {**os.environ, "KERAS_BACKEND": backend}
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "trainer", "train", "--store", str(store), "--width", "0.125",
                           "--epochs", "1", "--out", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "result.json").read_text())["backend"] == backend


def _two_class_store(tmp_path):
    from phasefeat.cli import cli as phasefeat_cli

    root = tmp_path / "raw2"
    class_folder_dataset(root, per_class=4)
    out = tmp_path / "two.h5"
    result = CliRunner().invoke(phasefeat_cli, ["convert", str(root), str(out), "--size", "32", "-q",
                                                "--backend", "numpy", "--features-at", "32",
                                                "--classes", "normal,covid"])
    assert result.exit_code == 0, result.output
    return out


def test_evaluate_refuses_a_store_the_model_does_not_fit(grid, tmp_path):
    two = _two_class_store(tmp_path)
    model = grid / "runs" / "enh-cce-r0" / "model.keras"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--store", str(two)])
    assert result.exit_code == 1 and "predicts 3 classes; the store has 2" in result.output


@pytest.mark.parametrize(("content", "message"), [
    ("text", "is not a Keras model"), ("random", "is not a Keras model"), ("missing", "does not exist"),
    ("store", "looks like an HDF5 store"), ("lambda", "refused:"),
])
def test_evaluate_bad_model_files_in_one_line(tmp_path, store, content, message):
    path = tmp_path / "model.keras"
    if content == "text":
        path.write_text("hello")
    elif content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "store":
        path.write_bytes(store.read_bytes()[:100000])
    elif content == "lambda":
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
        model.save(path)
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(path), "--store", str(store)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_a_weighted_cce_model_evaluates(store, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "w"
    done = CliRunner().invoke(cli, ["train", "--store", str(store), "--loss", "weighted_cce", "--epochs", "1",
                                    "--width", "0.0625", "--out", str(out)])
    assert done.exit_code == 0, done.output
    # A fresh process: nothing registered by the training run.
    fresh = subprocess.run([sys.executable, "-m", "trainer", "evaluate", "--model", str(out / "model.keras"),
                            "--store", str(store), "--json"], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-1500:]
    assert json.loads(fresh.stdout)["input"] == "enh"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--inputs", ",", "give at least one value"), ("--losses", "", "give at least one value"),
    ("--inputs", "enh,xray", "unknown 'xray'"), ("--learning-rate", "-1", "--learning-rate"),
    ("--learning-rate", "nan", "learning rate"), ("--learning-rate", "inf", "learning rate"),
])
def test_compare_checks_every_option_before_any_work(store, tmp_path, option, value, message):
    out = tmp_path / "g"
    result = CliRunner().invoke(cli, ["compare", "--store", str(store), option, value, "--out", str(out)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_single_class_and_damaged_grids_are_refused(tmp_path, store, grid):
    import h5py

    one = tmp_path / "one.h5"
    one.write_bytes(store.read_bytes())
    with h5py.File(one, "a") as f:
        f["labels"][...] = 0
    result = CliRunner().invoke(cli, ["train", "--store", str(one), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and not (tmp_path / "r").exists()
    assert "classes 'normal' and 'pneumonia' hold no image (its files failed to convert" in result.output
    damaged = tmp_path / "g"
    damaged.mkdir()
    (damaged / "grid.json").write_text('{"store_identity": "x", "ba')
    result = CliRunner().invoke(cli, ["compare", "--store", str(store), "--out", str(damaged)])
    assert result.exit_code == 1 and "grid.json is damaged" in result.output


def test_resume_after_the_store_was_converted_again_is_refused(tmp_path, grid, store):
    """Same path, other contents: the grid is keyed on what the store holds."""
    import shutil

    import h5py

    copy = tmp_path / "grid"
    shutil.copytree(grid, copy)
    path = tmp_path / "store.h5"
    path.write_bytes(store.read_bytes())
    args = ["compare", "--store", str(path), "--epochs", "2", "--width", "0.125", "--repeats", "2",
            "--batch-size", "16", "--out", str(copy)]
    assert CliRunner().invoke(cli, args).exit_code == 0  # same contents elsewhere: reused
    with h5py.File(path, "a") as f:
        f.attrs["params_digest"] = "0" * 64  # as if converted again with other parameters
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "another store" in again.output


def test_tensorflow_log_lines_only_with_verbose(store, tmp_path):
    import subprocess
    import sys

    args = ["train", "--store", str(store), "--epochs", "1", "--width", "0.0625"]
    quiet = subprocess.run([sys.executable, "-m", "trainer", *args, "--out", str(tmp_path / "q")],
                           capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr[-1500:]
    noise = ("oneDNN", "absl::InitializeLog", "cpu_feature_guard", "I0000")
    assert not any(word in quiet.stderr for word in noise), quiet.stderr[:1500]
    loud = subprocess.run([sys.executable, "-m", "trainer", "-v", *args, "--out", str(tmp_path / "l")],
                          capture_output=True, text=True)
    assert loud.returncode == 0 and len(loud.stderr) >= len(quiet.stderr)


@pytest.mark.parametrize(("args", "message"), [
    (["--width", "nan"], "--width must be a number in (0, 1], got nan"),
    (["--weights", "no-such-weights.h5"], "--weights no-such-weights.h5: no such file"),
    (["--image-size", "99999999"], "99999999 is not in the range 32<=x<=2048"),
    (["--head-activation", "bogus"], "'bogus' is not one of"),
])
def test_a_refused_train_leaves_no_folder(store, tmp_path, args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--store", str(store), "--out", str(out), *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "compare"])
def test_an_out_folder_with_other_files_is_refused_untouched(store, tmp_path, command):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own notes")
    (out / "model.keras").write_text("my own model")
    result = CliRunner().invoke(cli, [command, "--store", str(store), "--out", str(out), "--epochs", "1"])
    assert result.exit_code == 2 and "holds files this command did not write" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "report.md"]
    assert (out / "report.md").read_text() == "my own notes"
    (out / "model.keras").unlink()
    (out / "report.md").rename(out / "notes.md")
    asked = CliRunner().invoke(cli, [command, "--store", str(store), "--out", str(out), "--epochs", "1",
                                     "--width", "0.0625", "--allow-other-files"]
                               + (["--repeats", "1", "--losses", "cce", "--inputs", "cxr"] if command == "compare" else []))
    assert asked.exit_code == 0, asked.output
    assert (out / "notes.md").read_text() == "my own notes"


def test_train_refuses_a_run_of_other_settings(store, tmp_path):
    out = tmp_path / "run"
    done = CliRunner().invoke(cli, ["train", "--store", str(store), "--out", str(out), "--epochs", "1",
                                    "--width", "0.0625"])
    assert done.exit_code == 0, done.output
    before = (out / "model.keras").stat().st_mtime_ns
    other = CliRunner().invoke(cli, ["train", "--store", str(store), "--out", str(out), "--epochs", "1",
                                     "--width", "0.125"])
    assert other.exit_code == 2 and "holds a run made with other settings" in other.output
    assert (out / "model.keras").stat().st_mtime_ns == before


def test_a_float_store_with_nan_or_out_of_range_values_is_refused(tmp_path):
    """NaN would reach the normalisation statistics and train a constant model to exit 0."""
    import h5py
    from datasets import class_folder_dataset

    from phasefeat.cli import cli as phasefeat_cli
    from phasefeat.io.store import open_store

    class_folder_dataset(tmp_path / "raw", per_class=4)
    store = tmp_path / "f.h5"
    done = CliRunner().invoke(phasefeat_cli, ["convert", str(tmp_path / "raw"), str(store), "--size", "32",
                                              "--features-at", "32", "--enh-dtype", "float32", "-q",
                                              "--backend", "numpy"])
    assert done.exit_code == 0, done.output
    with open_store(store) as s:
        assert s.invalid_samples("enh") == [] and s.invalid_samples("cxr") == []
    with h5py.File(store, "r+") as f:
        f["enh"][2, 5, 5, 1] = np.nan
        f["enh"][5, 0, 0, 0] = 1.5
    with open_store(store) as s:
        assert s.invalid_samples("enh") == [2, 5]
        paths = s.source_paths
    for command in (["train", "--out", str(tmp_path / "r")], ["compare", "--out", str(tmp_path / "g")],
                    ["audit", "--out", str(tmp_path / "a")]):
        result = CliRunner().invoke(cli, [*command, "--store", str(store), "--epochs", "1", "--inputs", "enh"]
                                    if command[0] != "train" else [*command, "--store", str(store), "--epochs", "1"])
        assert result.exit_code == 1, result.output
        assert f"/enh holds NaN, infinite or out-of-range (not in [0, 1]) values in 2 sample(s): #2 ({paths[2]}), " \
               f"#5 ({paths[5]})" in result.output
        assert not Path(command[-1]).exists()
    cxr_only = CliRunner().invoke(cli, ["compare", "--store", str(store), "--inputs", "cxr", "--epochs", "1",
                                        "--width", "0.0625", "--repeats", "1", "--losses", "cce",
                                        "--out", str(tmp_path / "c")])
    assert cxr_only.exit_code == 0, cxr_only.output  # /cxr is clean: a CXR grid is fine


def test_evaluate_uses_the_split_the_model_was_trained_with(store, tmp_path):
    """A model trained on another split seed is evaluated on its own test set by default; another split
    is an explicit choice and says so; another store cannot rebuild the model's test set."""
    import shutil

    import h5py

    out = tmp_path / "run"
    done = CliRunner().invoke(cli, ["train", "--store", str(store), "--out", str(out), "--epochs", "1",
                                    "--width", "0.0625", "--split-seed", "3"])
    assert done.exit_code == 0, done.output
    saved = json.loads((out / "result.json").read_text())["metrics"]
    model = str(out / "model.keras")
    own = CliRunner().invoke(cli, ["evaluate", "--model", model, "--store", str(store), "--json"])
    record = json.loads(own.output)
    assert record["split"]["split_seed"] == 3 and record["note"] == ""
    assert record["confusion_matrix"] == saved["confusion_matrix"]
    other = CliRunner().invoke(cli, ["evaluate", "--model", model, "--store", str(store), "--split-seed", "0"])
    assert other.exit_code == 0 and "note: not the model's own test set (split seed differ" in other.output
    copy = tmp_path / "other.h5"
    shutil.copy(store, copy)
    with h5py.File(copy, "r+") as f:  # the same images converted again would differ like this
        f["meta/sha256"][0] = "0" * 64
    refused = CliRunner().invoke(cli, ["evaluate", "--model", model, "--store", str(copy)])
    assert refused.exit_code == 1 and "does not hold the samples this model was split on (image files differ)" \
        in refused.output
    asked = CliRunner().invoke(cli, ["evaluate", "--model", model, "--store", str(copy), "--split-seed", "3"])
    assert asked.exit_code == 0 and "is not the store the model was split on: the test part of split seed 3" \
        in asked.output
