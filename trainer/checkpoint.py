"""Per-epoch checkpoints, so that a run killed mid-training resumes to the same weights.

After every epoch a run writes ``checkpoint.npz`` into its folder (atomically: a
half-written checkpoint is never seen). It holds everything the next epoch
depends on:

* every model variable, including the dropout layers' random-generator state;
* every optimizer variable (step count, Adam's moments);
* the early-stopping state (epochs without improvement, best loss, best epoch and
  the best weights it would restore);
* the history so far, the training seconds spent, and what the run is (its
  config digest, the store identity, the split, the thread count and the Keras
  backend: :func:`trainer.experiment.run_identity`), so a checkpoint of another
  run, or of this run computed elsewhere, is refused rather than resumed.

The training batches are drawn with ``default_rng((seed, epoch))`` (see
:class:`trainer.data.StoreBatches`), so the data order of epoch ``e`` needs only
``e``. A resumed run therefore trains bit-identical weights to an uninterrupted
one on the same machine and thread count (``tests/test_checkpoint.py``, ``tests/test_grid.py``). The checkpoint
is deleted once the run's ``result.json`` is written.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from phasefeat.io._atomic import atomic_path
from phasefeat.io.identity import describe_difference

__all__ = ["CHECKPOINT", "CheckpointError", "save_checkpoint", "load_checkpoint", "restore_variables",
           "resumable_callbacks"]

CHECKPOINT = "checkpoint.npz"
_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed (damaged, or of another run)."""


def _values(variables) -> list[np.ndarray]:
    import keras

    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]


def save_checkpoint(path, model, identity: dict, state: dict) -> None:
    """Write the model, its optimizer and ``state`` (JSON-able) to ``path`` atomically.

    ``state["best_weights"]`` (a list of arrays, or None) is stored as arrays.
    """
    state = dict(state)
    best = state.pop("best_weights", None)
    arrays = {}
    for prefix, values in (("v", _values(model.variables)), ("o", _values(model.optimizer.variables)),
                           ("b", best or [])):
        for k, value in enumerate(values):
            arrays[f"{prefix}{k}"] = value
    meta = {"format": _FORMAT, "identity": identity, "state": state, "counts": {
        "v": len(model.variables), "o": len(model.optimizer.variables), "b": len(best or [])}}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta, default=float)), **arrays)


def load_checkpoint(path, identity: dict) -> dict | None:
    """The checkpoint at ``path`` as ``{"state", "model", "optimizer"}`` (the best weights in
    ``state["best_weights"]``), or None.

    Raises
    ------
    CheckpointError
        The file is damaged, or was written by a run with another identity.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        # Opened here: np.load leaves its own handle open when the zip directory is damaged.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            counts = meta["counts"]
            parts = {key: [data[f"{key}{k}"] for k in range(counts[key])] for key in ("v", "o", "b")}
    # What a truncated file or a flipped byte raises: zipfile's own errors are neither OSError
    # nor ValueError (tests/test_checkpoint.py damages a checkpoint byte by byte).
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
            zlib.error):
        raise CheckpointError(f"{path} is damaged; delete it to train this run from its start") from None
    recorded = meta.get("identity")
    if meta.get("format") != _FORMAT or recorded != identity:
        differ = describe_difference(recorded, identity) if isinstance(recorded, dict) else ""
        order = ", the checkpoint's first" if "->" in differ else ""
        raise CheckpointError(f"{path} belongs to a run with other settings ({differ or 'format'}{order}); "
                              "resume it as it was run, or delete it to train this run from its start")
    state = meta["state"]
    state["best_weights"] = parts["b"] or None
    return {"state": state, "model": parts["v"], "optimizer": parts["o"]}


def restore_variables(model, checkpoint: dict) -> None:
    """Put the checkpoint's model and optimizer variables into a freshly built, compiled model."""
    model.optimizer.build(model.trainable_variables)
    for kind, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        values = checkpoint[kind]
        if len(values) != len(variables):
            raise CheckpointError(f"the checkpoint holds {len(values)} {kind} variables, the model "
                                  f"{len(variables)}; delete it to train this run from its start")
        for variable, value in zip(variables, values, strict=True):
            if tuple(variable.shape) != value.shape:
                raise CheckpointError(f"the checkpoint's {kind} variable {variable.path} has shape "
                                      f"{value.shape}, the model {tuple(variable.shape)}")
            variable.assign(value)


def resumable_callbacks(path, identity: dict, patience: int, state: dict | None):
    """An early-stopping callback that can start from ``state``, and the callback that checkpoints.

    Returns ``(early_stopping, checkpointer)``; the checkpointer must come after the early
    stopping in ``fit``'s callback list, so that each checkpoint includes that epoch's decision.
    ``checkpointer.history``, ``checkpointer.seconds`` and ``checkpointer.resumed_at`` hold the
    whole run's history, training time and the epochs it was resumed at, across resumes.
    """
    import time

    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """Keras' early stopping, whose state survives a restart of ``fit``."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if state is not None:
                self.wait, self.best = state["wait"], state["best"]
                self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]
                self.best_weights = state["best_weights"]

    class EpochCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            before = state or {}
            self.history = {k: list(v) for k, v in before.get("history", {}).items()}
            self.seconds = before.get("seconds", 0.0)
            self.resumed_at = [*before.get("resumed_at", []), before["epochs_done"]] if state else []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            self.seconds += time.perf_counter() - self._start
            stop = early
            save_checkpoint(path, self.model, identity, {
                "epochs_done": epoch + 1, "history": self.history, "seconds": self.seconds,
                "resumed_at": self.resumed_at,
                "stopped": bool(self.model.stop_training), "wait": stop.wait,
                "best": None if stop.best is None else float(stop.best), "best_epoch": stop.best_epoch,
                "stopped_epoch": stop.stopped_epoch, "best_weights": stop.best_weights})

    early = ResumableEarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    return early, EpochCheckpoint()
