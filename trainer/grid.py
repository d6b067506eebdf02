"""The paired grid of runs that compares losses, inputs and models, and where its runs run.

Every arm of a grid uses the same split, the same seed for repeat k (so the same
initial weights and batch order), and its result lands in its own folder as soon
as it finishes. A grid is planned here as a list of :class:`Job`; a runner runs
them: :class:`SequentialRunner` in this process (the default), or
:class:`trainer.cluster.ClusterRunner` on a Dask cluster (``--scheduler``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from phasefeat.io._atomic import make_dirs, remove_dirs
from phasefeat.io.identity import describe_difference

from .experiment import (
    GridError,
    RunConfig,
    check_input,
    check_values,
    keras_backend,
    prepare_split,
    run_name,
    store_info,
    train_run,
)
from .losses import get_loss
from .progress import runs_left_estimate
from .splits import Split

__all__ = ["Job", "SequentialRunner", "run_grid", "finished_run", "run_or_reuse", "plan_line", "planned_identity"]


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of a grid: what it is, where it lands, and the split it uses."""

    config: RunConfig
    run_dir: Path
    split: Split


class SequentialRunner:
    """Runs a grid's runs one after another in this process (without ``--scheduler``)."""

    def __init__(self, progress: bool = True, verbose: int = 0):
        self.progress, self.verbose = progress, verbose

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def prepare(self, store_path, store_id: dict) -> dict:
        """Nothing to check: this process reads the store and writes the folder. Returns the
        identity the runs are planned with (:func:`planned_identity`): the framework's own thread
        count and the Keras backend of this process."""
        return planned_identity(store_id, None, keras_backend())

    def check_out(self, out) -> None:
        """Nothing to check (see :meth:`prepare`)."""

    def run(self, store_path, jobs: list[Job], identity: dict, workers: int = 1, desc: str = "grid"):
        """Every job in order; ``(results, failures)`` with no failures (a failure raises).

        Says first how many runs there are and how many are left; the first run trained
        estimates, after its first epoch, how long the runs left may take.
        """
        from tqdm import tqdm

        finished = [finished_run(job, identity) for job in jobs]
        left = sum(r is None for r in finished)
        if self.progress:
            tqdm.write(plan_line(jobs, left, desc))
        results, estimated = [], False
        bar = tqdm(jobs, desc=desc, unit="run", disable=not self.progress)
        for job, result in zip(bar, finished, strict=True):
            bar.set_postfix(run=job.run_dir.name)
            if result is None:
                left -= 1
                started = time.perf_counter()
                result = train_run(store_path, job.config, job.run_dir, split=job.split,
                                   expected_identity=identity["store"], verbose=self.verbose,
                                   progress=self.progress, workers=workers, runs_after=0 if estimated else left)
                if not estimated and left and self.progress:
                    bar.write(runs_left_estimate(job.run_dir.name, time.perf_counter() - started,
                                                 result["epochs_run"], left))
                estimated = True
            results.append(result)
        return results, []


def planned_identity(store_id: dict, threads: int | None, backend: str) -> dict:
    """What every run of a grid must share to be reused or resumed: the store's identity
    (:func:`phasefeat.io.identity.store_identity`), the compute threads of each run (None: the
    framework's default) and the Keras backend. TensorFlow on a CPU is bit-reproducible only at
    one thread count, so a grid's runs are paired only when all three agree."""
    return {"store": store_id, "threads": threads, "backend": backend}


def plan_line(jobs: list[Job], left: int, desc: str = "grid") -> str:
    """What a grid will do: its runs, their epoch limit, and how many are finished already."""
    epochs = sorted({job.config.epochs for job in jobs})
    done = len(jobs) - left
    return (f"{desc}: {len(jobs)} run(s) of up to {epochs[-1] if epochs else 0} epochs; "
            + (f"{done} finished earlier (reused), " if done else "") + f"{left} to train")


def run_grid(store_path, out, *, inputs=("cxr", "enh"), losses=("cce", "scce"), repeats: int = 3,
             seed: int = 0, base: RunConfig | None = None, progress: bool = True,
             verbose: int = 0, workers: int = 1, models: tuple[str, ...] | None = None,
             runner=None) -> tuple[list[dict], list[dict]]:
    """Run every (model, input, loss, repeat) arm, pairing repeat k of all arms on seed + k.

    Finished runs (``runs/<name>/result.json`` with the same config) are reused;
    a folder made with other settings is refused.

    Parameters
    ----------
    runner : SequentialRunner or trainer.cluster.ClusterRunner, optional
        Where the runs run [default: one after another in this process].

    Returns
    -------
    results : list of dict
        The finished runs, in grid order.
    failures : list of dict
        ``{"run", "reason"}`` of runs that failed for a reason of their own (on a cluster
        the others go on; in this process the first failure raises).
    """
    base = base or RunConfig()
    runner = runner or SequentialRunner(progress=progress, verbose=verbose)
    out = Path(out)
    for loss in losses:
        get_loss(loss)
    if out.exists() and not out.is_dir():
        raise GridError(f"--out {out} is a file, not a folder")
    if not inputs:
        raise GridError("a grid needs at least one input (cxr, enh)")
    for what in inputs:  # all of them before the store is read (store_info checks only the first)
        check_input(what)
    info = store_info(store_path, inputs[0], base.target)
    for what in inputs:  # once here, not in every run
        check_values(store_path, what)
    split = prepare_split(store_path, dataclasses.replace(base, input=inputs[0]), info)
    # Keyed on what the store holds, not on its path: a store re-converted in place is another store.
    settings = {"store_identity": info["store_identity"], "base": json.loads(json.dumps(
                dataclasses.asdict(base))), "seed": seed, "split": json.loads(split.to_json())}
    if models and tuple(models) != (base.model,):
        settings["models"] = list(models)
    settings_path = out / "grid.json"
    fresh = not settings_path.exists()
    old = None if fresh else _check_settings(settings_path, settings, out)
    models = tuple(models or (base.model,))
    for name in models:  # every model checked before the first epoch
        dataclasses.replace(base, model=name)
    identity = runner.prepare(store_path, info["store_identity"])
    settings.update(threads=identity["threads"], backend=identity["backend"])
    if old is not None:  # the threads of a cluster's runs are known only once it is reached
        _check_environment(old, settings, out)
    created = make_dirs(out)  # only now: a refused grid leaves nothing behind
    try:
        runner.check_out(out)
    except GridError:
        remove_dirs(created)
        raise
    if fresh:
        settings_path.write_text(json.dumps(settings))
    (out / "split.json").write_text(split.to_json())
    jobs = []
    for k in range(repeats):
        for name in models:
            for what in inputs:
                for loss in losses:
                    cfg = dataclasses.replace(base, model=name, input=what, loss=loss, seed=seed + k)
                    jobs.append(Job(cfg, out / "runs" / run_name(cfg, k), split))
    results, failures = runner.run(store_path, jobs, identity, workers=workers)
    return [r for r in results if r is not None], failures


def read_record(path: Path, what: str, fix: str) -> dict:
    """A JSON object this tool wrote into its own folder, or one line saying it is damaged."""
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise GridError(f"{path} is damaged (not JSON); {fix}") from None
    except OSError as exc:
        raise GridError(f"{path} cannot be read ({exc.strerror or exc}); {fix}") from None
    if not isinstance(record, dict):
        raise GridError(f"{path} is damaged (JSON, but not {what}); {fix}")
    return record


def _check_settings(settings_path: Path, settings: dict, out: Path) -> dict:
    """The grid's recorded settings, if they are these (threads and backend aside: see
    :func:`_check_environment`); else one line saying what differs."""
    old = read_record(settings_path, "a grid's settings", "delete it or use another --out")
    old_identity = old.get("store_identity")
    if old_identity is None or isinstance(old_identity, str):
        raise GridError(f"{out} was made by an earlier version whose store identity left out how the pixels "
                        "were made and how samples are grouped, so its runs cannot be matched to this store; "
                        "use another --out")
    if old_identity != settings["store_identity"]:
        raise GridError(f"{out} holds runs made on another store, or on this store before it was converted "
                        f"again ({describe_difference(old_identity, settings['store_identity'])}); use "
                        "another --out or delete it")
    shared = {k: v for k, v in settings.items() if k not in ("threads", "backend")}
    before = {k: v for k, v in old.items() if k not in ("threads", "backend")}
    if before != shared:
        differ = sorted(k for k in set(before) | set(shared) if before.get(k) != shared.get(k))
        raise GridError(f"{out} holds runs made with other settings ({', '.join(differ)} differ); "
                        "use another --out or delete it")
    return old


def _check_environment(old: dict, settings: dict, out: Path) -> None:
    """Threads per run and the Keras backend as the grid's recorded runs were trained with."""
    for key, option in (("threads", "--threads-per-run"), ("backend", "KERAS_BACKEND")):
        if old.get(key) != settings[key]:
            raise GridError(f"{out} holds runs trained with {_environment(key, old.get(key))}; this grid "
                            f"would train with {_environment(key, settings[key])}, and results depend on it: "
                            f"set {option} as before, or use another --out")


def _environment(key: str, value) -> str:
    if key == "threads":
        return "the framework's default threads per run" if value is None else f"{value} thread(s) per run"
    return f"Keras' {value} backend"


def finished_run(job: Job, identity: dict) -> dict | None:
    """The result of ``job`` if its folder holds it finished with the same config, store, threads
    and backend (``identity``: :func:`planned_identity`), else None.

    Raises
    ------
    GridError
        The folder holds a run with other settings, of another store or computed otherwise, or a
        damaged result.
    """
    done = job.run_dir / "result.json"
    if not done.exists():
        return None
    fix = f"delete {job.run_dir} to run it again"
    result = read_record(done, "a run's result", fix)
    if result.get("config_digest") != job.config.digest():
        raise GridError(f"{job.run_dir} was made with other settings; delete it or use another --out")
    recorded = {"store": result.get("store_identity"), "threads": result.get("threads"),
                "backend": result.get("backend")}
    if recorded != identity:
        raise GridError(f"{job.run_dir} was trained on another store or otherwise "
                        f"({describe_difference(recorded, identity) or 'an earlier version'}); {fix}")
    return result


def run_or_reuse(store_path, cfg: RunConfig, run_dir: Path, split: Split, identity: dict,
                 **train_kwargs) -> dict:
    """The finished run in ``run_dir`` if it was made with ``cfg`` on this store, else train it.

    Raises
    ------
    GridError
        ``run_dir`` holds a run with other settings, of another store, or a damaged result.
    """
    result = finished_run(Job(cfg, Path(run_dir), split), identity)
    if result is not None:
        return result
    backend = keras_backend()
    if backend != identity["backend"]:
        raise GridError(f"this process trains with Keras' {backend} backend; the grid was planned with "
                        f"{identity['backend']} (set KERAS_BACKEND alike everywhere)")
    return train_run(store_path, cfg, run_dir, split=split, expected_identity=identity["store"],
                     threads=identity["threads"], **train_kwargs)
