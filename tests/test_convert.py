"""phasefeat convert / inspect / preview, end to end on generated and real radiographs."""

import errno
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REAL_DIR, real_image_paths
from datasets import class_folder_dataset, write_all_formats, write_bad_files

from phasefeat.cli import cli
from phasefeat.io.store import StoreError, open_store

SMALL = ["--size", "32", "-q", "--backend", "numpy"]


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def assert_same_store(a, b, skip=()):
    """Same samples, order, values, metadata and failures (creation time aside)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = []
        fa.visit(lambda n: names.append(n) if isinstance(fa[n], h5py.Dataset) else None)
        other = []
        fb.visit(lambda n: other.append(n) if isinstance(fb[n], h5py.Dataset) else None)
        assert sorted(names) == sorted(other)
        for name in names:
            assert np.array_equal(fa[name][()], fb[name][()]), name
        skip = {"created", "command_line", "conversion_identity", *skip}  # what made it, not what it holds
        keys = (set(fa.attrs) | set(fb.attrs)) - skip
        assert {k: fa.attrs.get(k) for k in keys} == {k: fb.attrs.get(k) for k in keys}


@pytest.fixture
def messy(tmp_path):
    """Class folders with every format, a Kaggle-style layout, and broken files."""
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)
    write_all_formats(root / "Normal" / "formats")
    expected = write_bad_files(root / "COVID" / "bad")
    return root, expected


def test_every_file_is_converted_or_reported(messy, tmp_path):
    root, expected_bad = messy
    out = tmp_path / "enh.h5"
    result = run("convert", root, out, *SMALL, "--max-pixels", 250 * 250, "--workers", 1)
    assert "failed 4" in result.output and not (tmp_path / "enh.h5.parts").exists()
    with open_store(out) as store:
        paths, failures = store.source_paths, dict(store.failures)
        assert len(store) + len(failures) == store.attrs["discovered"] == 6 + 12 + 4
        assert store.class_names == ["covid", "normal", "pneumonia"]
        assert np.bincount(store.labels).tolist() == [2, 2 + 12, 2]
        for name, fragment in expected_bad.items():
            assert fragment in failures[f"COVID/bad/{name}"]
        assert "Normal/formats/mono1.dcm" in paths and "Normal/formats/grey16.png" in paths
        assert all("masks" not in p for p in paths)
        i = paths.index("Normal/formats/grey16.png")
        assert store.meta("orig_mode")[i] == b"I;16"  # h5py returns variable-length strings as bytes
        assert (store.meta("orig_width")[i], store.meta("orig_height")[i]) == (70, 90)
        enh = store.read_many(range(len(store)))
        assert enh.shape == (len(store), 32, 32, 3) and enh.dtype == np.uint8
        # Maps computed at native size and resized: the ELEA channel still reaches the top.
        assert (enh[..., 1].max(axis=(1, 2)) >= 250).all()
    strict = run("convert", root, tmp_path / "s.h5", *SMALL, "--max-pixels", 250 * 250,
                 "--strict", ok=False)
    assert strict.exit_code == 1 and (tmp_path / "s.h5").exists()


def test_label_files_keep_patient_ids(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)
    (root / "labels.csv").write_text(
        "path,label,patient_id\nCOVID/images/COVID 0.png,COVID-19,P1\n"
        "Normal/images/Normal 1.png,normal,P2\n../escape.png,normal,P3\n")
    out = tmp_path / "csv.h5"
    run("convert", root, out, *SMALL, "--labels", root / "labels.csv", "--classes", "normal,covid")
    with open_store(out) as store:
        assert store.class_names == ["normal", "covid"]
        assert store.patient_ids == ["P1", "P2"] and store.labels.tolist() == [1, 0]
        assert dict(store.failures) == {"../escape.png": "listed path points outside the input root"}
        assert store.attrs["layout"] == "csv"


def test_workers_do_not_change_the_store(messy, tmp_path):
    root, _ = messy
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    run("convert", root, one, *SMALL, "--workers", 1, "--piece-size", 5)
    run("convert", root, two, *SMALL, "--workers", 2, "--piece-size", 5)
    assert_same_store(one, two)


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "phasefeat", "convert", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_kill_9_then_resume_gives_the_uninterrupted_store(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=12)
    reference = tmp_path / "reference.h5"
    run("convert", root, reference, *SMALL, "--piece-size", 2, "--workers", 1)
    out = tmp_path / "killed.h5"
    args = [root, out, *SMALL, "--piece-size", 2, "--workers", 1]
    proc = _start(args)
    parts = tmp_path / "killed.h5.parts"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(parts.glob("piece-*.npz"))) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(parts.glob("piece-*.npz")))
    assert 3 <= finished < 18, "the kill should land mid-run"
    assert not out.exists()
    result = run(*["convert", *args])
    assert f"resumed {finished} finished pieces" in result.output
    assert_same_store(reference, out)
    assert not parts.exists()


def test_resume_with_other_settings_refuses_and_says_what_differs(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)
    out = tmp_path / "enh.h5"
    parts = tmp_path / "enh.h5.parts"
    parts.mkdir()
    run("convert", root, tmp_path / "x.h5", *SMALL)  # a finished run leaves no parts behind
    # Fake an unfinished run with other parameters by writing its manifest.
    import json

    from phasefeat.io.convert import ConvertOptions, _identity
    from phasefeat.io.discover import discover
    from phasefeat.params import PhaseParams

    identity = _identity(discover(root), PhaseParams(delta=0.9), ConvertOptions(size=32), "numpy", None)
    (parts / "manifest.json").write_text(json.dumps(identity))
    (root / "COVID" / "images" / "extra.png").write_bytes((root / "COVID" / "images" / "COVID 0.png").read_bytes())
    result = run("convert", root, out, *SMALL, ok=False)
    assert result.exit_code != 0
    assert "params delta: 0.9 -> 0.85" in result.output
    assert "input files added: 1 (COVID/images/extra.png)" in result.output
    assert "--overwrite" in result.output
    run("convert", root, out, *SMALL, "--overwrite")
    assert out.exists() and not parts.exists()


def test_existing_store_is_never_clobbered(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    out = tmp_path / "enh.h5"
    run("convert", root, out, *SMALL)
    before = out.read_bytes()
    result = run("convert", root, out, *SMALL, "--size", 48, ok=False)
    assert result.exit_code != 0 and "already exists" in result.output and "--overwrite" in result.output
    assert out.read_bytes() == before


@pytest.mark.parametrize(("setup", "message"), [
    ("missing-input", "does not exist"), ("empty-input", "no class folders"),
    ("no-classes", "no image files"), ("missing-output-folder", "output folder"),
    ("bad-alias", "NAME=CLASS"), ("bad-params", "--params"),
])
def test_unusable_arguments_are_one_line_errors(tmp_path, setup, message):
    root = tmp_path / "raw"
    out = tmp_path / "enh.h5"
    extra = []
    if setup != "missing-input":
        root.mkdir()
    if setup == "no-classes":
        (root / "normal").mkdir()
    if setup in ("missing-output-folder", "bad-alias", "bad-params"):
        class_folder_dataset(root, per_class=1)
    if setup == "missing-output-folder":
        out = tmp_path / "nowhere" / "enh.h5"
    if setup == "bad-alias":
        extra = ["--alias", "nonsense"]
    if setup == "bad-params":
        (tmp_path / "p.json").write_text('{"delta": -1}')
        extra = ["--params", tmp_path / "p.json"]
    result = run("convert", root, out, *SMALL, *extra, ok=False)
    assert result.exit_code != 0 and message in result.output


def test_disk_full_is_reported_and_resumable(tmp_path, monkeypatch):
    import phasefeat.io.convert as conv

    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)

    def full(path, piece):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(conv, "write_piece", full)
    result = run("convert", root, tmp_path / "enh.h5", *SMALL, "--workers", 1, ok=False)
    assert result.exit_code != 0 and "disk full" in result.output and "resumes" in result.output


def test_storage_dtypes_and_compression(tmp_path):
    root = tmp_path / "raw"
    write_all_formats(root / "normal")
    out = tmp_path / "wide.h5"
    run("convert", root, out, *SMALL, "--cxr-dtype", "uint16", "--enh-dtype", "float16",
        "--compression", "gzip", "--fit", "pad")
    with open_store(out) as store:
        assert store.dtype("cxr") == np.uint16 and store.dtype("enh") == np.float16
        assert store.attrs["compression"] == "gzip" and store.attrs["fit"] == "pad"
        i = store.source_paths.index("normal/grey16.png")
        assert len(np.unique(store.read(i, "cxr"))) > 256
        enh = store.read(i)
        assert 0 <= enh.min() and enh.max() <= 1


def test_reader_api(messy, tmp_path):
    root, _ = messy
    out = tmp_path / "enh.h5"
    run("convert", root, out, *SMALL, "--max-pixels", 250 * 250)
    with open_store(out) as store:
        n = len(store)
        assert store.read(-1).shape == (32, 32, 3)
        picked = store.read_many([5, 0, 3], "cxr")
        assert picked.shape == (3, 32, 32, 1)
        assert np.array_equal(picked[0], store.read(5, "cxr"))
        with pytest.raises(IndexError):
            store.read(n)
        assert store.params.digest() == store.provenance["params_digest"]
        assert store.provenance["backend"] == "numpy" and "numpy" in store.provenance["library_versions"]
        assert len(store.sha256[0]) == 64
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match="not an HDF5 file"):
        open_store(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="not a phasefeat store"):
        open_store(tmp_path / "other.h5")


def test_inspect_and_verify(messy, tmp_path):
    root, _ = messy
    out = tmp_path / "enh.h5"
    run("convert", root, out, *SMALL, "--max-pixels", 250 * 250)
    text = run("inspect", out).output
    for fragment in ("covid", "normal", "pneumonia", "shape (18, 32, 32, 3)", "delta = 0.85",
                     "failures     4", "COVID/bad/empty.png: empty file", "preset       qi2021\n"):
        assert fragment in text
    with open_store(out) as store:
        at = store.attrs["features_at"]
    assert f"features_at  {at}\n" in text
    assert "virtual_shards" not in text  # a store in one file has none; an empty line says nothing
    assert "0 changed" in run("inspect", out, "--verify").output
    target = root / "Normal" / "formats" / "grey8.png"
    target.write_bytes(target.read_bytes() + b"tail")
    result = run("inspect", out, "--verify", ok=False)
    assert result.exit_code == 1 and "CHANGED  Normal/formats/grey8.png" in result.output


def test_preview(messy, tmp_path):
    from PIL import Image

    root, _ = messy
    out = tmp_path / "enh.h5"
    run("convert", root, out, *SMALL, "--max-pixels", 250 * 250)
    fig = tmp_path / "fig.png"
    run("preview", out, "-o", fig, "--per-class", 2)
    with Image.open(fig) as im:
        assert im.size[1] > 2 * 3 * 100  # 6 rows
    run("preview", out, "-o", fig, "--index", 0, "--index", 3)
    bad = run("preview", out, "--index", 999, ok=False)
    assert bad.exit_code != 0 and "out of range" in bad.output
    assert run("inspect", tmp_path / "nope.h5", ok=False).exit_code != 0


def test_real_radiographs_convert(tmp_path):
    if not real_image_paths():
        pytest.skip(f"real radiographs not found at {REAL_DIR}")
    out = tmp_path / "real.h5"
    run("convert", REAL_DIR, out, *SMALL, "--workers", 2, "--features-at", 32)
    from conftest import real_class_counts

    with open_store(out) as store:
        counts = real_class_counts()
        assert np.bincount(store.labels).tolist() == [counts[name] for name in store.class_names]
        assert not store.failures
        modes = {m.decode() if isinstance(m, bytes) else m for m in store.meta("orig_mode")}
        assert {"RGB", "L"} <= modes


def test_gpu_convert_matches_cpu(messy, tmp_path, cupy_module):
    """The CuPy path of convert: worker processes only decode, the main process computes the features."""
    root, _ = messy
    run("convert", root, tmp_path / "cpu.h5", *SMALL)
    run("convert", root, tmp_path / "gpu.h5", "--size", 32, "-q", "--backend", "cupy")
    with open_store(tmp_path / "cpu.h5") as a, open_store(tmp_path / "gpu.h5") as b:
        assert a.source_paths == b.source_paths
        ea, eb = a.read_many(range(len(a))).astype(int), b.read_many(range(len(b))).astype(int)
        assert np.mean(np.abs(ea - eb) <= 1) >= 0.999 and np.abs(ea - eb).max() <= 2
        assert b.attrs["backend"] == "cupy"


def test_no_stray_files_left(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    run("convert", root, tmp_path / "enh.h5", *SMALL)
    assert sorted(os.listdir(tmp_path)) == ["enh.h5", "raw"]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_progress_bar_moves_per_image(tmp_path, monkeypatch, workers):
    """Pieces hold up to 64 images; the bar counts every file as it finishes, exactly once."""
    import tqdm

    from phasefeat.io.convert import ConvertOptions, convert

    class_folder_dataset(tmp_path / "raw", per_class=4)
    (tmp_path / "raw" / "Normal" / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    steps = []
    update = tqdm.tqdm.update
    monkeypatch.setattr(tqdm.tqdm, "update", lambda self, n=1: (steps.append(n), update(self, n))[1])
    convert(tmp_path / "raw", tmp_path / "s.h5", options=ConvertOptions(size=32, features_at=32, piece_size=5),
            workers=workers, backend="numpy", progress=True)
    assert sum(steps) == 13  # 12 images and the broken file: every file once, none twice
    if workers == 1:
        assert steps.count(1) == 13 and set(steps) <= {0, 1}  # one step per file
    else:
        assert steps.count(1) >= 3  # ticks from the workers, not only one step per finished piece


@pytest.mark.parametrize(("samples", "distributed", "expected"), [
    (1, False, 4), (64, False, 4), (65, False, 5), (120, False, 8), (180, False, 12), (1024, False, 64),
    (18685, False, 64), (1024, True, 64), (18685, True, 256)])
def test_the_automatic_piece_size_is_a_sixteenth_of_the_images_within_bounds(samples, distributed, expected):
    from phasefeat.io.pieces import auto_piece_size

    assert auto_piece_size(samples, distributed) == expected


def test_a_conversion_without_a_piece_size_cuts_a_small_set_into_sixteen_pieces(tmp_path, monkeypatch):
    from phasefeat.io import convert as convert_module

    class_folder_dataset(tmp_path / "raw", per_class=22)  # 66 images: pieces of 5, the last of 1
    seen = []
    original = convert_module._run_pieces
    monkeypatch.setattr(convert_module, "_run_pieces",
                        lambda tasks, *a: (seen.extend(len(t["entries"]) for t in tasks), original(tasks, *a))[1])
    run("convert", tmp_path / "raw", tmp_path / "s.h5", *SMALL, "--workers", 1)
    assert seen == [5] * 13 + [1]
    with open_store(tmp_path / "s.h5") as store:
        assert len(store) == 66
