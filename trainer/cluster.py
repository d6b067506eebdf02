"""The grid on a Dask cluster (``--scheduler``): one task per run, one run per GPU or per core share.

The driver (this module, in the ``trainer`` process) plans and watches: it connects,
checks that every worker sees the same store and can write the output folder, decides
the threads of each run and whether runs ask for a GPU, submits one task per
unfinished run (:func:`trainer.worker.run_task`), shows one bar over the runs and
collects the results. It never trains.

Faults: a run whose process or worker is killed is retried by Dask up to
:data:`RETRIES` times (wherever Dask finds a free worker) and resumes from its last
epoch's checkpoint; a run that fails for a reason of its own fails once and is
reported; the others go on. A driver killed and started again with the same command
reuses the finished runs and resumes the others from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

from .experiment import GridError
from .grid import Job, finished_run, plan_line, planned_identity
from .progress import runs_left_estimate

__all__ = ["RETRIES", "ClusterRunner", "local_gpus", "run_slots"]

#: Retries of a run whose process or worker died (Dask ``retries`` and ``allowed-failures``).
RETRIES = 3
#: Seconds without a worker that can run the runs left before the driver says so
#: (``TRAINER_NO_WORKER_SECONDS`` overrides it).
NO_WORKER_SECONDS = 30.0


def local_gpus() -> list[str]:
    """The GPUs of this machine a local cluster can hand out: ``CUDA_VISIBLE_DEVICES``, else nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # CUDA reads the list up to its first invalid entry ("-1" hides every GPU)
        devices = []
        for entry in (d.strip() for d in visible.split(",")):
            if not entry or entry.startswith("-"):
                break
            devices.append(entry)
        return devices
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    # "GPU 0: NVIDIA H100 (UUID: ...)", each followed by its MIG devices' lines when it has some
    return [line.split(":", 1)[0].split()[1] for line in listed.splitlines() if re.match(r"GPU \d+:", line)]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _worker_view(store_path: str) -> dict:
    """On a worker: its host, cores, Keras backend, and the identity of the store at ``store_path``
    (or why not)."""
    import socket

    from phasefeat.io.store import StoreError, open_store

    from .experiment import keras_backend, store_identity

    view = {"host": socket.gethostname(), "cores": _cores(), "backend": keras_backend()}
    try:
        with open_store(store_path) as store:
            view["identity"] = store_identity(store)
    except (StoreError, OSError) as exc:
        view["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return view


def _worker_writes(folder: str, probe: str) -> str | None:
    """On a worker: None if it sees the driver's ``probe`` in ``folder`` and can write there, else why."""
    here = Path(folder)
    if not (here / probe).is_file():
        return f"does not see {folder} (the driver's folder): it needs a shared file system"
    mine = here / f"{probe}.{os.getpid()}"
    try:
        mine.write_text("")
        mine.unlink()
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror or exc}"
    return None


def run_slots(workers: dict, views: dict, gpus_per_run: int) -> tuple[int, int]:
    """How many runs the cluster runs at once, and the default threads per run.

    Parameters
    ----------
    workers : dict
        ``scheduler_info()["workers"]``: per address ``nthreads``, ``resources`` and ``host``.
    views : dict
        Per address ``host`` and ``cores`` as the worker itself reports them.
    gpus_per_run : {0, 1}

    Returns
    -------
    slots : int
        Runs at once: a worker's GPUs with ``gpus_per_run`` 1, else its Dask threads.
    threads : int
        The cores of a host divided by the runs it runs at once, the smallest over hosts, so
        that no host is oversubscribed and every run uses the same count (results depend on it).
    """
    slots, cores = {}, {}
    for address, w in workers.items():
        view = views.get(address, {})
        host = view.get("host", w.get("host"))
        per = int(w.get("resources", {}).get("GPU", 0)) if gpus_per_run else int(w.get("nthreads", 1))
        slots[host] = slots.get(host, 0) + per
        cores[host] = max(cores.get(host, 1), int(view.get("cores", 1)))
    threads = max(1, min((cores[h] // max(slots[h], 1) for h in slots), default=1))
    return sum(slots.values()), threads


class ClusterRunner:
    """Runs the runs of a grid as Dask tasks; use as a context manager.

    Parameters
    ----------
    scheduler : str
        ``local:N`` (N worker processes on this machine; with GPUs, one GPU each),
        ``tcp://HOST:PORT`` or a scheduler file (an existing cluster).
    threads_per_run : int, optional
        Compute threads of every run [default: the cores of a worker's host divided by
        the runs that host runs at once].
    gpus_per_run : {0, 1}, optional
        1: every run asks for ``resources={"GPU": 1}`` [default: 1 where the workers
        advertise a GPU resource, else 0].
    progress : bool
    echo : callable
        Prints the driver's lines.
    """

    def __init__(self, scheduler: str, *, threads_per_run: int | None = None, gpus_per_run: int | None = None,
                 progress: bool = True, echo=print):
        from phasefeat.io.distributed import DaskUnavailableError, parse_scheduler

        try:
            self.kind, self.value = parse_scheduler(scheduler)
        except DaskUnavailableError as exc:
            raise GridError(str(exc)) from None
        if gpus_per_run not in (None, 0, 1):
            raise GridError(f"--gpus-per-run takes 0 or 1, got {gpus_per_run}")
        self.scheduler, self.threads, self.gpus = scheduler, threads_per_run, gpus_per_run
        self.progress, self.echo = progress, echo
        self.client = self.cluster = None

    # -- connection --------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def _start_local(self, n: int):
        import dask
        from distributed import Client, Nanny, Scheduler, SpecCluster

        from phasefeat.io.distributed import start_local_cluster

        gpus = local_gpus() if self.gpus != 0 else []
        if self.gpus == 1 and len(gpus) < n:
            raise GridError(f"--gpus-per-run 1 with --scheduler local:{n} needs {n} GPUs; this machine shows "
                            f"{len(gpus)} (CUDA_VISIBLE_DEVICES or nvidia-smi)")
        on_gpus = len(gpus) >= n if self.gpus is None else self.gpus == 1
        workers = {}
        for k in range(n):
            # One GPU per worker; CPU workers see none, so n runs never share one device.
            env = {"CUDA_VISIBLE_DEVICES": gpus[k] if on_gpus else ""}
            workers[f"run-slot-{k}"] = {"cls": Nanny, "options": {
                "nthreads": 1, "env": env, "resources": {"GPU": 1} if on_gpus else {},
                "silence_logs": logging.ERROR}}
        def start():
            # As for `phasefeat convert`: leave glibc's malloc thresholds alone (docs/distributed.md).
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                                  "distributed.scheduler.allowed-failures": RETRIES}):
                cluster = SpecCluster(workers=workers, silence_logs=logging.ERROR, scheduler={
                    "cls": Scheduler, "options": {"dashboard_address": ":0"}})
            client = None
            try:
                client = Client(cluster)
                client.wait_for_workers(n, timeout=120)
            except BaseException:
                if client is not None:
                    client.close()
                cluster.close()
                raise
            return cluster, client

        self.cluster, self.client = start_local_cluster(start, f"local:{n}")

    def connect(self) -> None:
        """Start the local cluster or reach the scheduler; one line if it cannot."""
        from phasefeat.io.distributed import (
            DaskUnavailableError,
            connect,
            quiet_dask,
            require_distributed,
        )

        if self.client is not None:
            return
        try:
            require_distributed()
            quiet_dask()
            if self.kind == "local":
                self._start_local(self.value)
                return
            self.client = connect(self.scheduler)
        except DaskUnavailableError as exc:
            raise GridError(str(exc)) from None
        try:
            self.client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            self.close()
            raise GridError(f"no Dask worker joined the scheduler at {self.scheduler} within 60 s") from None

    # -- checks before any run -----------------------------------------------------------------------
    def prepare(self, store_path, store_id: dict) -> dict:
        """Connect; check that every worker sees this store with one Keras backend; choose threads
        and GPUs per run. Returns the identity the runs are planned with
        (:func:`trainer.grid.planned_identity`)."""
        from phasefeat.io.identity import describe_difference

        self.connect()
        store_path = str(Path(store_path).resolve())
        views = self.client.run(_worker_view, store_path)
        if not views:  # the workers that joined left before they answered
            raise GridError(f"no Dask worker is connected to {self.scheduler} any more; start one and run the same "
                            "command again")
        for address, view in sorted(views.items()):
            if "error" in view:
                raise GridError(f"worker {address} ({view['host']}) cannot open the store {store_path}: "
                                f"{view['error']}; every worker needs it at the same path")
            if view["identity"] != store_id:
                raise GridError(f"worker {address} ({view['host']}) sees another store at {store_path} "
                                f"than this machine ({describe_difference(store_id, view['identity'])}); every "
                                "worker needs the same file at the same path")
        backends = {view["backend"] for view in views.values()}
        if len(backends) > 1:
            named = ", ".join(f"{a}: {v['backend']}" for a, v in sorted(views.items()))
            raise GridError(f"the workers would train with different Keras backends ({named}); set "
                            "KERAS_BACKEND alike on every worker")
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        gpu_workers = [a for a, w in info.items() if w.get("resources", {}).get("GPU", 0) >= 1]
        if self.gpus == 1 and not gpu_workers:
            raise GridError("--gpus-per-run 1: no worker advertises a GPU resource; start one worker per GPU "
                            "with `--resources GPU=1` (docs/distributed.md)")
        self.gpus = (1 if gpu_workers else 0) if self.gpus is None else self.gpus
        self.slots, default = run_slots(info, views, self.gpus)
        self.threads = self.threads or default
        self.echo(f"Dask: {len(info)} worker(s), {self.slots} run(s) at once, {self.threads} thread(s) per run"
                  + (", one GPU per run" if self.gpus else "") + f"; dashboard {self.client.dashboard_link}")
        return planned_identity(store_id, self.threads, backends.pop())

    def check_out(self, out) -> None:
        """Every worker must see the output folder (a shared file system) and write in it."""
        probe = f".grid-probe-{uuid.uuid4().hex}"
        folder = Path(out).resolve()
        (folder / probe).write_text("")
        try:
            answers = self.client.run(_worker_writes, str(folder), probe)
        finally:
            (folder / probe).unlink(missing_ok=True)
        for address, problem in sorted(answers.items()):
            if problem:
                raise GridError(f"worker {address} {problem}")

    # -- the runs ---------------------------------------------------------------------------------------
    def run(self, store_path, jobs: list[Job], identity: dict, workers: int = 1, desc: str = "grid"):
        """Run every job; returns ``(results, failures)``, ``results`` aligned with ``jobs`` (None where
        a run failed) and ``failures`` as ``{"run", "reason"}`` dicts."""
        from distributed import as_completed
        from tqdm import tqdm

        from .worker import run_task

        store_path = str(Path(store_path).resolve())
        results: list[dict | None] = [finished_run(job, identity) for job in jobs]
        todo = [k for k, r in enumerate(results) if r is None]
        if self.progress:
            self.echo(plan_line(jobs, len(todo), desc) + f", {self.slots} at a time as Dask tasks")
        failures, running = [], set()
        schedule_path = Path(jobs[0].run_dir).parent.parent / "schedule.json" if jobs else None
        schedule = _read_schedule(schedule_path, self.echo)  # earlier sessions' entries are kept
        lock = threading.Lock()
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run",
                   disable=not self.progress)

        def show():
            bar.set_postfix_str(f"running {len(running)}, failed {len(failures)}")

        def on_event(event):
            _, msg = event
            with lock:
                (running.add if msg["event"] == "started" else running.discard)(msg["run"])
                show()

        self.client.subscribe_topic("trainer-grid", on_event)
        token, estimated = uuid.uuid4().hex[:8], False
        futures = {}
        for k in todo:
            job = jobs[k]
            spec = {"store": store_path, "run_dir": str(job.run_dir.resolve()), "config": dataclasses.asdict(job.config),
                    "split": job.split.to_json(), "identity": identity, "threads": self.threads,
                    "workers": workers}
            future = self.client.submit(run_task, spec, key=f"trainer-{job.run_dir.name}-{token}", pure=False,
                                        retries=RETRIES, resources={"GPU": 1} if self.gpus else None)
            futures[future] = k
        watching = threading.Event()
        watcher = threading.Thread(target=self._watch_workers, daemon=True,
                                   args=(watching, bar.write, lambda: bar.total - bar.n))
        watcher.start()
        try:
            for future in as_completed(futures):
                k = futures[future]
                name = jobs[k].run_dir.name
                try:
                    outcome = future.result()
                except Exception as exc:  # retries exhausted: a worker lost again and again, or a defect
                    outcome = {"run": name, "status": "failed", "reason": str(exc).splitlines()[0]
                               if str(exc) else type(exc).__name__}
                with lock:
                    running.discard(name)
                    if outcome["status"] == "done":
                        results[k] = outcome.pop("result")
                        left = bar.total - bar.n - 1
                        if not estimated and left and self.progress:
                            bar.write(runs_left_estimate(name, outcome["finished"] - outcome["started"],
                                                         results[k]["epochs_run"], left, self.slots))
                            estimated = True
                    else:
                        failures.append({"run": name, "reason": outcome["reason"]})
                        bar.write(f"{name} failed: {outcome['reason']}")
                    schedule[name] = outcome
                    bar.update(1)
                    show()
                _write_schedule(schedule_path, schedule)
        finally:
            watching.set()
            watcher.join()
            bar.close()
            self.client.unsubscribe_topic("trainer-grid")
        return results, failures

    def _usable_workers(self) -> int:
        """Workers that can run a run now (with a GPU resource where runs ask for one)."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return sum(1 for w in workers if not self.gpus or w.get("resources", {}).get("GPU", 0) >= 1)

    def _watch_workers(self, stop: threading.Event, say, runs_left) -> None:
        """Say in one line when no worker has been able to run the runs left for a while (an external
        cluster whose workers died waits for new ones without end), and again when one joins."""
        import time

        try:
            quiet = float(os.environ.get("TRAINER_NO_WORKER_SECONDS", NO_WORKER_SECONDS))
        except ValueError:
            quiet = NO_WORKER_SECONDS
        gone_since, said = None, False
        while not stop.wait(min(2.0, max(quiet / 4, 0.1))):
            try:
                usable = self._usable_workers()
            except Exception:  # the scheduler itself is gone or busy: Dask's own errors end the grid
                continue
            if usable:
                if said:
                    say(f"{usable} Dask worker(s) can run the runs again: the grid goes on")
                gone_since, said = None, False
                continue
            gone_since = gone_since or time.monotonic()
            if not said and time.monotonic() - gone_since >= quiet:
                kind = "with a GPU resource " if self.gpus else ""
                start = f"dask worker {self.client.scheduler.address}" + (" --resources GPU=1" if self.gpus else "")
                say(f"no Dask worker {kind}has been connected for {quiet:g} s and {runs_left()} run(s) wait: start "
                    f"one ({start}) and the grid goes on, or press Ctrl-C (finished runs are kept; the same "
                    "command resumes the others)")
                said = True


def _read_schedule(path: Path | None, echo=print) -> dict:
    """``OUT/schedule.json`` as written by earlier sessions (empty if none). It is only a log: a damaged
    one is set aside as ``schedule.json.damaged`` with one line, and a new one begins."""
    if path is None or not path.exists():
        return {}
    try:
        schedule = json.loads(path.read_text())
    except (OSError, ValueError):
        schedule = None
    if isinstance(schedule, dict) and all(isinstance(v, dict) for v in schedule.values()):
        return schedule
    aside = path.with_name(path.name + ".damaged")
    path.replace(aside)
    echo(f"{path} was damaged (not a schedule); set aside as {aside.name}, a new one begins")
    return {}


def _write_schedule(path: Path | None, schedule: dict) -> None:
    """``OUT/schedule.json``: where and when each run ran, and how often it was tried."""
    if path is None:
        return
    from phasefeat.io._atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(schedule, indent=1))
