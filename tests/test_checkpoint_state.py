"""What a checkpoint holds and gives back, on a tiny model with the callbacks driven by hand.

tests/test_checkpoint.py trains real runs and kills them (slow); here each field of the state, the
early stopping that survives a restart and each refusal is checked in a fraction of a second.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer import checkpoint
from trainer.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore_variables,
    resumable_callbacks,
)

IDENTITY = {"config_digest": "a", "store_identity": "b", "split": "c"}


def _model(units=3, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.fixture
def clock(monkeypatch):
    import time

    now = [1.0]  # small: a clock read with % instead of - then gives other seconds
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    return now


def _epoch(early, saver, epoch, val_loss, clock, seconds=2.0):
    saver.on_epoch_begin(epoch)
    clock[0] += seconds
    logs = {"loss": val_loss + 0.5, "val_loss": val_loss}
    early.on_epoch_end(epoch, logs)  # the early stopping comes first in fit's list: its decision is saved
    saver.on_epoch_end(epoch, logs)


def _started(model, path, state=None, patience=2):
    early, saver = resumable_callbacks(path, IDENTITY, patience, state)
    for callback in (early, saver):
        callback.set_model(model)
    early.on_train_begin()
    saver.on_train_begin()
    return early, saver


def test_every_epoch_writes_the_state_the_next_one_needs(tmp_path, clock):
    model, path = _model(), tmp_path / "checkpoint.npz"
    early, saver = _started(model, path)
    _epoch(early, saver, 0, 0.8, clock, seconds=2.5)
    best = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in best])
    _epoch(early, saver, 1, 0.9, clock, seconds=1.5)
    loaded = load_checkpoint(path, IDENTITY)
    state = {k: v for k, v in loaded["state"].items() if k != "best_weights"}
    assert state == {"epochs_done": 2, "history": {"loss": [1.3, 1.4], "val_loss": [0.8, 0.9]}, "seconds": 4.0,
                     "resumed_at": [], "stopped": False, "wait": 1, "best": 0.8, "best_epoch": 0,
                     "stopped_epoch": 0}
    assert all(np.array_equal(a, b) for a, b in zip(loaded["state"]["best_weights"], best, strict=True))
    assert all(np.array_equal(a, np.asarray(v)) for a, v in zip(loaded["model"], model.variables, strict=True))
    assert len(loaded["optimizer"]) == len(model.optimizer.variables) > 0


def test_a_stopped_run_saves_that_it_stopped(tmp_path, clock):
    model, path = _model(), tmp_path / "checkpoint.npz"
    early, saver = _started(model, path, patience=1)
    _epoch(early, saver, 0, 0.5, clock)
    _epoch(early, saver, 1, 0.6, clock)
    state = load_checkpoint(path, IDENTITY)["state"]
    assert state["stopped"] is True and state["stopped_epoch"] == 1 and state["wait"] == 1


def test_a_resumed_run_goes_on_from_the_saved_state(tmp_path, clock):
    model, path = _model(), tmp_path / "checkpoint.npz"
    early, saver = _started(model, path)
    _epoch(early, saver, 0, 0.8, clock)
    _epoch(early, saver, 1, 0.9, clock)
    state = load_checkpoint(path, IDENTITY)["state"]

    early, saver = _started(_model(seed=1), path, state)
    assert (early.wait, early.best, early.best_epoch, early.stopped_epoch) == (1, 0.8, 0, 0)
    assert all(np.array_equal(a, b) for a, b in zip(early.best_weights, state["best_weights"], strict=True))
    assert saver.history == state["history"] and saver.history is not state["history"]
    assert saver.seconds == 4.0 and saver.resumed_at == [2]
    _epoch(early, saver, 2, 0.95, clock, seconds=3.0)  # a second epoch without improvement: patience 2 stops
    again = load_checkpoint(path, IDENTITY)["state"]
    assert again["history"]["val_loss"] == [0.8, 0.9, 0.95] and again["seconds"] == 7.0
    assert again["stopped"] is True and again["epochs_done"] == 3 and again["resumed_at"] == [2]
    early, saver = _started(_model(), path, again)
    assert saver.resumed_at == [2, 3]
    assert state["history"]["val_loss"] == [0.8, 0.9]  # the state given was not changed in place


def test_a_run_without_improvement_yet_saves_no_best(tmp_path, clock):
    model, path = _model(), tmp_path / "checkpoint.npz"
    early, saver = _started(model, path)
    saver.on_epoch_begin(0)
    saver.on_epoch_end(0, None)  # no logs (nothing measured), no early-stopping decision yet
    state = load_checkpoint(path, IDENTITY)["state"]
    assert state["best_weights"] is None and state["history"] == {} and state["epochs_done"] == 1
    assert state["best"] == early.best  # Keras' start value (infinity): saved as it is, read back equal


def test_restore_puts_back_every_variable(tmp_path, clock):
    model, path = _model(), tmp_path / "checkpoint.npz"
    early, saver = _started(model, path)
    _epoch(early, saver, 0, 0.8, clock)
    fresh = _model(seed=5)
    restore_variables(fresh, load_checkpoint(path, IDENTITY))
    for a, b in zip(fresh.variables + fresh.optimizer.variables, model.variables + model.optimizer.variables,
                    strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("units", [5, 2])
def test_restore_refuses_a_checkpoint_of_another_model(tmp_path, clock, units):
    model, path = _model(), tmp_path / "checkpoint.npz"
    early, saver = _started(model, path)
    _epoch(early, saver, 0, 0.8, clock)
    loaded = load_checkpoint(path, IDENTITY)
    with pytest.raises(CheckpointError, match=r"^the checkpoint's model variable \S*dense\S*/kernel has shape \(4, 3\), "
                                              rf"the model \(4, {units}\)$"):
        restore_variables(_model(units=units), loaded)


@pytest.mark.parametrize("extra", [-1, 1])
def test_restore_refuses_a_checkpoint_of_another_variable_count(tmp_path, clock, extra):
    model, path = _model(), tmp_path / "checkpoint.npz"
    early, saver = _started(model, path)
    _epoch(early, saver, 0, 0.8, clock)
    loaded = load_checkpoint(path, IDENTITY)
    n = len(loaded["optimizer"])
    changed = {**loaded, "optimizer": (loaded["optimizer"] + loaded["optimizer"])[:n + extra]}
    with pytest.raises(CheckpointError, match=rf"^the checkpoint holds {n + extra} optimizer variables, the model "
                                              rf"{n}; delete it to train this run from its start$"):
        restore_variables(_model(), changed)


def test_a_model_of_hundreds_of_variables_is_restored(tmp_path, clock):
    """DenseNet121 has about 600 variables; counts above 256 are not shared objects in CPython."""
    import keras

    def deep():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), *[keras.layers.Dense(2) for _ in range(140)]])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        model.optimizer.build(model.trainable_variables)
        return model

    model, path = deep(), tmp_path / "checkpoint.npz"
    early, saver = _started(model, path)
    _epoch(early, saver, 0, 0.8, clock)
    fresh = deep()
    restore_variables(fresh, load_checkpoint(path, IDENTITY))
    assert len(fresh.variables) == 280 and np.array_equal(np.asarray(fresh.variables[-1]),
                                                          np.asarray(model.variables[-1]))


def test_the_checkpoint_format_is_version_1(tmp_path, clock):
    """A run resumed by the next release reads the checkpoints of this one: the number is kept until the
    format changes."""
    model, path = _model(), tmp_path / "checkpoint.npz"
    early, saver = _started(model, path)
    _epoch(early, saver, 0, 0.8, clock)
    with np.load(path) as data:
        assert json.loads(str(data["meta"]))["format"] == 1


@pytest.mark.parametrize("other", [0, 2])
def test_a_checkpoint_of_another_format_or_run_is_refused(tmp_path, clock, monkeypatch, other):
    model, path = _model(), tmp_path / "checkpoint.npz"
    monkeypatch.setattr(checkpoint, "_FORMAT", other)
    early, saver = _started(model, path)
    _epoch(early, saver, 0, 0.8, clock)
    monkeypatch.setattr(checkpoint, "_FORMAT", 1)
    with pytest.raises(CheckpointError, match=r"belongs to a run with other settings \(format\); resume it as it "
                                              r"was run, or delete it to train this run from its start$"):
        load_checkpoint(path, IDENTITY)
    _epoch(early, saver, 1, 0.8, clock)
    with pytest.raises(CheckpointError, match=r"other settings \(store identity b -> x, the checkpoint's first\)"):
        load_checkpoint(path, {**IDENTITY, "store_identity": "x"})
    with pytest.raises(CheckpointError, match=r"other settings \(threads per run \(not recorded\) -> 2, the "
                                              r"checkpoint's first\); resume"):
        load_checkpoint(path, {**IDENTITY, "threads": 2})
    checkpoint.save_checkpoint(path, model, "an identity of an earlier version", {"best_weights": None})
    with pytest.raises(CheckpointError, match=r"other settings \(format\); resume"):
        load_checkpoint(path, IDENTITY)
