"""One run of a grid as a unit of work, in process: what the scheduler gets back, the run process's
environment, log, lock and exit codes (:mod:`trainer.worker`).

The run process itself (``python -m trainer.worker``) is replaced by a function here; the grid
tests (``test_grid.py``) run the real one on real clusters.
"""

import dataclasses
import fcntl
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from trainer import worker
from trainer.experiment import GridError, RunConfig
from trainer.splits import Split
from trainer.worker import (
    FAILED_EXIT,
    RETRY_EXIT,
    RunInterrupted,
    main,
    run_task,
    thread_environment,
)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS", "NUMBA_NUM_THREADS")


def test_the_thread_environment_pins_every_library_that_starts_threads():
    assert thread_environment(3) == dict.fromkeys(THREAD_VARIABLES, "3")
    assert thread_environment(1) == dict.fromkeys(THREAD_VARIABLES, "1")


# --- run_task: the scheduler's side ----------------------------------------------------------------

class FakeRunProcess:
    """Stands in for ``subprocess.call`` of the run process: records the call, writes what a run
    process would, and returns ``code``."""

    def __init__(self, code=0, writes=None):
        self.code, self.writes, self.calls = code, writes or {}, []

    def __call__(self, argv, stdout, stderr, env):
        task = argv[-1]
        self.calls.append({"argv": argv, "stderr": stderr, "env": env, "log": stdout.name,
                           "spec": json.loads(Path(task).read_text()),
                           "failure_before": os.path.exists(os.path.join(os.path.dirname(task), "failure.json")),
                           "log_so_far": Path(stdout.name).read_text(errors="replace")})
        stdout.write("run output\n")
        for name, record in self.writes.items():
            with open(os.path.join(os.path.dirname(task), name), "w") as handle:
                json.dump(record, handle)
        return self.code


@pytest.fixture
def spec(tmp_path):
    return {"run_dir": str(tmp_path / "runs" / "enh-cce-r0"), "threads": 2, "store": "s.h5", "workers": 1}


def test_a_finished_run_returns_its_result_and_where_and_when_it_ran(spec, tmp_path, monkeypatch):
    fake = FakeRunProcess(0, {"result.json": {"test_loss": 0.5}})
    monkeypatch.setattr(worker.subprocess, "call", fake)
    before = time.time()
    outcome = run_task(spec)
    assert outcome["status"] == "done" and outcome["result"] == {"test_loss": 0.5}
    assert outcome["run"] == "enh-cce-r0" and outcome["attempt"] == 1
    assert outcome["worker"] == socket.gethostname()  # not on a Dask worker
    assert before <= outcome["started"] <= outcome["finished"] <= time.time()
    call = fake.calls[0]
    task = tmp_path / "runs" / "enh-cce-r0" / "task.json"
    assert call["argv"] == [sys.executable, "-m", "trainer.worker", str(task)]
    assert call["spec"] == spec and call["stderr"] == subprocess.STDOUT
    assert sorted(p.name for p in task.parent.iterdir()) == ["log.txt", "result.json", "task.json"]


def test_the_run_process_gets_the_workers_environment_its_threads_and_its_parent(spec, monkeypatch):
    fake = FakeRunProcess(0, {"result.json": {}})
    monkeypatch.setattr(worker.subprocess, "call", fake)
    monkeypatch.setenv("SOME_SETTING", "kept")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    run_task(spec)
    env = fake.calls[0]["env"]
    assert env["SOME_SETTING"] == "kept" and env["TRAINER_PARENT_PID"] == str(os.getpid())
    assert {name: env[name] for name in THREAD_VARIABLES} == thread_environment(2)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"  # TensorFlow's start-up chatter stays out of the log
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # unless the user asked for it
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # never the worker's own thread count
    run_task(spec)
    assert fake.calls[1]["env"]["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert fake.calls[1]["env"]["OMP_NUM_THREADS"] == "2"


def test_each_attempt_is_a_headed_section_of_the_runs_log(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(worker.subprocess, "call", FakeRunProcess(0, {"result.json": {}}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert [run_task(spec)["attempt"] for _ in range(3)] == [1, 2, 3]
    lines = (tmp_path / "runs" / "enh-cce-r0" / "log.txt").read_text().splitlines()
    heads = [line for line in lines if line.startswith("== attempt")]
    assert [h.split()[2] for h in heads] == ["1", "2", "3"]
    assert heads[0].startswith(f"== attempt 1 on {socket.gethostname()} (pid {os.getpid()}), {time.strftime('%Y-')}")
    assert heads[0].endswith(", 2 thread(s), CUDA_VISIBLE_DEVICES=3")
    assert lines.count("run output") == 3


def test_the_attempt_count_reads_a_damaged_log(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(worker.subprocess, "call", FakeRunProcess(0, {"result.json": {}}))
    log = tmp_path / "runs" / "enh-cce-r0" / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"== attempt 1 on a\n\xff\xfe garbage\n== attempt 2 on b\n")
    assert run_task(spec)["attempt"] == 3


def test_the_cuda_devices_line_is_empty_without_the_variable(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(worker.subprocess, "call", FakeRunProcess(0, {"result.json": {}}))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run_task(spec)
    assert (tmp_path / "runs" / "enh-cce-r0" / "log.txt").read_text().splitlines()[0].endswith(
        "CUDA_VISIBLE_DEVICES=")


def test_a_failure_of_an_earlier_attempt_is_removed_before_the_run_starts(spec, tmp_path, monkeypatch):
    fake = FakeRunProcess(0, {"result.json": {}})
    monkeypatch.setattr(worker.subprocess, "call", fake)
    run_dir = tmp_path / "runs" / "enh-cce-r0"
    run_dir.mkdir(parents=True)
    (run_dir / "failure.json").write_text('{"reason": "old"}')
    assert run_task(spec)["status"] == "done"
    assert fake.calls[0]["failure_before"] is False and not (run_dir / "failure.json").exists()


def test_a_run_that_failed_on_its_own_is_an_outcome_not_a_retry(spec, monkeypatch):
    monkeypatch.setattr(worker.subprocess, "call", FakeRunProcess(FAILED_EXIT, {"failure.json": {"reason": "NaN"}}))
    outcome = run_task(spec)
    assert outcome["status"] == "failed" and outcome["reason"] == "NaN" and "result" not in outcome
    assert outcome["run"] == "enh-cce-r0" and outcome["attempt"] == 1


@pytest.mark.parametrize(("code", "said"), [
    (1, "(exit status 1)"), (2, "(exit status 2)"), (5, "(exit status 5)"), (120, "(exit status 120)"),
    (-200, "(exit status -200)"),
    (RETRY_EXIT, "(out of memory)"),
    (-9, "(killed by SIGKILL; a signal usually means the system ran out of memory)"),
    (-15, "(killed by SIGTERM; a signal usually means the system ran out of memory)"),
])
def test_a_run_process_that_ended_early_is_retried_with_why(spec, tmp_path, monkeypatch, code, said):
    monkeypatch.setattr(worker.subprocess, "call", FakeRunProcess(code))
    with pytest.raises(RunInterrupted) as raised:
        run_task(spec)
    log = tmp_path / "runs" / "enh-cce-r0" / "log.txt"
    assert str(raised.value) == f"enh-cce-r0: the run's process ended {said}; log: {log}"


def test_on_a_dask_worker_the_run_is_named_by_the_workers_address_and_logged(spec, monkeypatch):
    distributed = pytest.importorskip("distributed")
    events = []
    fake_worker = types.SimpleNamespace(address="tcp://10.0.0.7:4000",
                                        log_event=lambda topic, msg: events.append((topic, msg)))
    monkeypatch.setattr(distributed, "get_worker", lambda: fake_worker)
    fake = FakeRunProcess(0, {"result.json": {}})
    monkeypatch.setattr(worker.subprocess, "call", fake)
    outcome = run_task(spec)
    assert outcome["worker"] == "tcp://10.0.0.7:4000"
    assert "== attempt 1 on tcp://10.0.0.7:4000 " in fake.calls[0]["log_so_far"]
    assert events == [("trainer-grid", {"event": "started", "run": "enh-cce-r0"}),
                      ("trainer-grid", {"event": "finished", "run": "enh-cce-r0"})]


def test_outside_a_dask_worker_no_event_is_logged(spec, monkeypatch):
    distributed = pytest.importorskip("distributed")

    def no_worker():
        raise ValueError("No worker found")

    monkeypatch.setattr(distributed, "get_worker", no_worker)
    monkeypatch.setattr(worker.subprocess, "call", FakeRunProcess(0, {"result.json": {}}))
    assert run_task(spec)["worker"] == socket.gethostname()


# --- the run process's side -------------------------------------------------------------------------

def child(code, env, timeout=60):
    """Run ``code`` in a fresh Python with ``env`` added; its completed process."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)


@pytest.mark.parametrize("value", [None, "0"])
def test_without_a_parent_to_follow_the_process_goes_on(value, monkeypatch):
    if value is None:
        monkeypatch.delenv("TRAINER_PARENT_PID", raising=False)
    else:
        monkeypatch.setenv("TRAINER_PARENT_PID", value)
    threads = len(threading.enumerate())
    worker._die_with_parent()
    assert len(threading.enumerate()) == threads  # no watchdog either


@pytest.mark.parametrize("recorded", ["1", "4194303"])  # a pid below and one above this test's
def test_a_run_process_whose_parent_is_already_gone_ends_at_once(recorded):
    # this test's process is its parent, not the recorded one; no watchdog, so the check itself must end it
    done = child("import threading\nthreading.Thread.start = lambda self: None\n"
                 "from trainer.worker import _die_with_parent\n_die_with_parent()\nprint('alive')",
                 {"TRAINER_PARENT_PID": recorded})
    assert done.returncode == 1 and "alive" not in done.stdout


def test_the_watchdog_ends_the_process_whatever_pid_adopts_it():
    """An orphan is adopted by pid 1 or by a subreaper, whose pid may be larger than its parent's was."""
    done = child("""
        import os, sys, time
        parent = int(os.environ["TRAINER_PARENT_PID"])
        answers = iter([parent, parent, parent + 100])  # the start's check, one watch, then adopted
        os.getppid = lambda: next(answers, parent + 100)
        real = time.sleep
        time.sleep = lambda seconds: real(0.01)
        from trainer.worker import _die_with_parent
        _die_with_parent()
        real(5)
        print("alive", flush=True)
    """, {"TRAINER_PARENT_PID": str(os.getpid())})
    assert done.returncode == 1 and done.stdout == ""


def test_the_watchdog_looks_at_its_parent_every_second():
    done = child("""
        import os, time
        real = time.sleep

        def once(seconds):
            print("sleeps", seconds, flush=True)
            raise SystemExit  # ends the watchdog thread

        time.sleep = once
        from trainer.worker import _die_with_parent
        _die_with_parent()
        real(0.5)
        print("alive", flush=True)
    """, {"TRAINER_PARENT_PID": str(os.getpid())})
    assert done.returncode == 0 and done.stdout == "sleeps 1\nalive\n"


ORPHAN = """
    import os, subprocess, sys
    # the worker: starts a run process that follows it, says its pid, and is killed
    code = ("import sys, time{platform}\\nfrom trainer.worker import _die_with_parent\\n_die_with_parent()\\n"
            "print('following', flush=True)\\ntime.sleep(60)")
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True,
                           env={{**os.environ, "TRAINER_PARENT_PID": str(os.getpid())}})
    assert run.stdout.readline() == "following\\n"
    print(run.pid, flush=True)
    os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_a_run_process_dies_with_its_worker(platform):
    """On Linux the kernel ends it (PR_SET_PDEATHSIG); elsewhere a watchdog thread notices within a second."""
    import psutil

    # on Linux without the watchdog (the kernel alone must end it); elsewhere the watchdog alone
    patch = ("; import threading; threading.Thread.start = lambda self: None" if platform == "linux"
             else "; sys.platform = 'darwin'")
    done = child(ORPHAN.format(platform=patch), {})
    assert done.returncode == -9, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail(f"the run process {pid} outlived its worker by 10 s")


def test_the_run_lock_is_held_until_its_file_is_closed(tmp_path):
    handle = worker._take_run_lock(tmp_path)
    other = open(tmp_path / "run.lock", "w")
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.close()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
    finally:
        other.close()


def test_a_run_lock_that_cannot_be_taken_fails_the_run_once_with_its_reason(tmp_path):
    """A run.lock that is a directory was tried 4 times and reported as an out-of-memory signal, with a
    stray traceback line in the driver's output."""
    run = tmp_path / "run"
    (run / "run.lock").mkdir(parents=True)
    task = run / "task.json"
    task.write_text(json.dumps({"run_dir": str(run)}))
    assert main(str(task)) == FAILED_EXIT  # failed for a reason of its own: not retried
    reason = json.loads((run / "failure.json").read_text())["reason"]
    assert reason == (f"cannot take the run's lock {run / 'run.lock'} (Is a directory); delete it and run the "
                      "same command again")


def test_a_lock_the_file_system_refuses_is_released_and_named(tmp_path, monkeypatch):
    opened = []
    real_open = open

    def recording_open(*args, **kwargs):
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    def no_locks(handle, how):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.setattr("builtins.open", recording_open)
    with pytest.raises(OSError, match="No locks available"):
        worker._take_run_lock(tmp_path)
    assert opened and all(handle.closed for handle in opened)


# --- main: the run process ---------------------------------------------------------------------------

@pytest.fixture
def task(tmp_path, monkeypatch):
    """A run's task file, with the process's parent watch and thread pinning stubbed out."""
    run = tmp_path / "run"
    run.mkdir()
    split = Split(np.array([0, 1]), np.array([2]), np.array([3]), 5, 0.25, 0.25, True)
    spec = {"run_dir": str(run), "store": str(tmp_path / "s.h5"), "threads": 2, "workers": 3,
            "config": dataclasses.asdict(RunConfig(epochs=2)), "split": split.to_json(),
            "identity": {"store": {"n": 4}, "threads": 2, "backend": "tensorflow"}}
    (run / "task.json").write_text(json.dumps(spec))
    calls = []
    monkeypatch.setattr(worker, "_die_with_parent", lambda: calls.append("die with parent"))
    monkeypatch.setattr(worker, "_pin_threads", lambda threads: calls.append(("threads", threads)))
    return run / "task.json", spec, calls


def stub_run(monkeypatch, effect):
    import trainer.grid

    monkeypatch.setattr(trainer.grid, "run_or_reuse", effect)


def test_main_trains_the_run_of_its_task_holding_the_lock(task, monkeypatch, capsys):
    path, spec, calls = task
    seen = {}

    def run_or_reuse(store, cfg, run_dir, split, identity, **kwargs):
        with open(run_dir / "run.lock", "w") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while the run trains
        seen.update(store=store, cfg=cfg, run_dir=run_dir, split=split, identity=identity, kwargs=kwargs)
        return {"test_loss": 0.123456, "weights_sha256": "abcdef0123456789"}

    stub_run(monkeypatch, run_or_reuse)
    assert main(str(path)) == 0
    assert capsys.readouterr().out == "done: test loss 0.1235, weights abcdef012345\n"
    assert calls == ["die with parent", ("threads", 2)]
    assert seen["store"] == spec["store"] and seen["cfg"] == RunConfig(epochs=2)
    assert seen["run_dir"] == path.parent and seen["identity"] == spec["identity"]
    assert seen["split"].to_json() == spec["split"]
    assert seen["kwargs"] == {"progress": False, "workers": 3}
    with open(path.parent / "run.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the run ended
    assert not (path.parent / "failure.json").exists()


@pytest.mark.parametrize(("error", "reason"), [
    (GridError("the loss diverged at epoch 3\nmore detail"), "the loss diverged at epoch 3"),
    (ValueError(""), "ValueError"),
    (OSError(28, "No space left on device"), "[Errno 28] No space left on device"),
])
def test_a_run_failing_for_a_reason_of_its_own_records_its_first_line(task, monkeypatch, capsys, error, reason):
    path, _, _ = task

    def fails(*args, **kwargs):
        raise error

    stub_run(monkeypatch, fails)
    assert main(str(path)) == FAILED_EXIT
    assert json.loads((path.parent / "failure.json").read_text()) == {"reason": reason}
    out = capsys.readouterr()
    assert out.out == f"FAILED: {reason}\n" and "Traceback" not in out.err


def test_a_defect_fails_the_run_with_its_type_and_a_traceback_in_the_log(task, monkeypatch, capsys):
    path, _, _ = task

    def defect(*args, **kwargs):
        raise RuntimeError("boom\nat line 2")

    stub_run(monkeypatch, defect)
    assert main(str(path)) == FAILED_EXIT
    assert json.loads((path.parent / "failure.json").read_text()) == {"reason": "RuntimeError: boom"}
    out = capsys.readouterr()
    assert "Traceback" in out.err and out.out == "FAILED: RuntimeError: boom\n"


def test_running_out_of_memory_asks_for_a_retry(task, monkeypatch, capsys):
    path, _, _ = task

    def oom(*args, **kwargs):
        raise MemoryError

    stub_run(monkeypatch, oom)
    assert main(str(path)) == RETRY_EXIT
    assert not (path.parent / "failure.json").exists()
    assert "MemoryError" in capsys.readouterr().err


def test_a_failure_is_written_whole_and_said(tmp_path, capsys):
    assert worker._fail(tmp_path, "why") == FAILED_EXIT
    assert json.loads((tmp_path / "failure.json").read_text()) == {"reason": "why"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failure.json"]
    assert capsys.readouterr().out == "FAILED: why\n"


# --- thread pinning per backend ----------------------------------------------------------------------

def fake_modules(monkeypatch, backend):
    calls = []
    keras = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: backend))
    threading = types.SimpleNamespace(set_intra_op_parallelism_threads=lambda n: calls.append(("intra", n)),
                                      set_inter_op_parallelism_threads=lambda n: calls.append(("inter", n)))
    tensorflow = types.SimpleNamespace(config=types.SimpleNamespace(threading=threading))
    torch = types.SimpleNamespace(set_num_threads=lambda n: calls.append(("torch", n)))
    for name, module in (("keras", keras), ("tensorflow", tensorflow), ("torch", torch)):
        monkeypatch.setitem(sys.modules, name, module)
    return calls


@pytest.mark.parametrize(("backend", "pinned"), [("tensorflow", [("intra", 3), ("inter", 3)]),
                                                 ("torch", [("torch", 3)]), ("jax", [])])
def test_threads_are_pinned_in_the_backend_that_trains(monkeypatch, backend, pinned):
    calls = fake_modules(monkeypatch, backend)
    worker._pin_threads(3)
    assert calls == pinned


@pytest.mark.parametrize(("code", "signal_name"), [(-1, "SIGHUP"), (-2, "SIGINT")])
def test_the_smallest_signals_are_named_too(spec, monkeypatch, code, signal_name):
    monkeypatch.setattr(worker.subprocess, "call", FakeRunProcess(code))
    with pytest.raises(RunInterrupted, match=rf"\(killed by {signal_name}; a signal usually means"):
        run_task(spec)


def test_a_run_process_ends_when_its_work_is_done_while_its_worker_lives():
    """The watchdog thread must not keep a finished run process alive until its worker dies."""
    done = child("import sys\nfrom trainer.worker import _die_with_parent\nsys.platform = 'darwin'\n"
                 "_die_with_parent()\nprint('finished')", {"TRAINER_PARENT_PID": str(os.getpid())}, timeout=20)
    assert done.returncode == 0 and done.stdout == "finished\n"


def test_a_failure_reaches_the_log_even_if_the_process_is_ended_at_once(tmp_path):
    """The watchdog ends the process with ``os._exit`` (no buffers flushed) when the worker dies; a log
    file is block-buffered (unless PYTHONUNBUFFERED is set, which this test clears)."""
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        code = subprocess.call([sys.executable, "-c", "import os\nfrom pathlib import Path\n"
                                "from trainer.worker import _fail\n"
                                f"_fail(Path({str(tmp_path)!r}), 'why')\nos._exit(1)"], stdout=handle,
                               stderr=subprocess.STDOUT, timeout=60,
                               env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    assert code == 1 and log.read_text() == "FAILED: why\n"


def test_the_run_process_is_the_modules_own_command(tmp_path):
    """``python -m trainer.worker TASK`` is what a Dask worker starts: it runs ``main`` and exits with its code."""
    run = tmp_path / "run"
    (run / "run.lock").mkdir(parents=True)  # fails at once, before any framework is imported
    (run / "task.json").write_text(json.dumps({"run_dir": str(run)}))
    done = subprocess.run([sys.executable, "-m", "trainer.worker", str(run / "task.json")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == FAILED_EXIT and done.stdout.startswith("FAILED: cannot take the run's lock")
    assert json.loads((run / "failure.json").read_text())["reason"].startswith("cannot take the run's lock")
