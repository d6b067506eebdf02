"""No silent loss, no wrong results with exit 0, one line instead of a traceback (issue: trust)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from datasets import class_folder_dataset, write_hostile_files
from test_convert import assert_same_store

from phasefeat.cli import cli
from phasefeat.io.store import StoreError, open_store

SMALL = ["--size", "32", "-q", "--backend", "numpy", "--features-at", "32"]
BIG = 100_000  # bytes: larger than every generated image, smaller than big.png


def run(*args, ok=True, command=cli):
    result = CliRunner().invoke(command, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture
def hostile(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)
    good, bad = write_hostile_files(root / "Normal" / "odd", BIG)
    return root, ["Normal/odd/" + g for g in good], {"Normal/odd/" + k: v for k, v in bad.items()}


def test_every_hostile_file_becomes_a_sample_or_a_failure_row(hostile, tmp_path):
    root, good, bad = hostile
    out = tmp_path / "s.h5"
    result = run("convert", root, out, *SMALL, "--max-bytes", BIG, "--workers", 2)
    with open_store(out) as store:
        failures = dict(store.failures)
        paths = store.source_paths
        assert len(store) + len(failures) == store.attrs["discovered"]
        assert len(store) == 6 + len(good) and len(failures) == len(bad)
        for name in good:
            assert name in paths
        for name, fragment in bad.items():
            assert fragment in failures[name], (name, failures.get(name))
        for reason in failures.values():
            assert "\n" not in reason and "0x7" not in reason
    assert f"failed {len(bad)}" in result.output


def test_two_worker_counts_give_identical_stores_and_reasons(hostile, tmp_path):
    """Property: a tree mixing every good and bad kind converts to the same store, whatever the workers."""
    root, good, bad = hostile
    extra = root / "COVID" / "more"
    write_hostile_files(extra, BIG)
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    run("convert", root, one, *SMALL, "--max-bytes", BIG, "--workers", 1, "--piece-size", 3)
    run("convert", root, two, *SMALL, "--max-bytes", BIG, "--workers", 2, "--piece-size", 5)
    assert_same_store(one, two)
    with open_store(one) as store:
        discovered = store.attrs["discovered"]
        assert 40 <= discovered <= 60
        assert len(store) + len(store.failures) == discovered == 6 + 2 * (len(good) + len(bad))


def test_all_files_failing_still_writes_the_reasons_and_exits_non_zero(tmp_path):
    root = tmp_path / "raw"
    (root / "normal").mkdir(parents=True)
    (root / "normal" / "a.png").write_text("not an image")
    (root / "normal" / "b.png").write_bytes(b"")
    result = run("convert", root, tmp_path / "s.h5", *SMALL, ok=False)
    assert result.exit_code == 1 and "no image could be converted" in result.output
    with open_store(tmp_path / "s.h5") as store:
        assert len(store) == 0 and len(store.failures) == 2


def test_pixel_limit_above_pillows_own_takes_effect(tmp_path, monkeypatch):
    from PIL import Image

    from phasefeat.io.imageio import read_image

    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((64, 200), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would refuse above 2000 pixels
    assert read_image(path, max_pixels=20_000).width == 200
    with pytest.raises(Exception, match=r"exceeds the pixel limit \(200x64: 12,800 > 10,000; raise --max-pixels"):
        read_image(path, max_pixels=10_000)


def test_virtual_store_reads_its_shards_from_anywhere_and_refuses_without_them(tmp_path, monkeypatch):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)
    plain, virtual = tmp_path / "plain.h5", tmp_path / "data" / "v.h5"
    virtual.parent.mkdir()
    run("convert", root, plain, *SMALL)
    run("convert", root, virtual, *SMALL, "--virtual")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with open_store(plain) as a, open_store(virtual) as b:
        assert np.array_equal(a.read_many(range(len(a))), b.read_many(range(len(b))))
        assert b.read(0).any()
    moved = tmp_path / "moved.h5"
    virtual.rename(moved)
    with pytest.raises(StoreError, match=r"shard v\.h5\.shards/shard-000000\.h5 of /cxr is missing"):
        open_store(moved)
    result = run("inspect", moved, ok=False)
    assert result.exit_code == 1 and "is missing" in result.output


@pytest.mark.parametrize("damage", ["short labels", "long labels", "enh shorter", "label out of range",
                                    "no failure reasons", "bad params", "external link", "short meta",
                                    "external labels", "soft link"])
def test_damaged_stores_are_refused_in_one_line(tmp_path, damage):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)
    path = tmp_path / "s.h5"
    run("convert", root, path, *SMALL)
    with h5py.File(path, "a") as f:
        n = len(f["labels"])
        if damage in ("short labels", "long labels"):
            labels = f["labels"][()]
            del f["labels"]
            f["labels"] = labels[:3] if damage == "short labels" else np.r_[labels, labels]
        elif damage == "enh shorter":
            enh = f["enh"][:n - 1]
            del f["enh"]
            f["enh"] = enh
        elif damage == "label out of range":
            f["labels"][0] = 7
        elif damage == "no failure reasons":
            del f["failures/reason"]
        elif damage == "bad params":
            f.attrs["params_json"] = "{not json"
        elif damage == "external link":
            del f["enh"]
            f["enh"] = h5py.ExternalLink("other.h5", "enh")
        elif damage == "short meta":
            paths = f["meta/source_path"][()]
            del f["meta/source_path"]
            f["meta/source_path"] = paths[:2]
        elif damage == "external labels":  # read through, it would be another file's data
            labels = f["labels"][()]
            with h5py.File(tmp_path / "other.h5", "w") as other:
                other["labels"] = labels
            del f["labels"]
            f["labels"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "labels")
        elif damage == "soft link":
            del f["meta/source"]
            f["meta/source"] = h5py.SoftLink("/meta/source_path")
    match = {"bad params": "params_json", "external link": "link", "external labels": "/labels is a link",
             "soft link": "/meta/source is a link", "no failure reasons": "/failures/reason",
             "short meta": "/meta/source_path has 2 entries"}.get(damage, "inconsistent store")
    with pytest.raises(StoreError, match=match):
        open_store(path)
    result = run("inspect", path, ok=False)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    if damage == "bad params":  # every command reads through the same checks, the trainer too
        from trainer.cli import cli as trainer_cli

        result = run("train", "--store", path, "--out", tmp_path / "run", ok=False, command=trainer_cli)
        assert result.exit_code == 1 and "params_json" in result.output
        assert not (tmp_path / "run").exists()


def test_verify_with_a_wrong_root_fails_and_paths_leaving_the_root_are_refused(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    path = tmp_path / "s.h5"
    run("convert", root, path, *SMALL)
    wrong = run("inspect", path, "--verify", "--root", tmp_path, ok=False)
    assert wrong.exit_code == 1 and "3 missing" in wrong.output and "--root" in wrong.output
    with h5py.File(path, "a") as f:
        f["meta/source_path"][0] = "../../etc/passwd"
    refused = run("inspect", path, "--verify", ok=False)
    assert refused.exit_code == 1 and "REFUSED  ../../etc/passwd" in refused.output


def test_outputs_that_would_destroy_inputs_are_refused(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    image = root / "Normal" / "images" / "Normal 0.png"
    before = image.read_bytes()
    result = run("convert", root, image, *SMALL, "--overwrite", ok=False)
    assert result.exit_code == 1 and "inside the input folder" in result.output
    result = run("convert", root, root / "store.h5", *SMALL, ok=False)
    assert result.exit_code == 1 and "inside the input folder" in result.output
    for flag in ("-o", "--enh-png"):
        result = run("enhance", image, flag, image, ok=False)
        assert result.exit_code == 2 and "is the input image" in result.output
    assert image.read_bytes() == before and not (root / "store.h5").exists()


def test_an_output_name_too_long_is_refused_before_any_work(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    out = tmp_path / ("x" * 250 + ".h5")
    result = run("convert", root, out, *SMALL, ok=False)
    assert result.exit_code == 1 and "cannot write beside" in result.output
    assert sorted(os.listdir(tmp_path)) == ["raw"]


def test_a_second_convert_of_the_same_output_says_who_holds_it(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=12)
    out = tmp_path / "s.h5"
    args = ["convert", root, out, "--size", "48", "-q", "--backend", "numpy", "--workers", "1",
            "--piece-size", "1", "--features-at", "native"]
    first = subprocess.Popen([sys.executable, "-m", "phasefeat", *map(str, args[:])],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / "s.h5.parts" / ".lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
        time.sleep(0.01)
    try:
        second = run(*args, ok=False)
        assert second.exit_code == 1 and f"locked by process {first.pid}" in second.output
    finally:
        first.wait(timeout=120)
    assert first.returncode == 0 and out.exists()


def test_leftovers_of_a_killed_run_are_cleaned_by_the_next_one(tmp_path):
    from phasefeat.io.convert import ConvertOptions, _identity
    from phasefeat.io.discover import discover
    from phasefeat.params import PhaseParams

    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    out = tmp_path / "s.h5"
    stale = tmp_path / ".s.h5.abcd1234.partial"  # a final assembly killed mid-write
    stale.write_bytes(b"half a store")
    run("convert", root, out, *SMALL)
    assert not stale.exists()
    # Killed after the store landed, before its work folder was removed:
    parts = tmp_path / "s.h5.parts"
    parts.mkdir()
    options = ConvertOptions(size=32, features_at=32)
    identity = _identity(discover(root), PhaseParams(), options, "numpy", None)
    (parts / "manifest.json").write_text(json.dumps(identity))
    result = run("convert", root, out, *SMALL)
    assert "is complete" in result.output and not parts.exists()
    # Killed while it removed its work folder (the manifest already gone, a piece left):
    parts.mkdir()
    (parts / "piece-000000.npz").write_bytes(b"left behind")
    result = run("convert", root, out, *SMALL)
    assert "is complete" in result.output and not parts.exists()


def _stop_after_pieces(monkeypatch, n):
    """Make the next conversion stop like Ctrl-C once ``n`` pieces are written."""
    from phasefeat.io import convert as convert_module

    real, written = convert_module.write_piece, []

    def write_then_stop(path, piece):
        if len(written) == n:
            raise KeyboardInterrupt
        real(path, piece)
        written.append(path)

    monkeypatch.setattr(convert_module, "write_piece", write_then_stop)


def test_an_interrupted_overwrite_keeps_its_promise(tmp_path, monkeypatch):
    """Interrupted --overwrite: the same command without --overwrite does not call the old store
    complete, and with --overwrite it resumes from the pieces the interrupt message kept."""
    from phasefeat.io.convert import ConvertError, ConvertOptions, convert

    one, two = tmp_path / "one", tmp_path / "two"
    class_folder_dataset(one, per_class=2)
    class_folder_dataset(two, per_class=4)
    out = tmp_path / "s.h5"
    options = ConvertOptions(size=32, features_at=32, piece_size=2)
    convert(one, out, options=options, backend="numpy", progress=False)
    old = out.read_bytes()
    _stop_after_pieces(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        convert(two, out, options=options, backend="numpy", progress=False, overwrite=True)
    monkeypatch.undo()
    assert out.read_bytes() == old and len(list((tmp_path / "s.h5.parts").glob("piece-*.npz"))) == 2
    with pytest.raises(ConvertError, match="was not made by this command.*unfinished conversion of this "
                                           "command: pass --overwrite to replace the store, resuming"):
        convert(two, out, options=options, backend="numpy", progress=False)
    assert out.read_bytes() == old
    summary = convert(two, out, options=options, backend="numpy", progress=False, overwrite=True)
    assert summary.resumed_pieces == 2 and summary.converted == 12
    whole = tmp_path / "whole.h5"
    convert(two, whole, options=options, backend="numpy", progress=False)
    assert_same_store(out, whole)


def test_a_failed_virtual_overwrite_leaves_the_old_store_readable(tmp_path, monkeypatch):
    """The new shards are built beside the old ones and swapped in only when the store is complete."""
    from phasefeat.io import assemble as assemble_module
    from phasefeat.io import convert as convert_module
    from phasefeat.io.convert import ConvertOptions, convert

    one, two = tmp_path / "one", tmp_path / "two"
    class_folder_dataset(one, per_class=2)
    class_folder_dataset(two, per_class=3)
    out = tmp_path / "s.h5"
    options = ConvertOptions(size=32, features_at=32, piece_size=2)
    convert(one, out, options=options, backend="numpy", progress=False, virtual=True)
    with open_store(out) as s:
        before, attrs = s.read_many(list(range(len(s))), "enh"), s.attrs
    # the pieces of a second conversion, and its assembly failing half-way (a full disk), in this process
    monkeypatch.setattr(convert_module, "_assemble_apart", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        convert(two, out, options=options, backend="numpy", progress=False, virtual=True, overwrite=True)
    pieces = sorted((tmp_path / "s.h5.parts").glob("piece-*.npz"))
    real, shards = assemble_module._write_shard, []

    def full_disk(path, piece, compression):
        if len(shards) == 2:
            raise OSError(28, "No space left on device")
        shards.append(path)
        real(path, piece, compression)

    monkeypatch.setattr(assemble_module, "_write_shard", full_disk)
    with pytest.raises(OSError, match="No space left"):
        assemble_module.assemble(out, pieces, shape=(32, 32), cxr_dtype="uint8", enh_dtype="uint8",
                              class_names=["covid", "normal", "pneumonia"], failures=[], attrs=attrs, virtual=True)
    monkeypatch.undo()
    with open_store(out) as s:
        assert np.array_equal(s.read_many(list(range(len(s))), "enh"), before) and len(s) == 6
    assert not (tmp_path / ".s.h5.shards.partial").exists()
    convert(two, out, options=options, backend="numpy", progress=False, virtual=True, overwrite=True)
    with open_store(out) as s:
        assert len(s) == 9 and s.read(8, "enh").any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "s.h5", "s.h5.shards", "two"]


@pytest.mark.parametrize(("params", "field"), [('{"nscale": 100000}', "nscale"),
                                               ('{"bccr_iterations": 100000000}', "bccr_iterations"),
                                               ("[1, 2", "not readable")])
def test_overflowing_params_are_one_line_errors(tmp_path, params, field):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    (tmp_path / "p.json").write_text(params)
    result = run("convert", root, tmp_path / "s.h5", *SMALL, "--params", tmp_path / "p.json", ok=False)
    assert result.exit_code == 2 and field in result.output and not (tmp_path / "s.h5").exists()


def test_csv_layout_link_loops_and_special_files_are_rows(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    os.symlink(root / "loop.png", root / "loop.png")
    os.mkfifo(root / "fifo.png")
    (root / "labels.csv").write_text("path,label\nCOVID/images/COVID 0.png,covid\nNormal/images/Normal 0.png,normal\n"
                                     "loop.png,normal\nfifo.png,covid\n")
    run("convert", root, tmp_path / "s.h5", *SMALL, "--labels", root / "labels.csv")
    with open_store(tmp_path / "s.h5") as store:
        failures = dict(store.failures)
        assert len(store) == 2 and failures["loop.png"] == "symbolic link loop"
        assert failures["fifo.png"] == "not a regular file (FIFO)"


def test_a_broken_dicom_says_nothing_on_stderr(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    (root / "Normal" / "images" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00junk" * 5)
    done = subprocess.run([sys.executable, "-m", "phasefeat", "convert", str(root), str(tmp_path / "s.h5"),
                           *SMALL], capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "pydicom" not in done.stderr.lower()
    assert "unreadable DICOM" in done.stdout


def test_a_damaged_result_is_named(store, tmp_path):
    from trainer.cli import cli as trainer_cli

    out = tmp_path / "g"
    args = ["compare", "--store", store, "--epochs", "1", "--width", "0.0625", "--repeats", "1", "--inputs", "cxr",
            "--losses", "cce", "--out", out]
    run(*args, command=trainer_cli)
    result = out / "runs" / "cxr-cce-r0" / "result.json"
    result.write_text(result.read_text()[:50])
    damaged = run(*args, command=trainer_cli, ok=False)
    assert damaged.exit_code == 1 and "cxr-cce-r0/result.json is damaged" in damaged.output


def test_a_size_beyond_memory_is_refused_before_any_work(tmp_path, monkeypatch):
    import phasefeat.io.convert

    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=1)
    monkeypatch.setattr(phasefeat.io.convert, "available_memory", lambda: 2 * 2**30)
    out = tmp_path / "s.h5"
    result = run("convert", root, out, "--size", "2048", "--workers", "2", "-q", ok=False)
    assert result.exit_code == 1
    assert "--size 2048 needs about" in result.output and "2.0 GB are available" in result.output
    assert sorted(os.listdir(tmp_path)) == ["raw"]
    # what fits is converted: fewer images per piece and one worker
    run("convert", root, out, "--size", "2048", "--workers", "1", "--piece-size", "1", "--backend", "numpy",
        "--features-at", "64", "-q")
    assert out.exists()


def test_the_memory_estimate_follows_what_the_processes_hold():
    from phasefeat.io.pieces import PROCESS_BYTES, ConvertOptions, conversion_memory

    def extra(**kw):  # above the processes' fixed size
        workers = kw.pop("workers", 2)
        return conversion_memory(ConvertOptions(**kw), workers) - (workers + 1) * PROCESS_BYTES

    assert conversion_memory(ConvertOptions(), 2) < 2**31  # the study's 299 px: far below any machine
    assert extra(size=1024, features_at=1024) == pytest.approx(4 * extra(size=512, features_at=512), rel=1e-12)
    assert extra(size=512, workers=4) == pytest.approx(2 * extra(size=512, workers=2), rel=1e-12)
    small, large = extra(size=512, piece_size=8), extra(size=512, piece_size=64)
    assert large > 5 * small  # the pieces dominate, not the per-image working memory
    assert extra(size=512, enh_dtype="float32") > extra(size=512)


def test_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    from phasefeat import _entry

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(_entry, "import_module", interrupted)
    for entry in (_entry.phasefeat, _entry.trainer):
        with pytest.raises(SystemExit) as stop:
            entry()
        assert stop.value.code == 130 and capsys.readouterr().err == "Aborted!\n"


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to see what the process has loaded")
@pytest.mark.parametrize(("when", "signame", "workers"), [("starting", "SIGINT", 1), ("converting", "SIGINT", 1),
                                                          ("converting", "SIGTERM", 2)])
def test_ctrl_c_or_sigterm_during_a_conversion_is_one_line(tmp_path, when, signame, workers):
    """SIGINT once the command runs (NumPy loaded), and once pieces are being converted; SIGTERM (what
    ``timeout`` and job schedulers send) the same way, with every worker process ended, and a rerun
    resumes to the store an uninterrupted run makes."""
    import signal

    import psutil

    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=20)
    out = tmp_path / "s.h5"
    command = [sys.executable, "-m", "phasefeat", "convert", str(root), str(out), "--size", "48",
               "--workers", str(workers), "--piece-size", "1", "--backend", "numpy"]
    proc = _start(command, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ready = (lambda: _loaded(proc.pid, "_multiarray_umath")) if when == "starting" else \
        (lambda: any((tmp_path / "s.h5.parts").glob("piece-*.npz")))
    deadline = time.monotonic() + 60
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.send_signal(getattr(signal, signame))
    output = _output_or_dump(proc, 120)
    if proc.returncode == 0:
        pytest.skip("the conversion finished before the signal arrived")
    assert proc.returncode != 0 and "Traceback" not in output and "BrokenPipeError" not in output, output
    last = output.strip().splitlines()[-1]
    assert last in ("Aborted!", "Error: interrupted; finished pieces are kept: rerun the same command to resume")
    assert not out.exists()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"worker processes still running: {alive}"
    if signame == "SIGTERM":
        assert _run_or_dump(command).returncode == 0
        whole = tmp_path / "whole.h5"
        assert _run_or_dump([*command[:5], str(whole), *command[6:]]).returncode == 0
        assert_same_store(out, whole)


def _start(command, **popen):
    """``command`` started with its output captured and faulthandler on, for :func:`_output_or_dump`."""
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"}, **popen)


def _output_or_dump(proc, timeout: float) -> str:
    """The output of ``proc``; past ``timeout`` make it print where each of its threads is (faulthandler,
    on SIGABRT) and fail with that, instead of holding the test run or leaving the process behind."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"{' '.join(map(str, proc.args[2:5]))} ran past {timeout:.0f} s; its threads:\n{output[-6000:]}")
    return output


def _run_or_dump(command, timeout: float = 600):
    proc = _start(command)
    output = _output_or_dump(proc, timeout)
    return subprocess.CompletedProcess(command, proc.returncode, output, None)


def test_a_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    """An unreachable scheduler (or any failure before a piece finished) leaves no OUTPUT.parts/ that
    would make the next plain conversion refuse."""
    from phasefeat.io import convert as convert_module
    from phasefeat.io import distributed
    from phasefeat.io.convert import ConvertError

    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)
    out = tmp_path / "s.h5"

    def unreachable(*args, **kwargs):
        raise distributed.DaskUnavailableError("cannot reach the Dask scheduler at tcp://127.0.0.1:1")

    monkeypatch.setattr(distributed, "run_pieces_on_dask", unreachable)
    with pytest.raises(distributed.DaskUnavailableError):
        convert_module.convert(root, out, options=convert_module.ConvertOptions(size=32), backend="numpy",
                               scheduler="tcp://127.0.0.1:1", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    monkeypatch.setattr(convert_module, "write_piece", lambda *a: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(ConvertError, match="disk full"):
        convert_module.convert(root, out, options=convert_module.ConvertOptions(size=32), backend="numpy",
                               progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    monkeypatch.undo()
    result = CliRunner().invoke(cli, ["convert", str(root), str(out), "--size", "32", "-q", "--backend", "numpy"])
    assert result.exit_code == 0, result.output


def test_a_store_finished_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    """Two conversions to one OUTPUT: the later one checks again under the lock, not only at its start."""
    from phasefeat.io import convert as convert_module
    from phasefeat.io.convert import ConvertError

    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=2)
    out = tmp_path / "s.h5"
    real = convert_module.discover

    def slow_discovery(*args, **kwargs):  # the other conversion lands its store while this one discovers
        out.write_bytes(b"the other conversion's finished store")
        return real(*args, **kwargs)

    monkeypatch.setattr(convert_module, "discover", slow_discovery)
    with pytest.raises(ConvertError, match="already exists; pass --overwrite"):
        convert_module.convert(root, out, options=convert_module.ConvertOptions(size=32), backend="numpy",
                               progress=False)
    assert out.read_bytes() == b"the other conversion's finished store"
    assert not (tmp_path / "s.h5.parts").exists()


@pytest.mark.parametrize("size", [128, 299])
def test_enhance_working_memory_is_within_the_estimate(size):
    """The per-pixel constant behind the memory check bounds what one ``enhance`` call allocates."""
    import tracemalloc

    from phasefeat import enhance
    from phasefeat.io.pieces import ENHANCE_BYTES_PER_PIXEL

    image = np.random.default_rng(0).random((size, size)).astype(np.float32)
    enhance(image, backend="numpy")  # the filter bank of this shape is built, as in a conversion
    tracemalloc.start()
    try:
        enhance(image[::-1].copy(), backend="numpy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= ENHANCE_BYTES_PER_PIXEL * size * size


def _workers_of(pid):
    import psutil

    found = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # ended between the listing and the look
            continue
    return found


def _kill(process) -> None:
    import psutil

    try:
        process.send_signal(signal.SIGKILL)
    except psutil.NoSuchProcess:  # ended between the listing and the signal
        pass


def test_a_worker_that_dies_costs_only_its_pieces(tmp_path):
    """The kernel's OOM killer ends a worker: its pieces start again and the store is the same."""
    import signal

    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=12)
    command = [sys.executable, "-m", "phasefeat", "convert", str(root), str(tmp_path / "s.h5"), "--size", "48",
               "--workers", "2", "--piece-size", "2", "--backend", "numpy", "-q"]
    proc = _start(command)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not any((tmp_path / "s.h5.parts").glob("piece-*.npz")) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    victims = _workers_of(proc.pid)
    if not victims:
        _output_or_dump(proc, 60)
        pytest.skip("the conversion finished before a worker could be killed")
    victims[0].send_signal(signal.SIGKILL)
    output = _output_or_dump(proc, 300)
    assert proc.returncode == 0 and "Traceback" not in output, output
    whole = tmp_path / "whole.h5"
    assert subprocess.run([*command[:5], str(whole), *command[6:]], capture_output=True).returncode == 0
    assert_same_store(tmp_path / "s.h5", whole)


def test_workers_that_keep_dying_stop_the_conversion_in_one_line(tmp_path):
    """Never a hang: after a piece's third start the command names it and the likely cause."""

    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=6)
    proc = _start([sys.executable, "-m", "phasefeat", "convert", str(root), str(tmp_path / "s.h5"),
                   "--size", "48", "--workers", "2", "--piece-size", "3", "--backend", "numpy", "-q"])
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        for worker in _workers_of(proc.pid):
            _kill(worker)
        time.sleep(0.02)
    output = _output_or_dump(proc, 60)
    assert proc.returncode == 1 and "Traceback" not in output, output
    assert output.strip().splitlines()[-1].startswith("Error: a worker process died 3 times while converting piece")
    assert "memory" in output and "rerun the same command" in output
    assert not (tmp_path / "s.h5").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB file system (tmpfs), where the machine lets this process mount one; else skipped."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs privileges)")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_full_disk_under_the_store_is_one_line_and_exit_1(tmp_path, small_disk, compression):
    """Pieces elsewhere (--shard-dir), the store on a disk too small for it: checked before HDF5 opens
    the file (uncompressed), or the write fails (gzip); either way one line, exit 1, never a crash."""
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=30)
    out = small_disk / "s.h5"
    command = [sys.executable, "-m", "phasefeat", "convert", str(root), str(out), "--size", "128",
               "--features-at", "64", "-q", "--workers", "1", "--backend", "numpy",
               "--shard-dir", str(tmp_path / "pieces"), "--compression", compression]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "free some space" in done.stderr and "rerun the same command" in done.stderr
    assert list(small_disk.iterdir()) == []  # no partial store
    from phasefeat.io.pieces import auto_piece_size

    pieces = -(-90 // auto_piece_size(90))  # 90 images in pieces of the automatic size
    assert len(list((tmp_path / "pieces" / "s.h5.parts").glob("piece-*.npz"))) == pieces > 1  # kept for the rerun


_KILL_IDLE_WORKERS = """
import multiprocessing, os, signal, time
from phasefeat.io.convert import _stop_pool

if __name__ == "__main__":
    pool = multiprocessing.get_context("spawn").Pool(2)
    pool.apply(int, ("1",))
    time.sleep(1)  # both workers idle: one of them holds the task queue's read lock while it waits
    for process in pool._pool:
        os.kill(process.pid, signal.SIGKILL)
    time.sleep(0.5)
    _stop_pool(pool, worker_died=True)
    print("stopped")
"""


def test_a_pool_whose_workers_were_killed_still_stops(tmp_path):
    """Pool.terminate waits forever for a lock a killed worker held; the conversion frees it first."""
    script = tmp_path / "kill_idle_workers.py"
    script.write_text(_KILL_IDLE_WORKERS)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "stopped", done.stderr[-2000:]


_KILL_A_WORKER_MID_TICK = """
import multiprocessing, os, signal, sys, types
from phasefeat.io.convert import _TickChannel


def tick_and_die(queue):
    queue._wlock.acquire()  # as the worker's feeder thread does while it sends a tick
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    ticked = []
    channel = _TickChannel(context, types.SimpleNamespace(tick=ticked.append))
    worker = context.Process(target=tick_and_die, args=(channel.queue,))
    worker.start()
    worker.join()
    channel.close()
    print("closed", worker.exitcode, "counting" if channel._reader.is_alive() else "done")
"""


def test_a_worker_killed_while_it_sends_a_tick_does_not_hold_the_exit(tmp_path):
    """A killed worker keeps the progress queue's write lock; the conversion printed its summary and never
    ended (Python's exit waited for the last put). The channel frees the lock: the last tick arrives, the
    counting thread ends, and so does the process."""
    script = tmp_path / "kill_mid_tick.py"
    script.write_text(_KILL_A_WORKER_MID_TICK)
    output = _output_or_dump(_start([sys.executable, str(script)]), 120)
    assert output.strip() == f"closed {-signal.SIGKILL} done", output[-2000:]
