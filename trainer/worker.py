"""One run of a grid as a unit of work: a plain function of its spec that a scheduler can move.

:func:`run_task` is what a Dask worker executes. It starts the run in a process of its
own (``python -m trainer.worker TASK.json``) so that

* the thread count is set before the deep-learning framework starts (TensorFlow on a
  CPU is bit-reproducible only at a fixed thread count), whatever ran on that worker
  before;
* a GPU worker's ``CUDA_VISIBLE_DEVICES`` reaches the run, and the framework's memory
  is returned when the run ends;
* an out-of-memory kill most likely takes the run's process (the largest), not the worker.

The run's process dies with the worker (``PR_SET_PDEATHSIG`` on Linux, a watchdog
elsewhere), and only one process trains a run folder at a time (a lock file), so a
retried run never races a stale one. Everything a run writes lands atomically in its
folder; the run resumes from its last epoch's checkpoint (:mod:`trainer.checkpoint`).

Outcomes: the finished result, or ``{"status": "failed", "reason": ...}`` for a run that
failed for a reason of its own (a diverging loss, a damaged checkpoint): retrying it
would fail again, so it is not retried. A run process that was killed (by a signal,
or out of memory) raises :class:`RunInterrupted`, which the scheduler retries.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["run_task", "RunInterrupted", "thread_environment", "FAILED_EXIT", "RETRY_EXIT"]

#: Exit status of a run process whose run failed for a reason of its own (``failure.json`` says why).
FAILED_EXIT = 3
#: Exit status of a run process that ran out of memory: worth a retry elsewhere.
RETRY_EXIT = 4
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                     "TF_NUM_INTEROP_THREADS", "NUMBA_NUM_THREADS")


class RunInterrupted(RuntimeError):
    """The run's process was killed before it finished (retried by the scheduler)."""


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that pin a run's compute threads to ``threads``."""
    return {name: str(threads) for name in _THREAD_VARIABLES}


def _where() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return socket.gethostname()


def _event(kind: str, run: str) -> None:
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        get_worker().log_event("trainer-grid", {"event": kind, "run": run})


def run_task(spec: dict) -> dict:
    """Run (or reuse) one run in a process of its own; returns its outcome.

    Parameters
    ----------
    spec : dict
        ``store``, ``run_dir`` (absolute paths every worker sees), ``config``
        (:class:`trainer.experiment.RunConfig` as a dict), ``split`` (its JSON),
        ``identity`` (what the driver planned the runs with: the store's identity, the threads
        per run and the Keras backend; :func:`trainer.grid.planned_identity`), ``threads``
        (the same count, set in the run's environment) and ``workers`` (reader threads).

    Returns
    -------
    dict
        ``status`` (``"done"`` or ``"failed"``), ``run``, ``result`` or ``reason``,
        ``worker``, ``started`` and ``finished`` (Unix times) and ``attempt``.

    Raises
    ------
    RunInterrupted
        The run's process was killed (signal, out of memory); the scheduler retries.
    """
    from phasefeat.io._atomic import atomic_path, make_dirs

    run_dir = Path(spec["run_dir"])
    name = run_dir.name
    make_dirs(run_dir)
    task = run_dir / "task.json"
    with atomic_path(task) as tmp:
        Path(tmp).write_text(json.dumps(spec))
    (run_dir / "failure.json").unlink(missing_ok=True)
    env = {**os.environ, **thread_environment(spec["threads"]), "TRAINER_PARENT_PID": str(os.getpid())}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    worker, started = _where(), time.time()
    log_path = run_dir / "log.txt"
    attempt = 1 + (log_path.read_text(errors="replace").count("== attempt") if log_path.exists() else 0)
    _event("started", name)
    with open(log_path, "a") as log:
        log.write(f"== attempt {attempt} on {worker} (pid {os.getpid()}), {time.strftime('%Y-%m-%d %H:%M:%S')}, "
                  f"{spec['threads']} thread(s), CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}\n")
        log.flush()
        code = subprocess.call([sys.executable, "-m", "trainer.worker", str(task)], stdout=log,
                               stderr=subprocess.STDOUT, env=env)
    _event("finished", name)
    outcome = {"run": name, "worker": worker, "started": started, "finished": time.time(), "attempt": attempt}
    if code == 0:
        return {**outcome, "status": "done", "result": json.loads((run_dir / "result.json").read_text())}
    if code == FAILED_EXIT:
        reason = json.loads((run_dir / "failure.json").read_text())["reason"]
        return {**outcome, "status": "failed", "reason": reason}
    if code == RETRY_EXIT:
        why = "out of memory"
    elif code < 0 and -code in signal.valid_signals():
        why = f"killed by {signal.Signals(-code).name}; a signal usually means the system ran out of memory"
    else:
        why = f"exit status {code}"
    raise RunInterrupted(f"{name}: the run's process ended ({why}); log: {log_path}")


def _die_with_parent() -> None:
    """End this process when the worker that started it dies."""
    parent = int(os.environ.get("TRAINER_PARENT_PID", "0"))
    if not parent:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)

    def watch():  # for systems without PR_SET_PDEATHSIG
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _take_run_lock(run_dir: Path):
    """Hold ``run_dir/run.lock`` until the returned file is closed: a run folder is trained by
    one process at a time."""
    import fcntl

    handle = open(run_dir / "run.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for a stale process of an earlier attempt
    except OSError:
        handle.close()
        raise
    return handle


def _pin_threads(threads: int) -> None:
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def _fail(run_dir: Path, reason: str) -> int:
    from phasefeat.io._atomic import atomic_path

    with atomic_path(run_dir / "failure.json") as tmp:
        Path(tmp).write_text(json.dumps({"reason": reason}))
    print(f"FAILED: {reason}", flush=True)
    return FAILED_EXIT


def main(task_path: str) -> int:
    """The run's process: train (or reuse) the run described by ``task_path``."""
    import traceback

    _die_with_parent()
    spec = json.loads(Path(task_path).read_text())
    run_dir = Path(spec["run_dir"])
    try:
        lock = _take_run_lock(run_dir)
    except OSError as exc:  # e.g. a directory named run.lock: retrying elsewhere fails alike
        return _fail(run_dir, f"cannot take the run's lock {run_dir / 'run.lock'} ({exc.strerror or exc}); "
                              "delete it and run the same command again")
    with lock:
        from .experiment import GridError, RunConfig
        from .grid import run_or_reuse
        from .splits import Split

        try:
            _pin_threads(spec["threads"])
            cfg = RunConfig(**spec["config"])  # a store that differs here fails in train_run
            result = run_or_reuse(spec["store"], cfg, run_dir, Split.from_json(spec["split"]),
                                  spec["identity"], progress=False, workers=spec["workers"])
            print(f"done: test loss {result['test_loss']:.4f}, weights {result['weights_sha256'][:12]}")
        except MemoryError:
            traceback.print_exc()
            return RETRY_EXIT
        except (GridError, ValueError, OSError) as exc:
            return _fail(run_dir, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # a defect: the log has the traceback, the report its line
            traceback.print_exc()
            return _fail(run_dir, f"{type(exc).__name__}: {exc}".splitlines()[0])
    return 0


if __name__ == "__main__":  # pragma: no cover - the run's process
    sys.exit(main(sys.argv[1]))
