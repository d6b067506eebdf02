"""phasefeat convert on a Dask LocalCluster: the same store as one machine, through faults."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REAL_DIR, real_image_paths
from datasets import class_folder_dataset
from test_convert import assert_same_store, run

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

ARGS = ["--size", "32", "-q", "--backend", "numpy", "--piece-size", "2"]


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=12)
    return root


def test_local_cluster_equals_single_machine_on_real_radiographs(tmp_path):
    if not real_image_paths():
        pytest.skip(f"real radiographs not found at {REAL_DIR}")
    args = ["--size", "32", "-q", "--backend", "numpy", "--piece-size", "16", "--features-at", "32"]
    run("convert", REAL_DIR, tmp_path / "one.h5", *args, "--workers", 1)
    result = run("convert", REAL_DIR, tmp_path / "dask.h5", *args, "--scheduler", "local:2",
                 "--shard-dir", tmp_path / "shards")
    assert "Dask dashboard: http" in result.output
    assert_same_store(tmp_path / "one.h5", tmp_path / "dask.h5", skip=("engine", "device"))
    assert not (tmp_path / "shards" / "dask.h5.parts").exists()
    from phasefeat.backend import cpu_model
    from phasefeat.io.store import open_store

    with open_store(tmp_path / "dask.h5") as store:  # what the workers computed on
        assert store.attrs["device"] == f"Dask workers: numpy on {cpu_model()}"


def test_native_features_on_a_local_cluster_equal_single_machine(tmp_path):
    root = tmp_path / "raw"
    class_folder_dataset(root, per_class=3)
    args = [*ARGS, "--features-at", "native"]
    run("convert", root, tmp_path / "one.h5", *args, "--workers", 1)
    run("convert", root, tmp_path / "dask.h5", *args, "--scheduler", "local:1")
    assert_same_store(tmp_path / "one.h5", tmp_path / "dask.h5", skip=("engine", "device"))


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "phasefeat", "convert", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_for_pieces(parts, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(parts.glob("piece-*.npz"))) >= n:
            return True
        time.sleep(0.01)
    return False


def _workers(proc):
    kids = psutil.Process(proc.pid).children(recursive=True)
    return [k for k in kids if "resource_tracker" not in " ".join(k.cmdline())]


def test_a_killed_worker_is_retried_and_the_store_is_identical(raw, tmp_path):
    run("convert", raw, tmp_path / "reference.h5", *ARGS, "--workers", 1)
    out = tmp_path / "dask.h5"
    proc = _start([raw, out, *ARGS, "--scheduler", "local:2"])
    assert _wait_for_pieces(tmp_path / "dask.h5.parts", 2, proc)
    workers = _workers(proc)
    assert workers, "no Dask worker processes found"
    workers[0].send_signal(signal.SIGKILL)
    assert proc.wait(timeout=180) == 0
    assert_same_store(tmp_path / "reference.h5", out, skip=("engine", "device"))


def test_a_killed_client_resumes_and_the_store_is_identical(raw, tmp_path):
    run("convert", raw, tmp_path / "reference.h5", *ARGS, "--workers", 1)
    out = tmp_path / "dask.h5"
    parts = tmp_path / "dask.h5.parts"
    proc = _start([raw, out, *ARGS, "--scheduler", "local:2"])
    assert _wait_for_pieces(parts, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the client and its local cluster, all at once
    proc.wait()
    finished = len(list(parts.glob("piece-*.npz")))
    assert finished >= 3 and not out.exists()
    result = run("convert", raw, out, *ARGS, "--scheduler", "local:2")
    # Everything died at once (one process group), so exactly the pieces on disk are resumed.
    assert f"resumed {finished} finished pieces" in result.output
    assert_same_store(tmp_path / "reference.h5", out, skip=("engine", "device"))


@pytest.mark.parametrize("scheduler", ["local:0", "local:two"])
def test_bad_scheduler_is_a_clear_error(raw, tmp_path, scheduler):
    result = run("convert", raw, tmp_path / "x.h5", *ARGS, "--scheduler", scheduler, ok=False)
    assert result.exit_code != 0 and "local:N" in result.output


def test_virtual_store_over_shards_equals_the_copied_one(raw, tmp_path):
    import shutil

    import h5py

    run("convert", raw, tmp_path / "copied.h5", *ARGS, "--workers", 1)
    out = tmp_path / "a" / "virtual.h5"
    out.parent.mkdir()
    run("convert", raw, out, *ARGS, "--scheduler", "local:2", "--virtual")
    with h5py.File(out) as f:
        assert f["enh"].is_virtual and f["cxr"].is_virtual
        assert f.attrs["virtual_shards"] == "virtual.h5.shards"
    assert_same_store(tmp_path / "copied.h5", out, skip=("engine", "device", "virtual_shards"))
    moved = tmp_path / "elsewhere"
    shutil.move(out.parent, moved)  # the store and its shards travel together
    assert_same_store(tmp_path / "copied.h5", moved / "virtual.h5", skip=("engine", "device", "virtual_shards"))
    assert "virtual_shards virtual.h5.shards" in run("inspect", moved / "virtual.h5").output


def test_auto_backend_is_resolved_on_the_workers(raw, tmp_path):
    from phasefeat.backend import gpu_available

    if gpu_available():
        pytest.skip("with a GPU, auto picks CuPy on the workers: "
                    "test_auto_backend_uses_the_gpu_on_the_workers checks that case")
    run("convert", raw, tmp_path / "numpy.h5", *ARGS, "--workers", 1)
    args = [a for a in ARGS if a not in ("--backend", "numpy")]
    run("convert", raw, tmp_path / "auto.h5", *args, "--backend", "auto", "--scheduler", "local:2")
    # No GPU here, so every worker resolves auto to NumPy: the same arrays.
    assert_same_store(tmp_path / "numpy.h5", tmp_path / "auto.h5", skip=("engine", "backend", "device"))


def test_auto_backend_uses_the_gpu_on_the_workers(raw, tmp_path, cupy_module):
    """With a GPU on the workers (real, or the stand-in loaded by each worker), --backend auto on a Dask
    cluster computes on CuPy: within float32 rounding of NumPy, and the store says so."""
    import contextlib
    from pathlib import Path

    import cupy_standin
    import dask
    import numpy as np

    from phasefeat.io.store import open_store

    run("convert", raw, tmp_path / "numpy.h5", *ARGS, "--workers", 1)
    args = [a for a in ARGS if a not in ("--backend", "numpy")]
    on_standin = cupy_module is cupy_standin.module
    preload = str(Path(cupy_standin.__file__).with_name("_standin_preload.py"))
    with dask.config.set({"distributed.worker.preload": [preload]}) if on_standin else contextlib.nullcontext():
        run("convert", raw, tmp_path / "auto.h5", *args, "--backend", "auto", "--scheduler", "local:1")
    with open_store(tmp_path / "numpy.h5") as a, open_store(tmp_path / "auto.h5") as b:
        ea, eb = a.read_many(range(len(a))).astype(int), b.read_many(range(len(b))).astype(int)
        assert np.mean(np.abs(ea - eb) <= 1) >= 0.999 and np.abs(ea - eb).max() <= 2
        assert b.attrs["device"].startswith("Dask workers: cupy on ")
        if on_standin:
            assert b.attrs["device"] == f"Dask workers: cupy on {cupy_standin.DEVICE}"
