"""Per-epoch checkpoints: an interrupted run resumes to the weights of an uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer import checkpoint
from trainer.experiment import RunConfig, RunFailed, train_run

# Augmentation and dropout draw random numbers every epoch; the data order depends on the epoch.
# At this rate early stopping ends the run within a few epochs, but at which one depends on the data and
# on the CPU's kernels (oneDNN picks them by instruction set): after epoch 3 on the phantoms, after epoch 4
# on the real radiographs on one 2-core AMD EPYC and after epoch 5 on another (AVX-512). The cut points
# follow from the run's own best epoch, and the epoch limit leaves room for an early stop far later.
CFG = RunConfig(input="enh", loss="cce", width=0.125, epochs=10, patience=2, batch_size=16, augment=True,
                learning_rate=1e-2)


class Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch, epochs_done: int):
    """Make the run stop right after writing the checkpoint of epoch ``epochs_done``, as a kill would."""
    real = checkpoint.save_checkpoint

    def save_then_stop(path, model, identity, state):
        real(path, model, identity, state)
        if state["epochs_done"] == epochs_done:
            raise Interrupted

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_stop)


@pytest.fixture(scope="module")
def uninterrupted(store, tmp_path_factory):
    return train_run(store, CFG, tmp_path_factory.mktemp("whole") / "run", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["first epoch", "inside the patience"])
def test_a_resumed_run_equals_an_uninterrupted_one(store, tmp_path, monkeypatch, uninterrupted, cut):
    """A cut after epoch 1, and one after the epoch following the best: the resumed run must carry
    the best weights and a non-zero patience count across (whatever data the store holds)."""
    best = int(np.argmin(uninterrupted["history"]["val_loss"])) + 1  # epochs done at the best
    assert uninterrupted["epochs_run"] == best + CFG.patience < CFG.epochs, "the case needs an early stop"
    epochs_done = 1 if cut == "first epoch" else best + 1
    run = tmp_path / "run"
    _interrupt_after(monkeypatch, epochs_done)
    with pytest.raises(Interrupted):
        train_run(store, CFG, run, progress=False)
    assert (run / "checkpoint.npz").exists() and not (run / "result.json").exists()
    if cut == "inside the patience":
        state = checkpoint.load_checkpoint(run / "checkpoint.npz", _identity_of(run))["state"]
        assert state["wait"] == 1 and state["best_weights"] is not None
    monkeypatch.undo()
    resumed = train_run(store, CFG, run, progress=False)
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["test_loss"] == uninterrupted["test_loss"]
    assert resumed["resumed_at_epochs"] == [epochs_done] and uninterrupted["resumed_at_epochs"] == []
    assert not (run / "checkpoint.npz").exists()  # removed once the result is written


def _identity_of(run) -> dict:
    """The identity a checkpoint in ``run`` was written with (read back without checking it)."""
    with np.load(run / "checkpoint.npz") as data:
        return json.loads(str(data["meta"]))["identity"]


@pytest.mark.slow
def test_a_run_killed_after_early_stopping_restores_its_best_weights(store, tmp_path, monkeypatch):
    cfg = RunConfig(input="cxr", loss="scce", width=0.125, epochs=6, patience=1, batch_size=16,
                    learning_rate=3e-2)
    whole = train_run(store, cfg, tmp_path / "whole", progress=False)
    stopped = whole["epochs_run"]
    assert stopped < cfg.epochs, "the case needs a run that stops early"
    assert np.argmin(whole["history"]["val_loss"]) < stopped - 1  # the best epoch is not the last
    _interrupt_after(monkeypatch, stopped)  # killed between its last checkpoint and its result
    with pytest.raises(Interrupted):
        train_run(store, cfg, tmp_path / "cut", progress=False)
    monkeypatch.undo()
    resumed = train_run(store, cfg, tmp_path / "cut", progress=False)
    assert resumed["weights_sha256"] == whole["weights_sha256"] and resumed["epochs_run"] == stopped


@pytest.mark.slow
def test_damaged_and_foreign_checkpoints_fail_the_run_with_their_reason(store, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"half a file")
    with pytest.raises(RunFailed, match=r"checkpoint.npz is damaged; delete it to train this run from its start"):
        train_run(store, CFG, run, progress=False)
    (run / "checkpoint.npz").unlink()
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        train_run(store, CFG, run, progress=False)
    monkeypatch.undo()
    other = RunConfig(**{**CFG.__dict__, "learning_rate": 1e-3})
    with pytest.raises(RunFailed, match=r"belongs to a run with other settings \(run settings differ\); "
                                        r"resume it as it was run, or delete it"):
        train_run(store, other, run, progress=False)


@pytest.mark.slow
def test_a_checkpoint_of_another_thread_count_is_refused_with_the_counts(store, tmp_path, monkeypatch):
    """TensorFlow on a CPU is bit-reproducible at one thread count only: resuming a 1-thread run
    with 2 threads would give weights that match neither run, so it is refused, saying both."""
    run = tmp_path / "run"
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        train_run(store, CFG, run, progress=False, threads=1)
    monkeypatch.undo()
    with pytest.raises(RunFailed, match=r"other settings \(threads per run 1 -> 2, the checkpoint's first\)"):
        train_run(store, CFG, run, progress=False, threads=2)
    with pytest.raises(RunFailed, match=r"threads per run 1 -> \(not recorded\)"):
        train_run(store, CFG, run, progress=False)
    assert train_run(store, CFG, run, progress=False, threads=1)["resumed_at_epochs"] == [1]


def _damaged_copies(data: bytes):
    """Truncations and single flipped bytes of a checkpoint, spread over the whole file."""
    for end in (0, 10, len(data) // 2, len(data) - 1):
        yield f"truncated to {end} bytes", data[:end]
    for at in np.linspace(0, len(data) - 1, 40).astype(int):
        yield f"byte {at} flipped", data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path):
    """A truncated file or a flipped byte raised zipfile.BadZipFile past the run (a traceback in log.txt)."""
    import keras

    from trainer.model import classifier

    model = classifier("vgg16", (32, 32, 1), 3, width=0.0625)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    identity = {"config_digest": "a"}
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_checkpoint(path, model, identity, {"epochs_done": 1, "best_weights": None})
    data = path.read_bytes()
    refusals = {}
    for what, damaged in _damaged_copies(data):
        path.write_bytes(damaged)
        try:
            loaded = checkpoint.load_checkpoint(path, identity)
        except checkpoint.CheckpointError as exc:
            refusals[what] = str(exc)
            continue
        # a flipped byte inside an array's values is not seen by the file's structure
        assert loaded["state"]["epochs_done"] == 1, what
    assert all(m.endswith("is damaged; delete it to train this run from its start") for m in refusals.values())
    assert all(f"truncated to {n} bytes" in refusals for n in (0, 10, len(data) // 2, len(data) - 1))
    assert len(refusals) >= 20  # the flips in headers, the zip directory and the checksums too


def test_a_checkpoint_round_trips_its_state(tmp_path):
    import keras

    from trainer.model import classifier

    model = classifier("vgg16", (32, 32, 3), 3, width=0.125)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    identity = {"config_digest": "a", "store_identity": "b", "split": "c"}
    best = [w + 1 for w in model.get_weights()]
    state = {"epochs_done": 2, "history": {"loss": [1.0, 0.5]}, "seconds": 3.5, "stopped": False, "wait": 1,
             "best": 0.25, "best_epoch": 0, "stopped_epoch": 0, "resumed_at": [], "best_weights": best}
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_checkpoint(path, model, identity, state)
    loaded = checkpoint.load_checkpoint(path, identity)
    assert {k: v for k, v in loaded["state"].items() if k != "best_weights"} == \
        {k: v for k, v in state.items() if k != "best_weights"}
    assert all(np.array_equal(a, b) for a, b in zip(loaded["state"]["best_weights"], best, strict=True))
    assert len(loaded["model"]) == len(model.variables)
    assert len(loaded["optimizer"]) == len(model.optimizer.variables)
    with pytest.raises(checkpoint.CheckpointError, match=r"other settings \(split c -> d, the checkpoint.s first\)"):
        checkpoint.load_checkpoint(path, {**identity, "split": "d"})
    assert checkpoint.load_checkpoint(tmp_path / "none.npz", identity) is None
    assert not list(tmp_path.glob("*.partial"))  # written under a temporary name, then renamed
    assert json.loads(json.dumps(loaded["state"]["history"])) == state["history"]  # plain JSON types


@pytest.mark.slow
def test_a_diverging_run_fails_with_its_reason(store, tmp_path):
    cfg = RunConfig(input="enh", loss="cce", width=0.125, epochs=2, batch_size=16, optimizer="sgd",
                    learning_rate=1e30)
    with pytest.raises(RunFailed, match=r"the training loss became nan in epoch 1, batch \d+: the run "
                                        r"diverged \(try a lower --learning-rate\)"):
        train_run(store, cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "result.json").exists()


def test_a_store_other_than_the_planned_one_fails_the_run_before_it_trains(store, tmp_path):
    """A worker whose file at the store's path is another store (or a store changed mid-grid)."""
    with pytest.raises(RunFailed, match="is not the store this grid was planned on"):
        train_run(store, CFG, tmp_path / "run", progress=False, expected_identity="another store")
    assert not (tmp_path / "run").exists()
