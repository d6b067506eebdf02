"""What a run tells its user while it trains: the bar, time estimates, warnings, the device.

Kept apart from :mod:`trainer.experiment` (what a run is and does) so that the run reads
top to bottom; every function here only reports, except :func:`nan_guard`, which stops a
diverging run with its reason.
"""

from __future__ import annotations

import math
import time

import numpy as np

__all__ = ["TrainingDiverged", "ESTIMATE_AFTER", "ESTIMATE_EPOCH_S", "SLOW_EPOCH_S", "CPU_VGG16_299_IMAGES_PER_S",
           "epoch_estimate", "grid_estimate", "runs_left_estimate", "cpu_warning", "epoch_bar", "nan_guard",
           "training_device"]


#: Batches timed (after the first, which compiles) before the epoch estimate is printed.
ESTIMATE_AFTER = 3
#: Epochs longer than this get a printed estimate; above SLOW_EPOCH_S it comes with a hint.
ESTIMATE_EPOCH_S = 60
SLOW_EPOCH_S = 300


def epoch_estimate(name: str, seconds_per_batch: float, batches: int, epochs: int) -> str:
    """One line: the estimated time of an epoch and of the run, with a hint when that is long."""
    epoch = seconds_per_batch * batches
    line = (f"{name}: about {_duration(epoch)} per epoch ({batches} batches at {seconds_per_batch:.2f} s), "
            f"up to {_duration(epoch * epochs)} for {epochs} epochs")
    if epoch > SLOW_EPOCH_S:
        line += ("; for a quick look on a CPU use --width 0.125 and --image-size 128 "
                 "(docs/reproducing-the-paper.md has the times)")
    return line


def grid_estimate(name: str, first_epoch_s: float, steady_epoch_s: float, epochs: int, done: int,
                  runs_after: int) -> str:
    """One line after a grid's first two trained epochs: the time this run and the runs after it may take.

    The first epoch of every run includes building and compiling its model; the second is the
    steady rate. An upper bound: every run to its last epoch (early stopping usually ends sooner).
    """
    start_up = max(first_epoch_s - steady_epoch_s, 0.0)
    this = steady_epoch_s * (epochs - done - 2)
    rest = (start_up + steady_epoch_s * epochs) * runs_after
    return (f"{name}: first epoch {_duration(first_epoch_s)} (it includes compiling the model), second "
            f"{_duration(steady_epoch_s)}; at that rate, if every run trains to its last epoch, this run needs "
            f"about {_duration(this)} more and the {runs_after} run(s) after it about {_duration(rest)} (about "
            f"{_duration(this + rest)} in all; early stopping usually ends runs sooner, and the estimate after "
            "this run counts that)")


def runs_left_estimate(name: str, seconds: float, epochs_run: int, runs_left: int, at_once: int = 1) -> str:
    """One line after a grid's first finished run: the runs left, at that run's time each (it
    stopped where early stopping stopped it, so this counts early stopping as that run met it)."""
    waves = -(-runs_left // max(at_once, 1))
    at = f", {at_once} at a time" if at_once > 1 else ""
    return (f"{name} took {_duration(seconds)} ({epochs_run} epoch(s)); at that time each, the {runs_left} run(s) "
            f"left need about {_duration(waves * seconds)}{at} (runs that stop later or sooner change it)")


#: Training images/s of full-width VGG16 at 299x299 on the 2-core development VM's CPU
#: (benchmarks/results/backbones-cpu.json, 2026-12-01): the basis of the CPU warning.
CPU_VGG16_299_IMAGES_PER_S = 1.29


def cpu_warning(cfg, device: str, n_train: int, size: tuple[int, int]) -> str | None:
    """A warning before a full-width VGG16 run trains on a CPU, with the time to expect; else None.

    The estimate scales the recorded CPU rate by the image's pixel count (the convolutions'
    cost) and counts training images only; the measured time per epoch follows after a few batches.
    """
    if device != "CPU" or cfg.model != "vgg16" or cfg.width != 1.0:
        return None
    rate = CPU_VGG16_299_IMAGES_PER_S * (299 * 299) / (size[0] * size[1])
    epoch = n_train / rate
    return (f"warning: full-width VGG16 at {size[0]}x{size[1]} is training on a CPU: about {_duration(epoch)} "
            f"per epoch, up to {_duration(epoch * cfg.epochs)} for {cfg.epochs} epochs, by the rate measured on "
            "a 2-core VM (docs/benchmarks.md); a GPU takes minutes (README: extras train-gpu or jax-gpu), and "
            "--width 0.125 --image-size 128 gives a quick look on a CPU")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 600:  # "2 min" would say anything from 90 to 149 s
        return f"{seconds / 60:.1f} min"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def epoch_bar(name: str, epochs: int, enabled: bool, initial: int = 0, runs_after: int = 0):
    """The run's bar; with ``runs_after`` (runs of the grid still to train after this one) it
    prints :func:`grid_estimate` once the first epoch has ended."""
    import keras
    from tqdm import tqdm

    class EpochBar(keras.callbacks.Callback):
        """One tqdm bar per run: epochs done, with the latest losses, and an early time estimate."""

        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, initial=initial, desc=name, unit="epoch", leave=False,
                            disable=not enabled)
            self.batch_start, self.times, self.estimated = None, [], False
            self.started, self.epoch_times = time.perf_counter(), []

        def on_train_batch_begin(self, batch, logs=None):
            self.batch_start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if self.estimated or self.batch_start is None:
                return
            self.times.append(time.perf_counter() - self.batch_start)
            if len(self.times) > ESTIMATE_AFTER:  # the first batch pays for tracing and compiling
                steps = self.params.get("steps") or 0
                per_batch = float(np.median(self.times[1:]))
                if steps and per_batch * steps > ESTIMATE_EPOCH_S:
                    self.bar.write(epoch_estimate(name, per_batch, steps, epochs))
                self.estimated = True

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.epoch_times.append(now - self.started)
            self.started = now
            if epoch == initial + 1 and runs_after and enabled:  # the second epoch runs at the steady rate
                self.bar.write(grid_estimate(name, *self.epoch_times, epochs, initial, runs_after))
            logs = logs or {}
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if "loss" in k}, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochBar()



class TrainingDiverged(RuntimeError):
    """The training loss stopped being a finite number."""


def nan_guard():
    import keras

    class NaNGuard(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise TrainingDiverged(f"the training loss became {float(loss)} in epoch {self.epoch + 1}, batch "
                                f"{batch + 1}: the run diverged (try a lower --learning-rate)")

    return NaNGuard()



def training_device() -> str:
    """What the model trained on: the accelerator's name, or ``"CPU"``."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        elif backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "cpu":
                return device.device_kind
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
    except (RuntimeError, ValueError):  # a broken driver: the run itself says more
        pass
    return "CPU"
