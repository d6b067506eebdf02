"""The grid's Dask driver, in process: checks before any run, what it submits, what it reports and
records, and its watch over the workers (:mod:`trainer.cluster`).

A stand-in client answers as a cluster would (its ``run`` calls the real worker-side functions
here); the grid tests (``test_grid.py``) drive real clusters.
"""

import dataclasses
import json
import os
import stat
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from datasets import tiny_store

from trainer import cluster
from trainer.cluster import RETRIES, ClusterRunner, local_gpus, run_slots
from trainer.experiment import GridError, RunConfig, store_identity
from trainer.grid import Job
from trainer.splits import Split

distributed = pytest.importorskip("distributed")

SPLIT = Split(np.array([0, 1]), np.array([2]), np.array([3]), 0, 0.3, 0.3, True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory.mktemp("cluster") / "s.h5", n=30)


@pytest.fixture(scope="module")
def store_id(store):
    from phasefeat.io.store import open_store

    with open_store(store) as s:
        return store_identity(s)


@pytest.fixture(autouse=True)
def backend_from_environment(monkeypatch):
    """A worker's backend from ``KERAS_BACKEND`` alone (once Keras is loaded in a process, the loaded one)."""
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setattr("trainer.experiment.keras_backend", lambda: os.environ["KERAS_BACKEND"])


class FakeFuture:
    def __init__(self, client, spec, outcome):
        self.client, self.spec, self.outcome = client, spec, outcome

    def result(self):
        name = Path(self.spec["run_dir"]).name
        self.client.handler(("t", {"event": "started", "run": name}))
        outcome = self.outcome(self.spec)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class FakeClient:
    """Answers as a Dask client of ``workers`` would; ``run`` calls the function here, once per worker,
    and merges ``views[address]`` into its answer."""

    def __init__(self, workers, views=None, outcome=None):
        self.workers, self.views, self.outcome = workers, views or {}, outcome or done
        self.runs, self.submitted, self.topics, self.closed = [], [], [], 0
        self.dashboard_link = "http://scheduler:8787/status"
        self.scheduler = types.SimpleNamespace(address="tcp://10.0.0.1:8786")
        self.handler = None

    def run(self, fn, *args):
        self.runs.append((fn.__name__, args))
        answers = {}
        for address in self.workers:
            answer = fn(*args)
            extra = self.views.get(address, {})
            answers[address] = {**answer, **extra} if isinstance(answer, dict) else extra.get("writes", answer)
        return answers

    def scheduler_info(self, n_workers=None):
        assert n_workers == -1  # every worker, not the first few
        return {"workers": self.workers}

    def submit(self, fn, spec, **kwargs):
        self.submitted.append((fn, spec, kwargs))
        return FakeFuture(self, spec, self.outcome)

    def subscribe_topic(self, topic, handler):
        self.topics.append(("subscribe", topic))
        self.handler = handler

    def unsubscribe_topic(self, topic):
        self.topics.append(("unsubscribe", topic))

    def close(self):
        self.closed += 1


def done(spec, epochs_run=2):
    now = time.time()
    return {"status": "done", "run": Path(spec["run_dir"]).name, "result": {"epochs_run": epochs_run, "n": 1},
            "worker": "tcp://w", "started": now - 5, "finished": now, "attempt": 1}


def workers(n=2, host="a", nthreads=1, gpus=0):
    return {f"tcp://w{k}": {"host": host, "nthreads": nthreads, "resources": {"GPU": gpus} if gpus else {}}
            for k in range(n)}


def runner_with(client, progress=False, **kwargs):
    lines = []
    runner = ClusterRunner("tcp://10.0.0.1:8786", progress=progress, echo=lines.append, **kwargs)
    runner.client = client
    return runner, lines


@pytest.fixture(autouse=True)
def in_order(monkeypatch):
    """``as_completed`` over the stand-in's futures: in the order submitted."""
    monkeypatch.setattr(distributed, "as_completed", lambda futures: list(futures))


# --- GPUs and slots ----------------------------------------------------------------------------------

def test_local_gpus_come_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0, 2")
    assert local_gpus() == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # CUDA's way of hiding every GPU
    assert local_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")  # CUDA stops at the first invalid entry
    assert local_gpus() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1,0")
    assert local_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,,4")
    assert local_gpus() == ["3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5e7a,MIG-1")  # UUIDs are devices too
    assert local_gpus() == ["GPU-5e7a", "MIG-1"]


def fake_smi(tmp_path, monkeypatch, script):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{script}\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cluster.shutil, "which", lambda name: str(smi) if name == "nvidia-smi" else None)


def test_without_cuda_visible_devices_the_gpus_nvidia_smi_lists_count(tmp_path, monkeypatch):
    fake_smi(tmp_path, monkeypatch, "echo 'GPU 0: NVIDIA H100 (UUID: GPU-1)'; echo '  MIG 1g.10gb Device 0'; "
                                    "echo 'GPU 1: NVIDIA H100 (UUID: GPU-2)'")
    assert local_gpus() == ["0", "1"]


def test_an_nvidia_smi_that_fails_or_hangs_means_no_gpus(tmp_path, monkeypatch):
    fake_smi(tmp_path, monkeypatch, "exit 9")
    assert local_gpus() == []

    def hangs(*args, **kwargs):
        raise cluster.subprocess.TimeoutExpired(args[0], 20)

    monkeypatch.setattr(cluster.subprocess, "run", hangs)
    assert local_gpus() == []
    monkeypatch.setattr(cluster.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "x")))
    assert local_gpus() == []
    monkeypatch.setattr(cluster.shutil, "which", lambda name: None)
    assert local_gpus() == []


def test_run_slots_share_each_hosts_cores():
    one_host = {f"w{k}": {"nthreads": 1, "resources": {}, "host": "a"} for k in range(2)}
    views = {f"w{k}": {"host": "a", "cores": 2} for k in range(2)}
    assert run_slots(one_host, views, 0) == (2, 1)  # local:2 on 2 cores
    big = {"b0": {"nthreads": 4, "resources": {}, "host": "b"}}
    assert run_slots(big, {"b0": {"host": "b", "cores": 16}}, 0) == (4, 4)
    gpus = {f"g{k}": {"nthreads": 2, "resources": {"GPU": 1}, "host": "c"} for k in range(8)}
    gviews = {f"g{k}": {"host": "c", "cores": 64} for k in range(8)}
    assert run_slots(gpus, gviews, 1) == (8, 8)  # 8 GPUs: one run each, 64 / 8 threads
    assert run_slots(gpus, gviews, 0) == (16, 4)  # the same workers without the GPU resource
    mixed = {**one_host, **big}
    assert run_slots(mixed, {**views, "b0": {"host": "b", "cores": 16}}, 0) == (6, 1)  # the smallest share


def test_run_slots_take_the_largest_core_count_a_host_reports_and_never_zero_threads():
    ws = {"w0": {"nthreads": 3, "host": "a"}, "w1": {"nthreads": 3, "host": "a"}}
    assert run_slots(ws, {"w0": {"host": "a", "cores": 2}, "w1": {"host": "a", "cores": 12}}, 0) == (6, 2)
    assert run_slots(ws, {"w0": {"host": "a", "cores": 2}, "w1": {"host": "a", "cores": 2}}, 0) == (6, 1)
    # a worker that has not answered: the scheduler's host, one core, one thread
    assert run_slots({"w0": {"host": "z"}}, {}, 0) == (1, 1)
    # a GPU worker without the resource runs nothing with one GPU per run
    assert run_slots({"w0": {"nthreads": 2, "host": "a", "resources": {}}}, {"w0": {"cores": 8}}, 1) == (0, 8)
    assert run_slots({}, {}, 0) == (0, 1)


# --- options and connection --------------------------------------------------------------------------

@pytest.mark.parametrize(("scheduler", "message"), [
    ("bogus", "--scheduler takes local:N, tcp://HOST:PORT or a scheduler file"),
    ("local:0", "--scheduler local:N needs N >= 1"), ("local:x", "needs a number of workers, got 'local:x'"),
])
def test_a_scheduler_that_names_nothing_is_one_line(scheduler, message):
    with pytest.raises(GridError, match=message):
        ClusterRunner(scheduler)


@pytest.mark.parametrize("gpus", [2, -1, "1"])
def test_gpus_per_run_takes_zero_or_one(gpus):
    with pytest.raises(GridError, match=rf"^--gpus-per-run takes 0 or 1, got {gpus}$"):
        ClusterRunner("local:1", gpus_per_run=gpus)


@pytest.mark.parametrize("gpus", [None, 0, 1])
def test_the_runner_keeps_its_options(gpus):
    runner = ClusterRunner("local:2", threads_per_run=3, gpus_per_run=gpus, progress=False)
    assert (runner.kind, runner.value, runner.threads, runner.gpus, runner.progress) == ("local", 2, 3, gpus, False)
    assert runner.client is None and runner.cluster is None and runner.echo is print


def test_closing_closes_client_and_cluster_once():
    client, local = FakeClient(workers()), FakeClient(workers())
    with ClusterRunner("local:1") as runner:
        runner.client, runner.cluster = client, local
    assert (client.closed, local.closed) == (1, 1) and runner.client is None and runner.cluster is None
    runner.close()
    assert (client.closed, local.closed) == (1, 1)


def test_an_existing_cluster_is_reached_once(monkeypatch):
    from phasefeat.io import distributed as io_distributed

    reached = []
    client = FakeClient(workers())
    client.wait_for_workers = lambda n, timeout: reached.append((n, timeout))
    monkeypatch.setattr(io_distributed, "connect", lambda scheduler: reached.append(scheduler) or client)
    runner = ClusterRunner("tcp://10.0.0.1:8786")
    runner.connect()
    runner.connect()
    assert runner.client is client and reached == ["tcp://10.0.0.1:8786", (1, 60)]


def test_a_scheduler_without_workers_is_one_line_and_closed(monkeypatch):
    from phasefeat.io import distributed as io_distributed

    client = FakeClient({})

    def never(n, timeout):
        raise TimeoutError

    client.wait_for_workers = never
    monkeypatch.setattr(io_distributed, "connect", lambda scheduler: client)
    runner = ClusterRunner("tcp://10.0.0.1:8786")
    with pytest.raises(GridError, match=r"^no Dask worker joined the scheduler at tcp://10.0.0.1:8786 within 60 s$"):
        runner.connect()
    assert client.closed == 1 and runner.client is None


def test_a_scheduler_that_cannot_be_reached_is_one_line(monkeypatch):
    from phasefeat.io import distributed as io_distributed

    def unreachable(scheduler):
        raise io_distributed.DaskUnavailableError("cannot reach the Dask scheduler at tcp://x:1: refused")

    monkeypatch.setattr(io_distributed, "connect", unreachable)
    with pytest.raises(GridError, match="^cannot reach the Dask scheduler at tcp://x:1: refused$"):
        ClusterRunner("tcp://x:1").connect()


class FakeSpecCluster:
    made = []

    def __init__(self, workers, silence_logs, scheduler):
        import dask

        self.workers, self.scheduler = workers, scheduler
        self.config = {key: dask.config.get(key, None) for key in (
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_", "distributed.scheduler.allowed-failures")}
        self.closed = 0
        FakeSpecCluster.made.append(self)

    def close(self):
        self.closed += 1


@pytest.fixture
def local_start(monkeypatch):
    """A local cluster's start without processes: the specs it would start, and its client."""
    FakeSpecCluster.made = []
    clients = []

    def client(cluster):
        made = FakeClient(cluster.workers)
        made.wait_for_workers = lambda n, timeout: made.waited.append((n, timeout))
        made.waited = []
        clients.append(made)
        return made

    monkeypatch.setattr(distributed, "SpecCluster", FakeSpecCluster)
    monkeypatch.setattr(distributed, "Client", client)
    return clients


@pytest.mark.parametrize(("visible", "gpus", "on_gpus"), [("", None, False), ("0,1,2", None, True),
                                                          ("0,1", None, True), ("0", None, False),
                                                          ("0,1", 0, False)])
def test_a_local_cluster_gives_each_worker_one_gpu_or_none(local_start, monkeypatch, visible, gpus, on_gpus):
    from distributed import Nanny, Scheduler

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    runner = ClusterRunner("local:2", gpus_per_run=gpus)
    runner.connect()
    made = FakeSpecCluster.made[0]
    assert runner.cluster is made and runner.client is local_start[0]
    assert local_start[0].waited == [(2, 120)]
    assert sorted(made.workers) == ["run-slot-0", "run-slot-1"]
    for k in range(2):
        spec = made.workers[f"run-slot-{k}"]
        assert spec["cls"] is Nanny
        options = spec["options"]
        assert options["nthreads"] == 1 and options["silence_logs"] == 40
        assert options["env"] == {"CUDA_VISIBLE_DEVICES": visible.split(",")[k] if on_gpus else ""}
        assert options["resources"] == ({"GPU": 1} if on_gpus else {})
    assert made.scheduler == {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    assert made.config == {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                           "distributed.scheduler.allowed-failures": RETRIES}


def test_a_local_cluster_with_a_gpu_per_run_needs_as_many_gpus(local_start, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(GridError, match=r"^--gpus-per-run 1 with --scheduler local:2 needs 2 GPUs; this machine "
                                        r"shows 1 \(CUDA_VISIBLE_DEVICES or nvidia-smi\)$"):
        ClusterRunner("local:2", gpus_per_run=1).connect()
    assert FakeSpecCluster.made == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    runner = ClusterRunner("local:2", gpus_per_run=1)
    runner.connect()
    assert FakeSpecCluster.made[0].workers["run-slot-1"]["options"]["resources"] == {"GPU": 1}


def test_a_local_cluster_whose_workers_never_come_is_closed_and_tried_again(local_start, monkeypatch):
    from phasefeat.io import distributed as io_distributed

    def client(cluster):
        made = FakeClient(cluster.workers)

        def never(n, timeout):
            raise TimeoutError("no workers")

        made.wait_for_workers = never
        local_start.append(made)
        return made

    monkeypatch.setattr(distributed, "Client", client)
    with pytest.raises(GridError, match=rf"did not start in {io_distributed.LOCAL_START_TRIES} tries \(no workers\)"):
        ClusterRunner("local:1").connect()
    assert len(FakeSpecCluster.made) == io_distributed.LOCAL_START_TRIES
    assert all(c.closed == 1 for c in FakeSpecCluster.made) and all(c.closed == 1 for c in local_start)


# --- checks before any run ---------------------------------------------------------------------------

def test_prepare_plans_with_the_workers_cores_and_backend(store, store_id, monkeypatch):
    monkeypatch.setattr(cluster, "_cores", lambda: 4)
    client = FakeClient(workers(2))
    runner, lines = runner_with(client)
    assert runner.prepare(Path(os.path.relpath(store)), store_id) == {"store": store_id, "threads": 2,
                                                                      "backend": "tensorflow"}
    assert client.runs == [("_worker_view", (str(store.resolve()),))]  # the path every worker sees
    assert (runner.slots, runner.threads, runner.gpus) == (2, 2, 0)
    assert lines == ["Dask: 2 worker(s), 2 run(s) at once, 2 thread(s) per run; dashboard "
                     "http://scheduler:8787/status"]


def test_threads_per_run_given_are_kept(store, store_id, monkeypatch):
    monkeypatch.setattr(cluster, "_cores", lambda: 4)
    runner, lines = runner_with(FakeClient(workers(2)), threads_per_run=3)
    assert runner.prepare(store, store_id)["threads"] == 3
    assert "3 thread(s) per run" in lines[0]


def test_workers_that_advertise_a_gpu_get_one_run_each(store, store_id, monkeypatch):
    monkeypatch.setattr(cluster, "_cores", lambda: 16)
    ws = {**workers(2, nthreads=4, gpus=1), "tcp://cpu": {"host": "a", "nthreads": 4, "resources": {"GPU": 0.5}}}
    runner, lines = runner_with(FakeClient(ws))
    runner.prepare(store, store_id)
    assert (runner.gpus, runner.slots, runner.threads) == (1, 2, 8)
    assert lines[0] == ("Dask: 3 worker(s), 2 run(s) at once, 8 thread(s) per run, one GPU per run; dashboard "
                        "http://scheduler:8787/status")
    runner, _ = runner_with(FakeClient(ws), gpus_per_run=0)
    runner.prepare(store, store_id)
    assert (runner.gpus, runner.slots) == (0, 12)


def test_a_worker_advertising_two_gpus_makes_runs_ask_for_one(store, store_id, monkeypatch):
    monkeypatch.setattr(cluster, "_cores", lambda: 16)
    runner, _ = runner_with(FakeClient({"tcp://w0": {"host": "a", "nthreads": 2, "resources": {"GPU": 2}}}))
    runner.prepare(store, store_id)
    assert (runner.gpus, runner.slots, runner.threads) == (1, 2, 8)


def test_gpus_per_run_without_gpu_workers_is_one_line(store, store_id):
    runner, _ = runner_with(FakeClient(workers(1, gpus=0)), gpus_per_run=1)
    with pytest.raises(GridError, match=r"^--gpus-per-run 1: no worker advertises a GPU resource; start one worker "
                                        r"per GPU with `--resources GPU=1` \(docs/distributed.md\)$"):
        runner.prepare(store, store_id)


def test_a_worker_that_cannot_open_the_store_is_named_first_in_address_order(store, store_id):
    views = {"tcp://w1": {"error": "no such file", "host": "h1"}, "tcp://w0": {"error": "damaged", "host": "h0"}}
    runner, _ = runner_with(FakeClient(workers(2), views))
    with pytest.raises(GridError) as raised:
        runner.prepare(store, store_id)
    assert str(raised.value) == (f"worker tcp://w0 (h0) cannot open the store {store.resolve()}: damaged; every "
                                 "worker needs it at the same path")


def test_a_worker_that_sees_another_store_is_refused_saying_how_it_differs(store, store_id):
    other = {**store_id, "samples": -1}
    runner, _ = runner_with(FakeClient(workers(2), {"tcp://w1": {"identity": other, "host": "h1"}}))
    with pytest.raises(GridError, match=rf"^worker tcp://w1 \(h1\) sees another store at {store.resolve()} than "
                                        r"this machine \(.*samples.*\); every worker needs the same file at the "
                                        "same path$"):
        runner.prepare(store, store_id)


def test_workers_of_different_backends_are_refused(store, store_id):
    runner, _ = runner_with(FakeClient(workers(3), {"tcp://w2": {"backend": "torch"}}))
    with pytest.raises(GridError, match=r"^the workers would train with different Keras backends \(tcp://w0: "
                                        r"tensorflow, tcp://w1: tensorflow, tcp://w2: torch\); set KERAS_BACKEND "
                                        "alike on every worker$"):
        runner.prepare(store, store_id)


def test_the_workers_backend_is_the_grids(store, store_id):
    runner, _ = runner_with(FakeClient(workers(2), {a: {"backend": "jax"} for a in workers(2)}))
    assert runner.prepare(store, store_id)["backend"] == "jax"


def test_a_worker_reports_its_host_cores_backend_and_store(store, store_id, monkeypatch):
    import socket

    monkeypatch.setattr(cluster, "_cores", lambda: 7)
    assert cluster._worker_view(str(store)) == {"host": socket.gethostname(), "cores": 7, "backend": "tensorflow",
                                                "identity": store_id}


def test_a_worker_that_cannot_open_the_store_says_why_in_one_line(tmp_path, monkeypatch):
    view = cluster._worker_view(str(tmp_path / "missing.h5"))
    assert "identity" not in view and "\n" not in view["error"] and "missing.h5" in view["error"]
    from phasefeat.io import store as store_module

    def empty(path):
        raise OSError()

    monkeypatch.setattr(store_module, "open_store", empty)
    assert cluster._worker_view("x.h5")["error"] == "OSError"

    def two_lines(path):
        raise store_module.StoreError("first line\nsecond line")

    monkeypatch.setattr(store_module, "open_store", two_lines)
    assert cluster._worker_view("x.h5")["error"] == "first line"


def test_cores_are_the_ones_this_process_may_use(monkeypatch):
    assert cluster._cores() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert cluster._cores() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert cluster._cores() == 1


def test_a_worker_writes_a_probe_beside_the_drivers_and_removes_it(tmp_path):
    (tmp_path / "probe").write_text("")
    assert cluster._worker_writes(str(tmp_path), "probe") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe"]
    assert cluster._worker_writes(str(tmp_path), "other") == (f"does not see {tmp_path} (the driver's folder): it "
                                                              "needs a shared file system")


def test_a_worker_that_cannot_write_says_why(tmp_path, monkeypatch):
    (tmp_path / "probe").write_text("")

    def refuse(self, text):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)
    assert cluster._worker_writes(str(tmp_path), "probe") == f"cannot write in {tmp_path}: Permission denied"
    monkeypatch.setattr(Path, "write_text", lambda self, text: (_ for _ in ()).throw(OSError("odd")))
    assert cluster._worker_writes(str(tmp_path), "probe") == f"cannot write in {tmp_path}: odd"


def test_check_out_asks_every_worker_and_leaves_no_probe(tmp_path):
    client = FakeClient(workers(2))
    runner, _ = runner_with(client)
    runner.check_out(tmp_path / "." / "out" / "..")  # any spelling of the folder
    (name, (folder, probe)), = client.runs
    assert name == "_worker_writes" and folder == str(tmp_path) and probe.startswith(".grid-probe-")
    assert list(tmp_path.iterdir()) == []


def test_check_out_names_the_first_worker_that_cannot_write(tmp_path):
    views = {"tcp://w1": {"writes": "cannot write in x: read-only"}, "tcp://w0": {"writes": "does not see x"}}
    runner, _ = runner_with(FakeClient(workers(2), views))
    with pytest.raises(GridError, match="^worker tcp://w0 does not see x$"):
        runner.check_out(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_check_out_removes_its_probe_when_the_cluster_fails(tmp_path):
    client = FakeClient(workers(1))

    def lost(*args):
        raise OSError("scheduler lost")

    client.run = lost
    runner, _ = runner_with(client)
    with pytest.raises(OSError, match="scheduler lost"):
        runner.check_out(tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- the runs ------------------------------------------------------------------------------------------

def jobs_in(out, names=("enh-cce-r0", "enh-scce-r0", "cxr-cce-r0")):
    return [Job(RunConfig(epochs=3, input=n.split("-")[0], loss=n.split("-")[1]), out / "runs" / n, SPLIT)
            for n in names]


IDENTITY = {"store": {"digest": "x"}, "threads": 2, "backend": "tensorflow"}


def finish(job):
    job.run_dir.mkdir(parents=True)
    result = {"config_digest": job.config.digest(), "store_identity": IDENTITY["store"], "threads": 2,
              "backend": "tensorflow", "epochs_run": 3}
    (job.run_dir / "result.json").write_text(json.dumps(result))
    return result


def ready(client, slots=2, threads=2, gpus=0, progress=False):
    runner, lines = runner_with(client, progress=progress)
    runner.slots, runner.threads, runner.gpus = slots, threads, gpus
    return runner, lines


def test_each_unfinished_run_is_one_retried_task(tmp_path, store):
    from trainer.worker import run_task

    client = FakeClient(workers(2))
    runner, _ = ready(client)
    jobs = jobs_in(tmp_path)
    reused = finish(jobs[1])
    results, failures = runner.run(os.path.relpath(store), jobs, IDENTITY, workers=3)
    assert failures == []
    assert results == [{"epochs_run": 2, "n": 1}, reused, {"epochs_run": 2, "n": 1}]
    assert [Path(s["run_dir"]).name for _, s, _ in client.submitted] == ["enh-cce-r0", "cxr-cce-r0"]
    fn, spec, kwargs = client.submitted[0]
    assert fn is run_task
    assert spec == {"store": str(store.resolve()), "run_dir": str(jobs[0].run_dir.resolve()),
                    "config": dataclasses.asdict(jobs[0].config),
                    "split": SPLIT.to_json(), "identity": IDENTITY, "threads": 2, "workers": 3}
    assert kwargs["pure"] is False and kwargs["retries"] == RETRIES == 3 and kwargs["resources"] is None
    keys = [k["key"] for _, _, k in client.submitted]
    token = keys[0].rsplit("-", 1)[1]
    assert keys == [f"trainer-enh-cce-r0-{token}", f"trainer-cxr-cce-r0-{token}"] and len(token) == 8
    assert client.topics == [("subscribe", "trainer-grid"), ("unsubscribe", "trainer-grid")]


def test_runs_on_gpus_ask_for_one_each(tmp_path):
    client = FakeClient(workers(1, gpus=1))
    runner, _ = ready(client, gpus=1)
    runner.run("s.h5", jobs_in(tmp_path)[:1], IDENTITY)
    assert client.submitted[0][2]["resources"] == {"GPU": 1}


def test_a_run_relative_to_the_driver_is_given_to_workers_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = FakeClient(workers(1))
    runner, _ = ready(client)
    runner.run("s.h5", jobs_in(Path("out"))[:1], IDENTITY)
    assert client.submitted[0][1]["run_dir"] == str(tmp_path / "out" / "runs" / "enh-cce-r0")
    assert client.submitted[0][1]["store"] == str(tmp_path / "s.h5")


def test_failed_runs_are_reported_and_the_others_finish(tmp_path, capsys):
    def outcome(spec):
        name = Path(spec["run_dir"]).name
        if name == "enh-cce-r0":
            return {**done(spec), "status": "failed", "reason": "the loss diverged"}
        if name == "enh-scce-r0":
            return RuntimeError("enh-scce-r0: the run's process ended (killed by SIGKILL)\nmore")
        if name == "cxr-scce-r0":
            return KeyError()
        return done(spec)

    runner, _ = ready(FakeClient(workers(2), outcome=outcome))
    jobs = jobs_in(tmp_path, ("enh-cce-r0", "enh-scce-r0", "cxr-cce-r0", "cxr-scce-r0"))
    results, failures = runner.run("s.h5", jobs, IDENTITY)
    assert results == [None, None, {"epochs_run": 2, "n": 1}, None]
    assert failures == [{"run": "enh-cce-r0", "reason": "the loss diverged"},
                        {"run": "enh-scce-r0", "reason": "enh-scce-r0: the run's process ended (killed by SIGKILL)"},
                        {"run": "cxr-scce-r0", "reason": "KeyError"}]
    out = capsys.readouterr().out
    assert "enh-cce-r0 failed: the loss diverged\n" in out and "cxr-scce-r0 failed: KeyError\n" in out


def test_the_schedule_records_each_outcome_and_keeps_earlier_sessions(tmp_path):
    jobs = jobs_in(tmp_path)
    (tmp_path / "schedule.json").write_text(json.dumps({"old-run": {"status": "done", "attempt": 2}}))
    runner, _ = ready(FakeClient(workers(1)))
    runner.run("s.h5", jobs[:2], IDENTITY)
    schedule = json.loads((tmp_path / "schedule.json").read_text())
    assert sorted(schedule) == ["enh-cce-r0", "enh-scce-r0", "old-run"]
    entry = schedule["enh-cce-r0"]
    assert entry["status"] == "done" and "result" not in entry and entry["attempt"] == 1
    assert entry["worker"] == "tcp://w" and entry["finished"] > entry["started"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schedule.json"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"a": 1}', '"text"'])
def test_a_damaged_schedule_is_set_aside_with_one_line(tmp_path, content):
    (tmp_path / "schedule.json").write_text(content)
    lines = []
    assert cluster._read_schedule(tmp_path / "schedule.json", lines.append) == {}
    assert (tmp_path / "schedule.json.damaged").read_text() == content
    assert not (tmp_path / "schedule.json").exists()
    assert lines == [f"{tmp_path / 'schedule.json'} was damaged (not a schedule); set aside as "
                     "schedule.json.damaged, a new one begins"]


def test_an_unreadable_schedule_is_set_aside_too(tmp_path):
    (tmp_path / "schedule.json").mkdir()
    lines = []
    assert cluster._read_schedule(tmp_path / "schedule.json", lines.append) == {}
    assert (tmp_path / "schedule.json.damaged").is_dir() and len(lines) == 1


def test_no_schedule_is_an_empty_one(tmp_path):
    assert cluster._read_schedule(None) == {} and cluster._read_schedule(tmp_path / "none.json") == {}
    cluster._write_schedule(None, {"a": {}})  # no jobs, no folder: nothing written
    (tmp_path / "s.json").write_text('{"a": {"x": 1}, "b": {}}')
    assert cluster._read_schedule(tmp_path / "s.json") == {"a": {"x": 1}, "b": {}}
    assert cluster._read_schedule(tmp_path / "s.json") == {"a": {"x": 1}, "b": {}}


def test_the_schedule_is_written_whole_and_readable(tmp_path):
    cluster._write_schedule(tmp_path / "s.json", {"r": {"attempt": 1}})
    assert (tmp_path / "s.json").read_text() == '{\n "r": {\n  "attempt": 1\n }\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_a_grid_without_runs_submits_nothing(tmp_path):
    client = FakeClient(workers(1))
    runner, _ = ready(client)
    assert runner.run("s.h5", [], IDENTITY) == ([], [])
    assert client.submitted == [] and list(tmp_path.iterdir()) == []


def test_the_driver_says_its_plan_one_estimate_and_what_runs(tmp_path, capsys):
    runner, lines = ready(FakeClient(workers(2)), slots=2, progress=True)
    jobs = jobs_in(tmp_path, ("enh-cce-r0", "enh-scce-r0", "cxr-cce-r0", "cxr-scce-r0"))
    finish(jobs[0])
    runner.run("s.h5", jobs, IDENTITY)
    assert lines == ["grid: 4 run(s) of up to 3 epochs; 1 finished earlier (reused), 3 to train, 2 at a time as "
                     "Dask tasks"]
    said = capsys.readouterr()
    assert said.out.count("left need about") == 1
    assert "enh-scce-r0 took 5 s (2 epoch(s)); at that time each, the 2 run(s) left need about 5 s, 2 at a time" \
        in said.out
    assert "running 1, failed 0" in said.err and "running 0, failed 0" in said.err
    assert "4/4" in said.err


def test_the_last_run_alone_gives_no_estimate(tmp_path, capsys):
    runner, _ = ready(FakeClient(workers(1)), progress=True)
    runner.run("s.h5", jobs_in(tmp_path)[:1], IDENTITY)
    assert "left need about" not in capsys.readouterr().out


def test_the_watch_and_the_topic_end_with_the_runs(tmp_path, monkeypatch):
    def interrupted(futures):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "as_completed", interrupted)
    client = FakeClient(workers(1))
    runner, _ = ready(client)
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        runner.run("s.h5", jobs_in(tmp_path), IDENTITY)
    assert client.topics[-1] == ("unsubscribe", "trainer-grid") and threading.active_count() == before


# --- the watch over the workers ---------------------------------------------------------------------

def watch(runner, until, timeout=10, said=None):
    said, stop = [] if said is None else said, threading.Event()
    thread = threading.Thread(target=runner._watch_workers, args=(stop, said.append, lambda: 5), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not until(said) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    return said


def test_usable_workers_are_the_ones_that_can_take_a_run():
    ws = {**workers(2, gpus=1), "tcp://c": {"host": "a", "nthreads": 2, "resources": {}},
          "tcp://h": {"host": "a", "nthreads": 2, "resources": {"GPU": 0.5}},
          "tcp://two": {"host": "b", "nthreads": 2, "resources": {"GPU": 2}}}
    runner, _ = ready(FakeClient(ws), gpus=1)
    assert runner._usable_workers() == 3
    runner.gpus = 0
    assert runner._usable_workers() == 5


@pytest.mark.parametrize(("gpus", "kind", "start"), [
    (0, "", "dask worker tcp://10.0.0.1:8786"),
    (1, "with a GPU resource ", "dask worker tcp://10.0.0.1:8786 --resources GPU=1"),
])
def test_a_cluster_without_usable_workers_is_said_once_and_its_return_too(monkeypatch, gpus, kind, start):
    monkeypatch.setenv("TRAINER_NO_WORKER_SECONDS", "0.3")
    client = FakeClient({})
    runner, _ = ready(client, gpus=gpus)
    began = time.monotonic()
    said = watch(runner, lambda s: len(s) >= 1, timeout=1.5)
    assert time.monotonic() - began >= 0.3
    assert said == [f"no Dask worker {kind}has been connected for 0.3 s and 5 run(s) wait: start one ({start}) "
                    "and the grid goes on, or press Ctrl-C (finished runs are kept; the same command resumes the "
                    "others)"]
    said = []
    client.scheduler_info = lambda n_workers=None: {"workers": workers(2, gpus=gpus) if said else {}}
    watch(runner, lambda s: len(s) >= 2, said=said)
    assert said[0].startswith(f"no Dask worker {kind}has been connected for 0.3 s")
    assert said[1:] == ["2 Dask worker(s) can run the runs again: the grid goes on"]


def test_a_cluster_with_workers_says_nothing(monkeypatch):
    monkeypatch.setenv("TRAINER_NO_WORKER_SECONDS", "0.1")
    runner, _ = ready(FakeClient(workers(1)))
    assert watch(runner, lambda s: False, timeout=0.6) == []


def test_a_bad_quiet_time_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("TRAINER_NO_WORKER_SECONDS", "soon")
    monkeypatch.setattr(cluster, "NO_WORKER_SECONDS", 0.2)
    runner, _ = ready(FakeClient({}))
    said = watch(runner, lambda s: len(s) >= 1)
    assert said[0].startswith("no Dask worker has been connected for 0.2 s")


def test_a_scheduler_that_did_not_answer_once_is_watched_on(monkeypatch):
    monkeypatch.setenv("TRAINER_NO_WORKER_SECONDS", "0.2")
    client, calls = FakeClient({}), []

    def busy_once(n_workers=None):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("scheduler busy")
        return {"workers": {}}

    client.scheduler_info = busy_once
    runner, _ = ready(client)
    said = watch(runner, lambda s: len(s) >= 1)
    assert len(calls) > 1 and said[0].startswith("no Dask worker has been connected for 0.2 s and 5 run(s) wait")


def test_the_watch_counts_the_runs_still_waiting(tmp_path, monkeypatch):
    """During a grid without workers the line says how many runs wait: the jobs less those finished."""
    monkeypatch.setenv("TRAINER_NO_WORKER_SECONDS", "0.1")
    said = []

    def outcome(spec):
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:  # the first run ends once the watch has spoken
            time.sleep(0.02)
        return done(spec)

    client = FakeClient({}, outcome=outcome)
    runner, _ = ready(client)
    jobs = jobs_in(tmp_path, ("enh-cce-r0", "enh-scce-r0", "cxr-cce-r0", "cxr-scce-r0"))  # 4 - 1 is no bitwise 4 op 1
    finish(jobs[0])
    watch_for_real = runner._watch_workers
    runner._watch_workers = lambda stop, say, runs_left: watch_for_real(stop, said.append, runs_left)
    runner.run("s.h5", jobs, IDENTITY)
    assert said and "and 3 run(s) wait" in said[0]


def test_a_scheduler_that_does_not_answer_is_left_to_dask(monkeypatch):
    monkeypatch.setenv("TRAINER_NO_WORKER_SECONDS", "0.1")
    client = FakeClient({})

    def gone(n_workers=None):
        raise OSError("connection closed")

    client.scheduler_info = gone
    runner, _ = ready(client)
    assert watch(runner, lambda s: False, timeout=0.6) == []


class CountedStop:
    """A stop event that records each wait and is set after ``times`` of them."""

    def __init__(self, times):
        self.times, self.waits = times, []

    def wait(self, timeout):
        self.waits.append(timeout)
        return len(self.waits) > self.times


@pytest.mark.parametrize(("quiet", "interval"), [("4", 1.0), ("6", 1.5), ("30", 2.0), ("0.2", 0.1), ("100", 2.0)])
def test_the_watch_looks_a_quarter_of_the_quiet_time_apart_within_bounds(monkeypatch, quiet, interval):
    monkeypatch.setenv("TRAINER_NO_WORKER_SECONDS", quiet)
    runner, _ = ready(FakeClient(workers(1)))
    stop = CountedStop(2)
    runner._watch_workers(stop, print, lambda: 1)
    assert stop.waits == [interval] * 3


def test_by_default_the_watch_speaks_after_30_seconds_without_workers(monkeypatch):
    import time as time_module

    monkeypatch.delenv("TRAINER_NO_WORKER_SECONDS", raising=False)
    clock = iter([10.0, 39.0, 40.0])  # no worker since 10 s; 29 s later; 30 s later (40 % 10 is no gap)
    monkeypatch.setattr(time_module, "monotonic", lambda: next(clock))
    runner, _ = ready(FakeClient({}))
    said = []
    runner._watch_workers(CountedStop(3), said.append, lambda: 4)
    assert said == ["no Dask worker has been connected for 30 s and 4 run(s) wait: start one (dask worker "
                    "tcp://10.0.0.1:8786) and the grid goes on, or press Ctrl-C (finished runs are kept; the same "
                    "command resumes the others)"]


def test_cores_are_this_processs_own_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2} if pid == 0 else {0})
    assert cluster._cores() == 3


def test_the_runs_read_with_one_thread_by_default(tmp_path):
    client = FakeClient(workers(1))
    runner, _ = ready(client)
    runner.run("s.h5", jobs_in(tmp_path)[:1], IDENTITY)
    assert client.submitted[0][1]["workers"] == 1


def test_the_estimate_is_the_first_finished_runs_own_time(tmp_path, capsys):
    def outcome(spec):
        return {**done(spec), "started": 100.0, "finished": 250.0}

    runner, _ = ready(FakeClient(workers(1), outcome=outcome), slots=1, progress=True)
    runner.run("s.h5", jobs_in(tmp_path), IDENTITY)
    assert "enh-cce-r0 took 2.5 min (2 epoch(s)); at that time each, the 2 run(s) left need about 5.0 min" \
        in capsys.readouterr().out


def test_workers_that_left_before_they_answered_are_one_line(store, store_id):
    runner, _ = runner_with(FakeClient({}))
    with pytest.raises(GridError, match=r"^no Dask worker is connected to tcp://10.0.0.1:8786 any more; start one "
                                        "and run the same command again$"):
        runner.prepare(store, store_id)


def test_the_runner_shows_progress_by_default():
    assert ClusterRunner("local:1").progress is True


def test_no_gpu_per_run_never_asks_for_the_gpus(local_start, monkeypatch):
    monkeypatch.setattr(cluster, "local_gpus", lambda: pytest.fail("nvidia-smi was asked"))
    runner = ClusterRunner("local:1", gpus_per_run=0)
    runner.connect()
    assert FakeSpecCluster.made[0].workers["run-slot-0"]["options"]["resources"] == {}


def test_nvidia_smi_is_given_20_seconds(monkeypatch):
    asked = []

    def run(argv, **kwargs):
        asked.append((argv[1:], kwargs["timeout"]))
        return types.SimpleNamespace(stdout="GPU 0: A (UUID: GPU-1)\n")

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cluster.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(cluster.subprocess, "run", run)
    assert local_gpus() == ["0"] and asked == [(["-L"], 20)]


def test_a_probe_removed_meanwhile_is_not_an_error(tmp_path):
    client = FakeClient(workers(1))

    def removes_it(fn, folder, probe):
        (Path(folder) / probe).unlink()
        return {"tcp://w0": None}

    client.run = removes_it
    runner, _ = runner_with(client)
    runner.check_out(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_runners_settings_are_keywords():
    with pytest.raises(TypeError, match="positional"):
        ClusterRunner("local:1", 2)


def test_a_gpu_per_run_is_satisfied_by_more_gpus_than_workers(local_start, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    ClusterRunner("local:2", gpus_per_run=1).connect()
    made = FakeSpecCluster.made[0].workers
    assert [made[f"run-slot-{k}"]["options"]["env"]["CUDA_VISIBLE_DEVICES"] for k in range(2)] == ["0", "1"]


class RecordingBar:
    """Stands in for tqdm: records the postfixes and lines the driver shows."""

    made = []

    def __init__(self, total=None, initial=0, **kwargs):
        self.total, self.n, self.postfixes, self.lines = total, initial, [], []
        RecordingBar.made.append(self)

    def set_postfix_str(self, text):
        self.postfixes.append(text)

    def update(self, n=1):
        self.n += n

    def write(self, line):
        self.lines.append(line)

    def close(self):
        pass


@pytest.fixture
def recording_bar(monkeypatch):
    import tqdm

    RecordingBar.made = []
    monkeypatch.setattr(tqdm, "tqdm", RecordingBar)
    return RecordingBar.made


def test_the_bar_counts_runs_running_from_the_workers_events(tmp_path, recording_bar):
    def outcome(spec):
        client.handler(("t", {"event": "finished", "run": Path(spec["run_dir"]).name}))  # as the worker says it
        return done(spec)

    client = FakeClient(workers(1), outcome=outcome)
    runner, _ = ready(client, progress=True)
    runner.run("s.h5", jobs_in(tmp_path)[:1], IDENTITY)
    assert recording_bar[0].postfixes == ["running 1, failed 0", "running 0, failed 0", "running 0, failed 0"]


def test_the_first_estimate_counts_the_runs_after_it(tmp_path, recording_bar):
    runner, _ = ready(FakeClient(workers(1)), slots=1, progress=True)
    runner.run("s.h5", jobs_in(tmp_path, ("enh-cce-r0", "enh-scce-r0", "cxr-cce-r0", "cxr-scce-r0")), IDENTITY)
    estimates = [line for line in recording_bar[0].lines if "left need about" in line]
    assert len(estimates) == 1 and "the 3 run(s) left" in estimates[0]


def test_workers_lost_after_they_were_there_are_said(monkeypatch):
    monkeypatch.setenv("TRAINER_NO_WORKER_SECONDS", "0.1")
    client, calls = FakeClient({}), []

    def leaving(n_workers=None):
        calls.append(1)
        return {"workers": workers(1) if len(calls) <= 2 else {}}

    client.scheduler_info = leaving
    runner, _ = ready(client)
    said = watch(runner, lambda s: len(s) >= 1)
    assert said and said[0].startswith("no Dask worker has been connected for 0.1 s")
