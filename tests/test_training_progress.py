"""What a training run tells its user (trainer.progress): estimates, the bar, the NaN guard, the device.

The callbacks are driven by hand with a clock set here, so each line is checked word for word
without training a model.
"""

from __future__ import annotations

import sys
import types

import pytest

from trainer import progress
from trainer.experiment import RunConfig
from trainer.progress import (
    SLOW_EPOCH_S,
    TrainingDiverged,
    cpu_warning,
    epoch_bar,
    epoch_estimate,
    grid_estimate,
    nan_guard,
    runs_left_estimate,
    training_device,
)


@pytest.mark.parametrize(("seconds", "said"), [
    (0.4, "0 s"), (89.4, "89 s"), (90, "1.5 min"), (599, "10.0 min"), (600, "10 min"), (5399, "90 min"),
    (5400, "1.5 h"), (36000, "10.0 h"), (7379.64, "2.0 h"), (7380.18, "2.1 h"),  # 2.0499 and 2.05005 hours
])
def test_durations_are_said_in_the_unit_that_reads_best(seconds, said):
    assert progress._duration(seconds) == said


def test_epoch_estimate_line():
    slow = epoch_estimate("enh-cce-r0", 6.7, 465, 20)
    assert slow == ("enh-cce-r0: about 52 min per epoch (465 batches at 6.70 s), up to 17.3 h for 20 epochs; for a "
                    "quick look on a CPU use --width 0.125 and --image-size 128 (docs/reproducing-the-paper.md has "
                    "the times)")
    assert epoch_estimate("cxr-cce-r0", 0.2, 10, 5) == ("cxr-cce-r0: about 2 s per epoch (10 batches at 0.20 s), up "
                                                        "to 10 s for 5 epochs")


def test_the_hint_comes_only_above_five_minutes_an_epoch():
    assert SLOW_EPOCH_S == 300
    assert "--width" not in epoch_estimate("r", 2.99, 100, 1)
    assert "--width" not in epoch_estimate("r", 3.0, 100, 1)
    assert "--width" in epoch_estimate("r", 3.01, 100, 1)


def test_grid_estimate_is_the_steady_epoch_scaled():
    """The first epoch includes compiling (an estimate from it ran 5-20x long): the second sets the rate,
    and every later run pays the compiling once more."""
    assert grid_estimate("enh-cce-r0", 150.0, 120.0, 20, 0, 11) == (
        "enh-cce-r0: first epoch 2.5 min (it includes compiling the model), second 2.0 min; at that rate, if "
        "every run trains to its last epoch, this run needs about 36 min more and the 11 run(s) after it about "
        "7.4 h (about 8.0 h in all; early stopping usually ends runs sooner, and the estimate after this run "
        "counts that)")  # 18 x 120 s; 11 x (30 + 20 x 120) s
    assert "this run needs about 32 min more" in grid_estimate("enh-cce-r0", 150.0, 120.0, 20, 2, 1)  # resumed


def test_a_first_epoch_quicker_than_the_second_adds_no_start_up():
    assert "the 2 run(s) after it about 40 min" in grid_estimate("r", 100.0, 120.0, 10, 0, 2)  # 2 x 10 x 120 s
    assert "the 2 run(s) after it about 60 s" in grid_estimate("r", 20.0, 30.0, 1, 0, 2)  # nothing for start-up


@pytest.mark.parametrize(("at_once", "said"), [
    (1, "need about 1.9 h (runs"), (2, "need about 60 min, 2 at a time"), (0, "need about 1.9 h (runs"),
    (23, "need about 5.0 min, 23 at a time"), (30, "need about 5.0 min, 30 at a time")])
def test_runs_left_are_counted_in_waves(at_once, said):
    line = runs_left_estimate("cxr-cce-r0", 300.0, 7, 23, at_once=at_once)
    assert line.startswith("cxr-cce-r0 took 5.0 min (7 epoch(s)); at that time each, the 23 run(s) left ")
    assert said in line and line.endswith("(runs that stop later or sooner change it)")
    assert runs_left_estimate("cxr-cce-r0", 300.0, 7, 23) == runs_left_estimate("cxr-cce-r0", 300.0, 7, 23, 1)


def test_a_full_width_run_on_a_cpu_is_warned_with_its_time():
    study = RunConfig(epochs=20)  # full-width VGG16, the study's 9,156 training images at 299 px
    assert cpu_warning(study, "CPU", 9156, (299, 299)) == (
        "warning: full-width VGG16 at 299x299 is training on a CPU: about 2.0 h per epoch, up to 39.4 h for 20 "
        "epochs, by the rate measured on a 2-core VM (docs/benchmarks.md); a GPU takes minutes (README: extras "
        "train-gpu or jax-gpu), and --width 0.125 --image-size 128 gives a quick look on a CPU")
    assert "at 299x150 is training on a CPU: about 59 min per epoch" in cpu_warning(study, "CPU", 9156, (299, 150))
    assert "about 90 s per epoch" in cpu_warning(study, "CPU", 116, (299, 299))  # 89.9 s, not cut to 89
    assert cpu_warning(study, "NVIDIA H100 80GB HBM3", 9156, (299, 299)) is None
    assert cpu_warning(study, "AMD Instinct MI300X", 9156, (299, 299)) is None
    assert cpu_warning(RunConfig(width=0.125), "CPU", 9156, (299, 299)) is None
    assert cpu_warning(RunConfig(model="resnet50"), "CPU", 9156, (299, 299)) is None


# -- the bar, driven by hand --------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 7.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    return clock


def _batches(bar, clock, seconds):
    for k, s in enumerate(seconds):
        bar.on_train_batch_begin(k)
        clock.now += s
        bar.on_train_batch_end(k)


def _started(steps, clock, **kwargs):
    bar = epoch_bar("enh-cce-r0", 5, **kwargs)
    bar.set_params({"steps": steps, "epochs": 5})
    bar.on_train_begin()
    return bar


@pytest.mark.parametrize("enabled", [True, False])
def test_the_epoch_estimate_comes_after_the_first_batches_without_the_first(clock, capsys, enabled):
    bar = _started(100, clock, enabled=enabled)
    _batches(bar, clock, [100.0, 1.0, 1.0])
    assert capsys.readouterr().out == ""  # three batches: not yet
    _batches(bar, clock, [2.0, 50.0, 50.0])
    assert capsys.readouterr().out == f"{epoch_estimate('enh-cce-r0', 1.0, 100, 5)}\n"  # median of 1, 1, 2; once
    bar.on_train_end()


def test_each_batch_is_timed_from_its_own_start(clock, capsys):
    bar = _started(100, clock, enabled=False)
    _batches(bar, clock, [1.0, 1.0, 30.0, 30.0])  # the later batches last longer than the clock had run
    assert capsys.readouterr().out == f"{epoch_estimate('enh-cce-r0', 30.0, 100, 5)}\n"


def test_an_epoch_just_over_a_minute_gets_its_estimate(clock, capsys):
    bar = _started(121, clock, enabled=False)
    _batches(bar, clock, [9.0, 0.5, 0.5, 0.5])  # 121 batches of 0.5 s: 60.5 s
    assert capsys.readouterr().out == f"{epoch_estimate('enh-cce-r0', 0.5, 121, 5)}\n"


@pytest.mark.parametrize("steps", [60, 50])
def test_a_quick_epoch_gets_no_estimate(clock, capsys, steps):
    bar = _started(steps, clock, enabled=False)
    _batches(bar, clock, [9.0, 1.0, 1.0, 1.0, 1.0])  # batches of 1 s: not above a minute
    assert capsys.readouterr().out == ""


def test_without_a_batch_count_there_is_nothing_to_scale(clock, capsys):
    bar = _started(None, clock, enabled=False)
    _batches(bar, clock, [100.0, 100.0, 100.0, 100.0])
    assert capsys.readouterr().out == ""


def test_a_batch_end_without_its_start_is_not_timed(clock, capsys):
    bar = _started(1000, clock, enabled=False)
    for k in range(5):
        clock.now += 5.0
        bar.on_train_batch_end(k)
    assert bar.times == [] and capsys.readouterr().out == ""


@pytest.mark.parametrize("initial", [0, 1, 2, 300])
def test_the_grid_estimate_follows_the_second_epoch_trained(clock, capsys, initial):
    bar = epoch_bar("enh-cce-r0", 310, True, initial=initial, runs_after=3)
    bar.set_params({"steps": 4, "epochs": 310})
    bar.on_train_begin()
    for epoch, seconds in zip(range(initial, initial + 3), [150.0, 120.0, 500.0], strict=True):
        clock.now += seconds
        bar.on_epoch_end(epoch, {"loss": 0.123456, "val_loss": 0.5, "accuracy": 0.9})
    assert capsys.readouterr().out == f"{grid_estimate('enh-cce-r0', 150.0, 120.0, 310, initial, 3)}\n"
    assert bar.bar.n == initial + 3 and bar.bar.postfix == "loss=0.1235, val_loss=0.5000"
    bar.on_train_end()


@pytest.mark.parametrize(("enabled", "runs_after"), [(False, 3), (True, 0), (True, None)])
def test_no_grid_estimate_without_runs_after_or_with_the_bar_off(clock, capsys, enabled, runs_after):
    bar = epoch_bar("r", 10, enabled) if runs_after is None else epoch_bar("r", 10, enabled, runs_after=runs_after)
    bar.set_params({"steps": 4})
    bar.on_train_begin()
    for epoch in range(3):
        clock.now += 100.0
        bar.on_epoch_end(epoch)
    assert capsys.readouterr().out == "" and bar.bar.n == (3 if enabled else 0)  # a disabled bar does not count


def test_the_bar_shows_new_losses_with_their_epoch_and_leaves_no_line_behind(clock, capsys):
    bar = epoch_bar("enh-cce-r0", 10, True)
    bar.set_params({"steps": 4})
    bar.on_train_begin()
    bar.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.25})
    frames = capsys.readouterr().err.split("\r")
    assert not any(" 0/10 " in frame and "loss=0.5000" in frame for frame in frames)  # no frame of the old count
    assert bar.bar.leave is False  # a finished run's bar is removed: the grid prints one line per run
    bar.on_train_end()


# -- the NaN guard ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", [float("nan"), float("inf"), -float("inf")])
def test_a_loss_that_is_not_finite_stops_the_run_with_where(loss):
    guard = nan_guard()
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(3, {"loss": 0.7})
    with pytest.raises(TrainingDiverged) as stopped:
        guard.on_train_batch_end(5, {"loss": loss})
    assert str(stopped.value) == (f"the training loss became {loss} in epoch 3, batch 6: the run diverged (try a "
                                  "lower --learning-rate)")


def test_a_batch_without_a_loss_passes_the_guard():
    guard = nan_guard()
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(0, None)
    guard.on_train_batch_end(1, {"accuracy": float("nan")})


# -- the device ---------------------------------------------------------------------------------------------

def _backend(monkeypatch, name):
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: name)


def test_a_tensorflow_gpu_is_named(monkeypatch):
    import tensorflow as tf

    _backend(monkeypatch, "tensorflow")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["gpu0", "gpu1"] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"device_name": f"NVIDIA H100 ({device})"})
    assert training_device() == "NVIDIA H100 (gpu0)"
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: {})
    assert training_device() == "GPU"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [])
    assert training_device() == "CPU"


def test_a_broken_driver_reads_as_the_cpu(monkeypatch):
    import tensorflow as tf

    _backend(monkeypatch, "tensorflow")

    def broken(kind):
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setattr(tf.config, "list_physical_devices", broken)
    assert training_device() == "CPU"


@pytest.mark.parametrize(("platform", "said"), [("gpu", "H200"), ("cpu", "CPU"), ("METAL", "H200")])
def test_a_jax_device_is_named(monkeypatch, platform, said):
    _backend(monkeypatch, "jax")
    fake = types.SimpleNamespace(devices=lambda: [types.SimpleNamespace(platform=platform, device_kind="H200"),
                                                  types.SimpleNamespace(platform=platform, device_kind="H100")])
    monkeypatch.setitem(sys.modules, "jax", fake)
    assert training_device() == said


@pytest.mark.parametrize(("available", "said"), [(True, "NVIDIA A100 #0"), (False, "CPU")])
def test_a_torch_device_is_named(monkeypatch, available, said):
    _backend(monkeypatch, "torch")
    cuda = types.SimpleNamespace(is_available=lambda: available, get_device_name=lambda k: f"NVIDIA A100 #{k}")
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert training_device() == said


@pytest.mark.parametrize("backend", ["numpy", "openvino"])
def test_another_backend_reads_as_the_cpu(monkeypatch, backend):
    _backend(monkeypatch, backend)
    cuda = types.SimpleNamespace(is_available=lambda: True, get_device_name=lambda k: "a GPU torch would use")
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))  # not asked: not this backend
    assert training_device() == "CPU"
