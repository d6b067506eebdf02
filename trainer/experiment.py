"""One training run, and the paired grid of runs that compares losses and inputs.

Reads top to bottom: load the store's labels -> split -> normalisation stats ->
seeded model -> fit -> evaluate -> metrics -> files. Every arm of a grid uses
the same split, the same seed for repeat k (so the same initial weights and
batch order), and its result lands in its own folder as soon as it finishes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from .losses import class_weights, get_loss
from .metrics import classification_metrics
from .splits import Split, make_split

__all__ = ["RunConfig", "GridError", "prepare_split", "train_run", "run_grid", "run_name"]


class GridError(ValueError):
    """The experiment cannot run as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run (and must match to reuse a finished one)."""

    input: str = "enh"
    loss: str = "cce"
    seed: int = 0
    split_seed: int = 0
    epochs: int = 20
    batch_size: int = 16
    image_size: int | None = None
    width: float = 1.0
    learning_rate: float = 1e-4
    optimizer: str = "adam"
    patience: int = 5
    deterministic: bool = True
    jit_compile: bool = False
    mixed_precision: bool = False
    augment: bool = False
    test_fraction: float = 0.3
    val_fraction: float = 0.3
    head_units: int = 256
    head_activation: str = "relu"
    dropout: float = 0.5
    focal_gamma: float = 2.0
    weights: str | None = None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()


def run_name(cfg: RunConfig, repeat: int) -> str:
    return f"{cfg.input}-{cfg.loss}-r{repeat}"


def _store_info(store_path, what):
    from phasefeat.store import StoreError, open_store

    try:
        with open_store(store_path) as store:
            if what not in ("cxr", "enh"):
                raise GridError(f"input must be cxr or enh, got {what!r}")
            info = {"labels": store.labels.copy(), "class_names": store.class_names,
                    "patient_ids": store.patient_ids, "shape": store.shape(what),
                    "dtype": store.dtype(what),
                    "params_digest": store.attrs.get("params_digest", "")}
    except StoreError as exc:
        raise GridError(str(exc)) from None
    n = len(info["class_names"])
    if len(info["labels"]) == 0:
        raise GridError(f"{store_path} holds no samples")
    if info["labels"].min() < 0 or info["labels"].max() >= n:
        raise GridError(f"labels outside 0..{n - 1} in {store_path}")
    return info


def prepare_split(store_path, cfg: RunConfig, info: dict | None = None) -> Split:
    """The split of ``cfg`` (``info``: the store's labels and patients, if already read)."""
    from .splits import SplitError

    info = info or _store_info(store_path, cfg.input)
    try:
        return make_split(info["labels"], info["patient_ids"], seed=cfg.split_seed,
                          test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction)
    except SplitError as exc:
        raise GridError(str(exc)) from None


def _seed_everything(seed: int, deterministic: bool) -> None:
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Each run builds a fresh model, so tf.function retracing warnings are expected noise.
        tf.get_logger().setLevel("ERROR")
        if deterministic:
            tf.config.experimental.enable_op_determinism()


def _weights_digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _cross_entropy(probabilities, labels) -> float:
    p = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.log(p).mean())


def _epoch_bar(name: str, epochs: int, enabled: bool):
    import keras
    from tqdm import tqdm

    class EpochBar(keras.callbacks.Callback):
        """One tqdm bar per run: epochs done, with the latest losses."""

        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc=name, unit="epoch", leave=False, disable=not enabled)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if "loss" in k}, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochBar()


def train_run(store_path, cfg: RunConfig, out_dir, split: Split | None = None,
              verbose: int = 0, progress: bool = True, workers: int = 1) -> dict:
    """Train, evaluate and save one run; returns its result dict (also written as JSON)."""
    import keras

    from .data import StoreBatches, channel_stats, value_range
    from .model import vgg16_classifier

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = _store_info(store_path, cfg.input)
    split = split or prepare_split(store_path, cfg, info)
    names, labels = info["class_names"], info["labels"]
    n_classes = len(names)
    spec = get_loss(cfg.loss)
    mean, std = channel_stats(store_path, split.train, cfg.input, image_size=cfg.image_size)

    _seed_everything(cfg.seed, cfg.deterministic)
    keras.config.set_dtype_policy("mixed_float16" if cfg.mixed_precision else "float32")
    h, w, c = info["shape"][1:]
    size = cfg.image_size or h
    model = vgg16_classifier((size, size if cfg.image_size else w, c), n_classes, width=cfg.width,
                             head={"units": cfg.head_units, "activation": cfg.head_activation,
                                   "dropout": cfg.dropout}, weights=cfg.weights,
                             preprocessing={"scale": 1 / value_range(info["dtype"]),
                                            "mean": mean.tolist(), "std": std.tolist()})
    loss = spec.build(gamma=cfg.focal_gamma, weights=class_weights(labels[split.train], n_classes)
                      if cfg.loss == "weighted_cce" else None)
    optimizer = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[cfg.optimizer](
        learning_rate=cfg.learning_rate)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=cfg.jit_compile)

    common = {"store_path": store_path, "what": cfg.input, "labels": labels, "n_classes": n_classes,
              "label_mode": spec.label_mode, "batch_size": cfg.batch_size,
              "image_size": cfg.image_size}
    # Threads, not processes: pickling ~1 MB samples between processes costs more than the read.
    common.update(workers=workers, use_multiprocessing=False)
    train = StoreBatches(indices=split.train, shuffle=True, seed=cfg.seed, augment=cfg.augment, **common)
    val = StoreBatches(indices=split.val, **common)
    test = StoreBatches(indices=split.test, **common)
    start = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=cfg.epochs, shuffle=False, verbose=verbose,
                        callbacks=[keras.callbacks.EarlyStopping(
                            monitor="val_loss", patience=cfg.patience, restore_best_weights=True),
                            _epoch_bar(out_dir.name, cfg.epochs, progress)])
    seconds = time.perf_counter() - start
    val_loss, _ = model.evaluate(val, verbose=0)
    test_loss, _ = model.evaluate(test, verbose=0)
    probabilities = model.predict(test, verbose=0)
    # The test batches are unshuffled and read in index order, so predictions follow split.test.
    test_labels = labels[split.test]
    metrics = classification_metrics(test_labels, probabilities, names)
    model.save(out_dir / "model.keras")
    for ds in (train, val, test):
        ds.close()
    result = {
        "run": out_dir.name, "input": cfg.input, "loss": cfg.loss, "seed": cfg.seed,
        "config": dataclasses.asdict(cfg), "config_digest": cfg.digest(),
        "store_params_digest": info["params_digest"], "class_names": names,
        "val_loss": float(val_loss), "test_loss": float(test_loss),
        "test_cross_entropy": _cross_entropy(probabilities, test_labels),
        "test_accuracy": metrics["accuracy"], "metrics": metrics,
        "epochs_run": len(history.history["loss"]), "history": history.history,
        "weights_sha256": _weights_digest(model), "train_seconds": seconds,
        "backend": keras.backend.backend(), "jit_compile": cfg.jit_compile,
        "mixed_precision": cfg.mixed_precision, "deterministic": cfg.deterministic,
        "split_sizes": [len(split.train), len(split.val), len(split.test)],
        "train_mean": mean.tolist(), "train_std": std.tolist(),
    }
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(out_dir / "result.json")
    return result


def run_grid(store_path, out, *, inputs=("cxr", "enh"), losses=("cce", "scce"), repeats: int = 3,
             seed: int = 0, base: RunConfig | None = None, progress: bool = True,
             verbose: int = 0, workers: int = 1) -> list[dict]:
    """Run every (input, loss, repeat) arm, pairing repeat k of all arms on seed + k.

    Finished runs (``runs/<name>/result.json`` with the same config) are reused;
    a folder made with other settings is refused.
    """
    from tqdm import tqdm

    base = base or RunConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for loss in losses:
        get_loss(loss)
    split = prepare_split(store_path, dataclasses.replace(base, input=inputs[0]))
    settings = {"store": str(Path(store_path).resolve()), "base": dataclasses.asdict(base),
                "seed": seed, "split": json.loads(split.to_json())}
    settings_path = out / "grid.json"
    if settings_path.exists():
        old = json.loads(settings_path.read_text())
        if old != settings:
            differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise GridError(f"{out} holds runs made with other settings ({', '.join(differ)} differ); "
                            "use another --out or delete it")
    else:
        settings_path.write_text(json.dumps(settings))
    (out / "split.json").write_text(split.to_json())
    jobs = [(what, loss, k) for k in range(repeats) for what in inputs for loss in losses]
    results = []
    bar = tqdm(jobs, desc="grid", unit="run", disable=not progress)
    for what, loss, k in bar:
        cfg = dataclasses.replace(base, input=what, loss=loss, seed=seed + k)
        run_dir = out / "runs" / run_name(cfg, k)
        done = run_dir / "result.json"
        if done.exists():
            result = json.loads(done.read_text())
            if result.get("config_digest") != cfg.digest():
                raise GridError(f"{run_dir} was made with other settings; delete it or use another --out")
        else:
            bar.set_postfix(run=run_dir.name)
            result = train_run(store_path, cfg, run_dir, split=split, verbose=verbose,
                               progress=progress, workers=workers)
        results.append(result)
    return results
