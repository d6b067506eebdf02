"""Planning a grid and reusing its runs, in process: jobs, settings, identities and refusals
(:mod:`trainer.grid`).

Training is replaced by a function that writes what a finished run writes; the runs themselves
are trained by ``test_trainer.py`` and on clusters by ``test_grid.py``.
"""

import dataclasses
import json
import os
import re
import types
from pathlib import Path

import numpy as np
import pytest
from datasets import tiny_store

from trainer import grid
from trainer.experiment import GridError, RunConfig
from trainer.grid import (
    Job,
    SequentialRunner,
    finished_run,
    plan_line,
    planned_identity,
    read_record,
    run_grid,
    run_or_reuse,
)
from trainer.progress import runs_left_estimate
from trainer.splits import Split

SPLIT = Split(np.array([0, 1]), np.array([2]), np.array([3]), 0, 0.3, 0.3, True)
STORE_ID = {"digest": "abc", "samples": 30}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory.mktemp("grid-plan") / "s.h5", n=30)


@pytest.fixture(autouse=True)
def backend_from_environment(monkeypatch):
    """The backend this process would train with, from ``KERAS_BACKEND`` alone: once Keras is loaded
    (by another test in the process) ``keras_backend`` answers with the loaded one instead."""
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setattr(grid, "keras_backend", lambda: os.environ["KERAS_BACKEND"])


class PlanningRunner:
    """A runner that records what the grid asks of it and finishes every job with a stub result."""

    def __init__(self, threads=1, backend="tensorflow", refuse_out=None):
        self.threads, self.backend, self.refuse_out = threads, backend, refuse_out
        self.calls = []

    def prepare(self, store_path, store_id):
        self.calls.append(("prepare", store_path))
        return planned_identity(store_id, self.threads, self.backend)

    def check_out(self, out):
        self.calls.append(("check_out", Path(out).is_dir()))
        if self.refuse_out:
            raise GridError(self.refuse_out)

    def run(self, store_path, jobs, identity, workers=1):
        self.calls.append(("run", workers))
        self.jobs, self.identity = jobs, identity
        return [{"run": j.run_dir.name} if k % 2 == 0 else None for k, j in enumerate(jobs)], [{"run": "x"}]


def settings_of(out):
    return json.loads((out / "grid.json").read_text())


# --- identities and lines ---------------------------------------------------------------------------

def test_the_planned_identity_holds_store_threads_and_backend():
    assert planned_identity(STORE_ID, 2, "torch") == {"store": STORE_ID, "threads": 2, "backend": "torch"}
    assert planned_identity(STORE_ID, None, "jax") == {"store": STORE_ID, "threads": None, "backend": "jax"}


def job(name="enh-cce-r0", epochs=20, root=Path("out")):
    return Job(RunConfig(epochs=epochs), root / "runs" / name, SPLIT)


@pytest.mark.parametrize(("jobs", "left", "line"), [
    ([job(), job(epochs=5), job(epochs=30)], 3, "grid: 3 run(s) of up to 30 epochs; 3 to train"),
    ([job(), job(epochs=5)], 1, "grid: 2 run(s) of up to 20 epochs; 1 finished earlier (reused), 1 to train"),
    ([job()], 0, "grid: 1 run(s) of up to 20 epochs; 1 finished earlier (reused), 0 to train"),
    ([], 0, "grid: 0 run(s) of up to 0 epochs; 0 to train"),
])
def test_the_plan_line_says_runs_epochs_and_what_is_reused(jobs, left, line):
    assert plan_line(jobs, left) == line
    assert plan_line(jobs, left, "audit").startswith("audit: ")


# --- run_grid: the jobs ------------------------------------------------------------------------------

def test_the_grid_pairs_repeat_k_of_every_arm_on_one_seed_and_one_split(store, tmp_path):
    runner = PlanningRunner()
    out = tmp_path / "g"
    results, failures = run_grid(store, out, inputs=("cxr", "enh"), losses=("cce", "scce"), repeats=2, seed=7,
                                 base=RunConfig(epochs=3), runner=runner, workers=4,
                                 models=("vgg16", "resnet50"))
    names = [j.run_dir.name for j in runner.jobs]
    assert names == [f"{m}{i}-{loss}-r{k}" for k in range(2) for m in ("", "resnet50-") for i in ("cxr", "enh")
                     for loss in ("cce", "scce")]
    assert all(j.run_dir.parent == out / "runs" for j in runner.jobs)
    assert [j.config.seed for j in runner.jobs] == [7] * 8 + [8] * 8
    assert {j.config.epochs for j in runner.jobs} == {3}
    assert [(j.config.model, j.config.input, j.config.loss) for j in runner.jobs[:8]] == [
        (m, i, loss) for m in ("vgg16", "resnet50") for i in ("cxr", "enh") for loss in ("cce", "scce")]
    split = runner.jobs[0].split
    assert all(j.split is split for j in runner.jobs)
    assert (out / "split.json").read_text() == split.to_json()
    assert results == [{"run": n} for n in names[::2]] and failures == [{"run": "x"}]
    assert runner.calls == [("prepare", store), ("check_out", True), ("run", 4)]
    assert runner.identity["threads"] == 1 and runner.identity["backend"] == "tensorflow"


def test_the_grid_records_what_its_runs_are_matched_on(store, tmp_path):
    out = tmp_path / "g"
    base = RunConfig(epochs=3)
    run_grid(store, out, inputs=("enh",), repeats=1, seed=2, base=base, runner=PlanningRunner(threads=2))
    settings = settings_of(out)
    assert sorted(settings) == ["backend", "base", "seed", "split", "store_identity", "threads"]
    assert settings["base"] == json.loads(json.dumps(dataclasses.asdict(base)))
    assert settings["seed"] == 2 and settings["threads"] == 2 and settings["backend"] == "tensorflow"
    assert settings["split"] == json.loads((out / "split.json").read_text())
    run_grid(store, tmp_path / "m", inputs=("enh",), repeats=1, base=base, runner=PlanningRunner(),
             models=("resnet50",))
    assert settings_of(tmp_path / "m")["models"] == ["resnet50"]
    run_grid(store, tmp_path / "v", inputs=("enh",), repeats=1, base=base, runner=PlanningRunner(),
             models=("vgg16",))  # the base model named again is the default grid
    assert "models" not in settings_of(tmp_path / "v")


def test_a_grid_run_again_with_its_settings_goes_on(store, tmp_path):
    out = tmp_path / "g"
    run_grid(store, out, repeats=1, base=RunConfig(epochs=3), runner=PlanningRunner())
    first = (out / "grid.json").read_text()
    runner = PlanningRunner()
    run_grid(store, out, repeats=1, base=RunConfig(epochs=3), runner=runner)
    assert len(runner.jobs) == 4 and (out / "grid.json").read_text() == first


@pytest.mark.parametrize(("change", "differ"), [
    ({"seed": 1}, "seed"), ({"base": RunConfig(epochs=4)}, "base"),
    ({"models": ("resnet50",)}, "models"), ({"base": RunConfig(epochs=4), "seed": 3}, "base, seed"),
])
def test_a_grid_folder_made_with_other_settings_is_refused(store, tmp_path, change, differ):
    out = tmp_path / "g"
    kwargs = {"repeats": 1, "base": RunConfig(epochs=3), "seed": 0}
    run_grid(store, out, **kwargs, runner=PlanningRunner())
    runner = PlanningRunner()
    with pytest.raises(GridError, match=rf"^{out} holds runs made with other settings \({differ} differ\); "
                                        "use another --out or delete it$"):
        run_grid(store, out, **{**kwargs, **change}, runner=runner)
    assert runner.calls == []


def test_a_grid_of_another_store_is_refused_naming_the_difference(store, tmp_path):
    out = tmp_path / "g"
    run_grid(store, out, repeats=1, base=RunConfig(epochs=3), runner=PlanningRunner())
    other = tiny_store(tmp_path / "other.h5", n=33)
    with pytest.raises(GridError, match=rf"^{out} holds runs made on another store, or on this store before it "
                                        r"was converted again \(.+\); use another --out or delete it$"):
        run_grid(other, out, repeats=1, base=RunConfig(epochs=3), runner=PlanningRunner())


@pytest.mark.parametrize("identity", [None, "sha-of-the-file"])
def test_a_grid_of_an_earlier_version_is_refused(store, tmp_path, identity):
    out = tmp_path / "g"
    run_grid(store, out, repeats=1, base=RunConfig(epochs=3), runner=PlanningRunner())
    settings = settings_of(out)
    if identity is None:
        del settings["store_identity"]
    else:
        settings["store_identity"] = identity
    (out / "grid.json").write_text(json.dumps(settings))
    with pytest.raises(GridError, match=rf"^{out} was made by an earlier version whose store identity left out "
                                        "how the pixels were made"):
        run_grid(store, out, repeats=1, base=RunConfig(epochs=3), runner=PlanningRunner())


@pytest.mark.parametrize(("was", "now", "message"), [
    ({"threads": 1}, {"threads": 2}, "trained with 1 thread(s) per run; this grid would train with 2 thread(s) "
                                     "per run, and results depend on it: set --threads-per-run as before"),
    ({"threads": None}, {"threads": 1}, "trained with the framework's default threads per run; this grid would "
                                        "train with 1 thread(s) per run"),
    ({"threads": 1}, {"threads": None}, "trained with 1 thread(s) per run; this grid would train with the "
                                        "framework's default threads per run"),
    ({"backend": "tensorflow"}, {"backend": "jax"}, "trained with Keras' tensorflow backend; this grid would "
                                                    "train with Keras' jax backend, and results depend on it: "
                                                    "set KERAS_BACKEND as before, or use another --out"),
])
def test_a_grid_trained_with_other_threads_or_backend_is_refused_once_they_are_known(store, tmp_path, was, now,
                                                                                      message):
    out = tmp_path / "g"
    run_grid(store, out, repeats=1, base=RunConfig(epochs=3), runner=PlanningRunner(**was))
    runner = PlanningRunner(**now)
    with pytest.raises(GridError, match="^" + re.escape(f"{out} holds runs {message}")):
        run_grid(store, out, repeats=1, base=RunConfig(epochs=3), runner=runner)
    assert runner.calls == [("prepare", store)]  # refused before any run


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_a_damaged_grid_record_is_one_line(store, tmp_path, content):
    out = tmp_path / "g"
    out.mkdir()
    (out / "grid.json").write_bytes(content)
    with pytest.raises(GridError, match=rf"^{out / 'grid.json'} is damaged \((not JSON|JSON, but not a grid's "
                                        r"settings)\); delete it or use another --out$"):
        run_grid(store, out, repeats=1, runner=PlanningRunner())


def test_an_out_that_is_a_file_is_refused(store, tmp_path):
    out = tmp_path / "g"
    out.write_text("x")
    with pytest.raises(GridError, match=rf"^--out {out} is a file, not a folder$"):
        run_grid(store, out, runner=PlanningRunner())


def test_a_refused_grid_leaves_nothing_behind(store, tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="loss"):
        run_grid(store, out, losses=("cce", "nonsense"), runner=PlanningRunner())
    with pytest.raises(GridError, match="cannot write"):
        run_grid(store, out, runner=PlanningRunner(refuse_out="cannot write"))
    with pytest.raises(ValueError, match="model"):
        run_grid(store, out, models=("vgg16", "nonsense"), runner=PlanningRunner())
    assert list(tmp_path.iterdir()) == []


def test_a_folder_there_before_a_refused_grid_is_kept(store, tmp_path):
    out = tmp_path / "g"
    out.mkdir()
    with pytest.raises(GridError, match="cannot write"):
        run_grid(store, out, runner=PlanningRunner(refuse_out="cannot write"))
    assert out.is_dir() and list(out.iterdir()) == []


def test_every_input_is_checked_before_any_run(store, tmp_path, monkeypatch):
    checked = []
    monkeypatch.setattr(grid, "check_values", lambda path, what: checked.append(what))
    run_grid(store, tmp_path / "g", inputs=("enh", "cxr"), repeats=1, runner=PlanningRunner())
    assert checked == ["enh", "cxr"]


# --- finished runs ---------------------------------------------------------------------------------

def identity(**change):
    return {**planned_identity(STORE_ID, 1, "tensorflow"), **change}


def finish(j, **change):
    j.run_dir.mkdir(parents=True, exist_ok=True)
    result = {"config_digest": j.config.digest(), "store_identity": STORE_ID, "threads": 1,
              "backend": "tensorflow", "test_loss": 0.5, **change}
    (j.run_dir / "result.json").write_text(json.dumps(result))
    return result


def test_a_run_without_a_result_is_not_finished(tmp_path):
    j = job(root=tmp_path)
    assert finished_run(j, identity()) is None
    j.run_dir.mkdir(parents=True)
    (j.run_dir / "checkpoint.json").write_text("{}")
    assert finished_run(j, identity()) is None


def test_a_finished_run_of_the_same_config_store_threads_and_backend_is_reused(tmp_path):
    j = job(root=tmp_path)
    result = finish(j)
    assert finished_run(j, identity()) == result


def test_a_finished_run_of_another_config_is_refused(tmp_path):
    j = job(root=tmp_path)
    finish(j, config_digest=RunConfig(epochs=21).digest())
    with pytest.raises(GridError, match=rf"^{j.run_dir} was made with other settings; delete it or use another "
                                        "--out$"):
        finished_run(j, identity())


@pytest.mark.parametrize(("change", "why"), [
    ({"threads": 2}, r"threads per run 2 -> 1"), ({"backend": "jax"}, "backend"),
    ({"store_identity": {"digest": "other", "samples": 30}}, "digest"),
    ({"store_identity": None, "threads": None, "backend": None}, ""),
])
def test_a_finished_run_computed_otherwise_is_refused_saying_how(tmp_path, change, why):
    j = job(root=tmp_path)
    finish(j, **change)
    with pytest.raises(GridError, match=rf"^{j.run_dir} was trained on another store or otherwise \(.*{why}.*\); "
                                        f"delete {j.run_dir} to run it again$"):
        finished_run(j, identity())


def test_a_result_without_any_identity_is_called_an_earlier_versions(tmp_path, monkeypatch):
    j = job(root=tmp_path)
    finish(j)
    monkeypatch.setattr(grid, "describe_difference", lambda a, b: "")
    with pytest.raises(GridError, match=r"otherwise \(an earlier version\); delete"):
        finished_run(j, identity(threads=3))


@pytest.mark.parametrize(("content", "said"), [(b"{", "is damaged (not JSON)"), (b"\xff", "is damaged (not JSON)"),
                                               (b'"text"', "is damaged (JSON, but not a run's result)")])
def test_a_damaged_result_is_one_line_saying_how_to_go_on(tmp_path, content, said):
    j = job(root=tmp_path)
    j.run_dir.mkdir(parents=True)
    (j.run_dir / "result.json").write_bytes(content)
    with pytest.raises(GridError) as raised:
        finished_run(j, identity())
    assert str(raised.value) == f"{j.run_dir / 'result.json'} {said}; delete {j.run_dir} to run it again"


def test_a_record_that_cannot_be_read_says_why(tmp_path):
    (tmp_path / "r.json").mkdir()
    with pytest.raises(GridError) as raised:
        read_record(tmp_path / "r.json", "a record", "fix it")
    assert str(raised.value) == f"{tmp_path / 'r.json'} cannot be read (Is a directory); fix it"
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_record(tmp_path / "ok.json", "a record", "fix it") == {"a": 1}


# --- run_or_reuse -----------------------------------------------------------------------------------

def stub_training(monkeypatch):
    calls = []

    def train_run(store_path, cfg, run_dir, **kwargs):
        calls.append((store_path, cfg, Path(run_dir), kwargs))
        return {"run": Path(run_dir).name, "epochs_run": 2}

    monkeypatch.setattr(grid, "train_run", train_run)
    return calls


def test_run_or_reuse_reuses_a_finished_run(tmp_path, monkeypatch):
    calls = stub_training(monkeypatch)
    j = job(root=tmp_path)
    result = finish(j)
    assert run_or_reuse("s.h5", j.config, str(j.run_dir), SPLIT, identity()) == result
    assert calls == []


def test_run_or_reuse_trains_with_the_planned_store_and_threads(tmp_path, monkeypatch):
    calls = stub_training(monkeypatch)
    j = job(root=tmp_path)
    assert run_or_reuse("s.h5", j.config, j.run_dir, SPLIT, identity(threads=3), progress=False, workers=2) == {
        "run": "enh-cce-r0", "epochs_run": 2}
    assert calls == [("s.h5", j.config, j.run_dir, {"split": SPLIT, "expected_identity": STORE_ID, "threads": 3,
                                                    "progress": False, "workers": 2})]


@pytest.mark.parametrize("backend", ["torch", "jax"])  # names that sort after and before the planned one
def test_run_or_reuse_refuses_a_process_of_another_backend(tmp_path, monkeypatch, backend):
    calls = stub_training(monkeypatch)
    monkeypatch.setenv("KERAS_BACKEND", backend)
    with pytest.raises(GridError, match=rf"^this process trains with Keras' {backend} backend; the grid was planned "
                                        r"with tensorflow \(set KERAS_BACKEND alike everywhere\)$"):
        run_or_reuse("s.h5", RunConfig(), tmp_path / "r", SPLIT, identity())
    assert calls == []


# --- SequentialRunner -------------------------------------------------------------------------------

def test_the_sequential_runner_plans_with_this_process(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with SequentialRunner(progress=False) as runner:
        assert runner.prepare("s.h5", STORE_ID) == {"store": STORE_ID, "threads": None, "backend": "jax"}
        assert runner.check_out("anywhere") is None


def test_the_sequential_runner_trains_what_is_not_finished_in_order(tmp_path, monkeypatch, capsys):
    calls = stub_training(monkeypatch)
    jobs = [job(n, root=tmp_path) for n in ("enh-cce-r0", "enh-scce-r0", "cxr-cce-r0", "cxr-scce-r0")]
    reused = finish(jobs[1])
    results, failures = SequentialRunner(progress=False, verbose=2).run("s.h5", jobs, identity(), workers=3)
    assert failures == []
    assert results == [{"run": "enh-cce-r0", "epochs_run": 2}, reused, {"run": "cxr-cce-r0", "epochs_run": 2},
                       {"run": "cxr-scce-r0", "epochs_run": 2}]
    assert [c[2].name for c in calls] == ["enh-cce-r0", "cxr-cce-r0", "cxr-scce-r0"]
    first = calls[0][3]
    assert first == {"split": SPLIT, "expected_identity": STORE_ID, "verbose": 2, "progress": False,
                     "workers": 3, "runs_after": 2}
    assert [c[3]["runs_after"] for c in calls] == [2, 0, 0]  # only the first run estimates the rest
    assert capsys.readouterr().err == ""


def test_the_sequential_runner_says_its_plan_and_one_estimate(tmp_path, monkeypatch, capsys):
    stub_training(monkeypatch)
    jobs = [job(n, root=tmp_path) for n in ("enh-cce-r0", "enh-scce-r0", "cxr-cce-r0")]
    finish(jobs[0])
    SequentialRunner(progress=True).run("s.h5", jobs, identity())
    said = capsys.readouterr()
    text = said.out + said.err
    assert "grid: 3 run(s) of up to 20 epochs; 1 finished earlier (reused), 2 to train" in text
    assert text.count("run(s) left need about") == 1
    assert "enh-scce-r0 took " in text and "(2 epoch(s)); at that time each, the 1 run(s) left" in text


def test_a_last_run_alone_gives_no_estimate(tmp_path, monkeypatch, capsys):
    stub_training(monkeypatch)
    SequentialRunner(progress=True).run("s.h5", [job(root=tmp_path)], identity())
    said = capsys.readouterr()
    assert "left need about" not in said.out + said.err
    assert "grid: 1 run(s) of up to 20 epochs; 1 to train" in said.out + said.err


def test_a_grid_by_default_trains_quietly_with_one_reader_thread(store, tmp_path, monkeypatch):
    calls = stub_training(monkeypatch)
    run_grid(store, tmp_path / "g", inputs=("enh",), losses=("cce",), repeats=1, progress=False)
    (_, cfg, _, kwargs), = calls
    assert kwargs["verbose"] == 0 and kwargs["workers"] == 1 and kwargs["progress"] is False
    assert cfg == dataclasses.replace(RunConfig(), input="enh", loss="cce")


def test_the_sequential_runner_by_default_reads_with_one_thread(tmp_path, monkeypatch):
    calls = stub_training(monkeypatch)
    SequentialRunner(progress=False).run("s.h5", [job(root=tmp_path)], identity())
    assert calls[0][3]["workers"] == 1 and calls[0][3]["verbose"] == 0


@pytest.mark.parametrize(("inputs", "message"), [(("enh", "ENH"), "input must be cxr or enh, got 'ENH'"),
                                                 (("nope",), "input must be cxr or enh, got 'nope'"),
                                                 ((), r"a grid needs at least one input \(cxr, enh\)")])
def test_every_input_name_is_checked_before_the_store_is_read(store, tmp_path, monkeypatch, inputs, message):
    monkeypatch.setattr(grid, "store_info", lambda *a: pytest.fail("the store was read"))
    with pytest.raises(GridError, match=f"^{message}$"):
        run_grid(store, tmp_path / "g", inputs=inputs, runner=PlanningRunner())
    assert list(tmp_path.iterdir()) == []


def test_the_default_grid_is_the_studys_three_repeats_of_four_arms(store, tmp_path):
    runner = PlanningRunner()
    run_grid(store, tmp_path / "g", base=RunConfig(epochs=3), runner=runner)
    assert [j.run_dir.name for j in runner.jobs] == [f"{i}-{loss}-r{k}" for k in range(3) for i in ("cxr", "enh")
                                                     for loss in ("cce", "scce")]
    assert [j.config.seed for j in runner.jobs] == [0] * 4 + [1] * 4 + [2] * 4


def test_a_grids_settings_are_keywords(store, tmp_path):
    with pytest.raises(TypeError, match="positional"):
        run_grid(store, tmp_path / "g", ("enh",))


def test_the_estimate_uses_the_first_runs_own_time(tmp_path, monkeypatch, capsys):
    stub_training(monkeypatch)
    clock = iter([100.0, 250.0, 300.0])  # the first run starts, ends; the second starts
    monkeypatch.setattr(grid, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    SequentialRunner(progress=True).run("s.h5", [job(n, root=tmp_path) for n in ("enh-cce-r0", "cxr-cce-r0")],
                                        identity())
    said = capsys.readouterr()
    assert runs_left_estimate("enh-cce-r0", 150.0, 2, 1) in said.out + said.err
    assert "enh-cce-r0 took 2.5 min (2 epoch(s))" in said.out + said.err


def test_a_grid_of_the_base_model_and_another_records_both(store, tmp_path):
    run_grid(store, tmp_path / "g", inputs=("enh",), repeats=1, base=RunConfig(epochs=3), runner=PlanningRunner(),
             models=("vgg16", "resnet50"))
    assert settings_of(tmp_path / "g")["models"] == ["vgg16", "resnet50"]


@pytest.mark.parametrize("digest", ["0" * 64, "f" * 64])  # digests that sort before and after this config's
def test_a_finished_run_of_any_other_config_is_refused(tmp_path, digest):
    j = job(root=tmp_path)
    finish(j, config_digest=digest)
    with pytest.raises(GridError, match="was made with other settings"):
        finished_run(j, identity())


def test_a_planned_job_cannot_be_changed(tmp_path):
    j = job(root=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        j.run_dir = tmp_path / "elsewhere"


def test_the_sequential_runner_by_default_shows_progress_and_trains_quietly(tmp_path, monkeypatch, capsys):
    calls = stub_training(monkeypatch)
    SequentialRunner().run("s.h5", [job(root=tmp_path)], identity())
    said = capsys.readouterr()
    assert "grid: 1 run(s) of up to 20 epochs; 1 to train" in said.out + said.err
    assert calls[0][3]["verbose"] == 0 and calls[0][3]["progress"] is True


def test_a_grid_by_default_shows_its_progress(store, tmp_path, monkeypatch, capsys):
    calls = stub_training(monkeypatch)
    run_grid(store, tmp_path / "g", inputs=("enh",), losses=("cce",), repeats=1)
    said = capsys.readouterr()
    assert "grid: 1 run(s) of up to 20 epochs; 1 to train" in said.out + said.err
    assert calls[0][3]["progress"] is True
