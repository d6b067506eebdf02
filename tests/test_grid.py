"""The grid on a Dask cluster (``--scheduler``): the same runs wherever they ran, through faults."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
# Five epochs of 4-image batches: a run trains for ~3 s on a quiet 2-core machine (longer while other
# tests share it), long enough to be killed mid-run; every epoch more costs each of the module's ~30 runs.
EPOCHS = 5
GRID = ["--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--width", "0.125", "--repeats", "1", "--batch-size", "4",
        "--threads-per-run", "1"]


#: ``python -m trainer ARGS`` that writes, as it exits, whether it loaded Keras into the file named first.
KERAS_PROBE = ("import atexit, runpy, sys; flag = sys.argv.pop(1); "
               "atexit.register(lambda: open(flag, 'w').write(str('keras' in sys.modules))); "
               "runpy.run_module('trainer', run_name='__main__', alter_sys=True)")


def compare(store, out, *args, check=True, env=None, keras_probe=None, **popen):
    """``trainer compare`` with GRID in a process of its own; with ``keras_probe`` (a file), through
    KERAS_PROBE."""
    launch = [sys.executable, "-m", "trainer"] if keras_probe is None else [sys.executable, "-c", KERAS_PROBE,
                                                                             str(keras_probe)]
    cmd = [*launch, "compare", "--store", str(store), "--out", str(out), *GRID, *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, **popen)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def rows(out) -> dict[str, dict]:
    with open(Path(out) / "runs.csv") as handle:
        return {r["run"]: r for r in csv.DictReader(handle)}


def digests(out) -> dict[str, str]:
    return {name: r["weights_sha256"] for name, r in rows(out).items()}


def attempts(run_dir: Path) -> int:
    return (run_dir / "log.txt").read_text().count("== attempt")


@pytest.fixture(scope="module")
def reference(store, tmp_path_factory):
    """The 4-run grid (CXR/ENH x CCE/SCCE) on one worker, one thread per run."""
    out = tmp_path_factory.mktemp("grid") / "local1"
    compare(store, out, "--scheduler", "local:1")
    return out


def _wait(condition, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the grid ended (exit {proc.returncode}) before the moment the test waits for")
        time.sleep(0.02)
    pytest.fail("timed out")


def _running_checkpointed(out):
    """A run folder with a checkpoint and no result yet: a run in the middle of training."""
    for run_dir in sorted((out / "runs").glob("*")):
        if (run_dir / "checkpoint.npz").exists() and not (run_dir / "result.json").exists():
            return run_dir
    return None


def _run_process(run_dir: Path):
    task = str(run_dir / "task.json")
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "trainer.worker" in cmdline and task in cmdline:
            return proc
    return None


@pytest.mark.slow
def test_local_1_and_local_2_give_identical_runs(reference, store, tmp_path):
    out = tmp_path / "local2"
    done = compare(store, out, "--scheduler", "local:2", keras_probe=tmp_path / "keras-loaded")
    assert (tmp_path / "keras-loaded").read_text() == "False"  # the runs load it; the driver never does
    assert "2 run(s) at once, 1 thread(s) per run" in done.stdout
    assert "trained: 4 run(s) on CPU (tensorflow backend, 1 thread(s) per run)" in done.stdout
    assert rows(out) == rows(reference)  # every column: metrics, weights digests, device, threads
    assert len(rows(out)) == 4 and {r["threads"] for r in rows(out).values()} == {"1"}
    schedule = json.loads((out / "schedule.json").read_text())
    assert len({s["worker"] for s in schedule.values()}) == 2  # both workers trained
    report = (out / "report.md").read_text()
    assert "4 run(s) on CPU (tensorflow backend, 1 thread(s) per run)" in report


@pytest.mark.slow
def test_a_grid_of_another_thread_count_or_backend_is_refused_before_any_run(reference, store, tmp_path):
    """TensorFlow on a CPU is bit-reproducible at one thread count only: runs of 1 thread and of 2
    are not paired, so a rerun at another count (or another Keras backend) is refused, saying both."""
    out = tmp_path / "grid"
    shutil.copytree(reference, out)
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    done = compare(store, out, "--scheduler", "local:1", "--threads-per-run", "2", check=False,
                   keras_probe=tmp_path / "keras-loaded")
    assert (tmp_path / "keras-loaded").read_text() == "False"
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert (f"{out} holds runs trained with 1 thread(s) per run; this grid would train with 2 thread(s) per "
            "run, and results depend on it: set --threads-per-run as before") in done.stderr
    other = compare(store, out, "--scheduler", "local:1", check=False, env={**os.environ, "KERAS_BACKEND": "jax"})
    assert other.returncode == 1
    assert "holds runs trained with Keras' tensorflow backend; this grid would train with Keras' jax" in other.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")} == before


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_at_most_its_epoch(reference, store, tmp_path):
    out = tmp_path / "killed"  # the ENH runs only: two runs, one per worker, one of them killed
    proc = compare(store, out, "--inputs", "enh", "--scheduler", "local:2", start_new_session=True)
    try:
        victim = _wait(lambda: _running_checkpointed(out), proc)
        child = _wait(lambda: _run_process(victim), proc)
        child.parent().send_signal(signal.SIGKILL)  # the Dask worker; its run process dies with it
        assert proc.wait(timeout=300) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert attempts(victim) == 2
    result = json.loads((victim / "result.json").read_text())
    assert result["resumed_at_epochs"] and 1 <= result["resumed_at_epochs"][0] < EPOCHS
    assert not (victim / "checkpoint.npz").exists()
    enh = {name: digest for name, digest in digests(reference).items() if name.startswith("enh-")}
    assert len(enh) == 2 and digests(out) == enh  # resumed from its checkpoint to the same weights


@pytest.mark.slow
def test_the_driver_killed_and_rerun_resumes(reference, store, tmp_path):
    out = tmp_path / "driver"
    proc = compare(store, out, "--scheduler", "local:2", start_new_session=True)
    try:
        _wait(lambda: list(out.glob("runs/*/result.json")) and _running_checkpointed(out), proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its local cluster and the run processes
        proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    resumable = [p.parent for p in out.glob("runs/*/checkpoint.npz") if not (p.parent / "result.json").exists()]
    assert finished and resumable
    compare(store, out, "--scheduler", "local:2")
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished runs are not trained again
    for run_dir in resumable:
        assert json.loads((run_dir / "result.json").read_text())["resumed_at_epochs"]
    assert digests(out) == digests(reference)


@contextlib.contextmanager
def cluster(tmp_path, workers: list[list[str]], env: dict | None = None):
    """A scheduler (scheduler file) and one `dask worker` per argument list."""
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--scheduler-file", str(scheduler_file),
                               "--port", "0", "--dashboard-address", ":0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for args in workers:
            procs.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file), "--no-nanny",
                 "--no-dashboard", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=HERE))
        from distributed import Client

        with Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(len(workers), timeout=120)
        yield scheduler_file
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # a busy machine: do not wait for a graceful close
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_two_gpu_workers_never_run_two_runs_at_once(reference, store, tmp_path):
    # Two threads per worker, so only the GPU resource keeps a second run off a busy worker.
    gpu_worker = ["--nthreads", "2", "--resources", "GPU=1"]
    with cluster(tmp_path, [gpu_worker, gpu_worker]) as scheduler_file:
        out = tmp_path / "gpus"
        done = compare(store, out, "--scheduler", scheduler_file)
    assert "one GPU per run" in done.stdout
    schedule = json.loads((out / "schedule.json").read_text())
    by_worker = {}
    for s in schedule.values():
        by_worker.setdefault(s["worker"], []).append((s["started"], s["finished"]))
    assert len(schedule) == 4
    for spans in by_worker.values():
        spans.sort()
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
    assert rows(out) == rows(reference)


@pytest.mark.slow
def test_a_store_missing_on_one_worker_is_refused_before_any_run(store, tmp_path):
    hidden = ["--nthreads", "1", "--preload", str(HERE / "_hide_store.py")]
    with cluster(tmp_path, [["--nthreads", "1"], hidden], env={"HIDDEN_STORE": str(store)}) as scheduler_file:
        out = tmp_path / "refused"
        done = compare(store, out, "--scheduler", scheduler_file, check=False)
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("Error: worker tcp://")
    assert "cannot open the store" in error[0] and "every worker needs it at the same path" in error[0]
    assert not out.exists()


@pytest.mark.slow
def test_a_run_failing_on_its_own_is_reported_and_the_others_finish(store, tmp_path):
    out = tmp_path / "failing"
    (out / "runs" / "enh-scce-r0").mkdir(parents=True)
    (out / "runs" / "enh-scce-r0" / "checkpoint.npz").write_bytes(b"not a checkpoint")
    done = compare(store, out, "--inputs", "enh", "--scheduler", "local:2", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: 1 of 2 runs failed (enh-scce-r0); report.md says why")
    assert set(rows(out)) == {"enh-cce-r0"}
    report = (out / "report.md").read_text()
    assert "## Failed runs" in report and "`enh-scce-r0`: " in report and "is damaged" in report
    assert attempts(out / "runs" / "enh-scce-r0") == 1  # its own reason: not retried
    (out / "runs" / "enh-scce-r0" / "checkpoint.npz").unlink()  # the cause fixed, the same command
    compare(store, out, "--inputs", "enh", "--scheduler", "local:2")
    assert set(rows(out)) == {"enh-cce-r0", "enh-scce-r0"}
    assert "## Failed runs" not in (out / "report.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--scheduler", "bogus"], "--scheduler takes local:N, tcp://HOST:PORT or a scheduler file"),
    (["--scheduler", "local:0"], "local:N needs N >= 1"),
    (["--scheduler", "missing.json"], "no such scheduler file"),
    (["--threads-per-run", "2"], "--threads-per-run needs --scheduler"),
    (["--gpus-per-run", "1"], "--gpus-per-run needs --scheduler"),
    (["--gpus-per-run", "2", "--scheduler", "local:1"], "is not in the range 0<=x<=1"),
])
def test_cluster_options_are_checked_before_any_work(store, tmp_path, args, message):
    from click.testing import CliRunner

    from trainer.cli import cli

    out = tmp_path / "out"
    for command in ("compare", "audit"):
        result = CliRunner().invoke(cli, [command, "--store", str(store), "--out", str(out), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not out.exists()


@pytest.mark.slow
def test_gpus_per_run_on_a_machine_without_gpus_is_one_line(store, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "trainer", "compare", "--store", str(store), "--out", str(out),
                           "--scheduler", "local:2", "--gpus-per-run", "1"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 1 and done.stderr.strip() == (
        "Error: --gpus-per-run 1 with --scheduler local:2 needs 2 GPUs; this machine shows 0 "
        "(CUDA_VISIBLE_DEVICES or nvidia-smi)")
    assert not out.exists()


@pytest.mark.slow
def test_the_audit_runs_on_the_cluster_too(store, tmp_path):
    out = tmp_path / "audit"
    done = subprocess.run([sys.executable, "-m", "trainer", "audit", "--store", str(store), "--out", str(out),
                           "--inputs", "enh", "--repeats", "1", "--epochs", "2", "--width", "0.125",
                           "--occlude-fractions", "0.9", "--scheduler", "local:2", "--threads-per-run", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "audit.json").read_text())
    keys = [e["key"] for e in record["experiments"]]
    schedule = json.loads((out / "schedule.json").read_text())
    assert sorted(schedule) == sorted(f"{k}-enh-r0" for k in keys) and len(keys) >= 2
    for name in schedule:
        result = json.loads((out / "runs" / name / "result.json").read_text())
        assert result["threads"] == 1 and result["device"] == "CPU"


@pytest.mark.slow
def test_a_cluster_that_loses_its_only_worker_says_so_and_goes_on_when_one_joins(store, tmp_path):
    """The driver waited with "running 1" and no message after `dask worker` was killed (~290 s by hand)."""
    out = tmp_path / "lost"
    log = tmp_path / "driver.txt"

    def worker(scheduler_file):
        return subprocess.Popen([str(BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file),
                                 "--no-nanny", "--no-dashboard", "--nthreads", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE)

    with cluster(tmp_path, [["--nthreads", "1"]]) as scheduler_file:
        with open(log, "w") as handle:
            driver = subprocess.Popen(
                [sys.executable, "-m", "trainer", "compare", "--store", str(store), "--out", str(out), *GRID,
                 "--inputs", "enh", "--scheduler", str(scheduler_file)], stdout=handle, stderr=subprocess.STDOUT,
                env={**os.environ, "TRAINER_NO_WORKER_SECONDS": "3"})
            try:
                run_dir = _wait(lambda: _running_checkpointed(out), driver)
                for proc in psutil.process_iter(["cmdline"]):  # the only worker (its run process dies with it)
                    if "worker" in (proc.info["cmdline"] or []) and str(scheduler_file) in proc.info["cmdline"]:
                        proc.kill()
                _wait(lambda: "no Dask worker has been connected for 3 s" in log.read_text(), driver, timeout=120)
                assert driver.poll() is None  # still waiting, and said so
                again = worker(scheduler_file)
                try:
                    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
                finally:
                    again.terminate()
                    again.wait(timeout=30)
            finally:
                if driver.poll() is None:
                    driver.kill()
    said = log.read_text()
    assert "run(s) wait: start one (dask worker tcp://" in said and "or press Ctrl-C" in said
    assert "Dask worker(s) can run the runs again: the grid goes on" in said
    assert json.loads((run_dir / "result.json").read_text())["resumed_at_epochs"]


@pytest.mark.parametrize("failures", [1, 3])
def test_a_local_cluster_that_fails_to_start_is_tried_again_then_one_line(monkeypatch, failures):
    """A worker killed while `--scheduler local:N` started raised "Nanny failed to start" as a traceback."""
    import distributed

    from trainer.cluster import ClusterRunner
    from trainer.experiment import GridError

    real, calls = distributed.SpecCluster, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise RuntimeError("Nanny failed to start.")
        return real(*args, **kwargs)

    monkeypatch.setattr(distributed, "SpecCluster", flaky)
    runner = ClusterRunner("local:1", progress=False)
    if failures < 3:
        with runner:
            runner.connect()
            assert len(runner.client.scheduler_info()["workers"]) == 1
        assert len(calls) == failures + 1
        return
    with pytest.raises(GridError, match=r"^the local Dask cluster \(local:1\) did not start in 3 tries \(Nanny "
                                        r"failed to start\.\); is the machine short of memory or processes\?$"):
        runner.connect()
    assert len(calls) == 3


def test_a_conversions_local_cluster_that_never_starts_is_one_line(monkeypatch):
    import distributed

    from phasefeat.io.distributed import DaskUnavailableError, _client

    def failing(*args, **kwargs):
        raise RuntimeError("Nanny failed to start.")

    monkeypatch.setattr(distributed, "LocalCluster", failing)
    with pytest.raises(DaskUnavailableError, match=r"local Dask cluster \(local:2\) did not start in 3 tries"):
        _client("local:2")
