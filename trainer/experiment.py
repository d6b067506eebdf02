"""One training run: what defines it, and how it trains, resumes and lands in its folder.

Reads top to bottom: load the store's labels -> split -> normalisation stats ->
seeded model -> fit (from the last epoch's checkpoint, if any) -> evaluate ->
metrics -> files. The grid of runs is :mod:`trainer.grid`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from phasefeat.io._atomic import make_dirs
from phasefeat.io.identity import describe_difference, store_identity

from .checkpoint import CHECKPOINT
from .losses import class_weights, get_loss
from .metrics import classification_metrics
from .progress import TrainingDiverged, cpu_warning, epoch_bar, nan_guard, training_device
from .splits import Split, make_external_split, make_split

__all__ = ["RunConfig", "GridError", "prepare_split", "train_run", "run_name", "store_info",
           "store_identity", "keras_backend", "TARGETS", "SPLIT_BY", "RunFailed"]

TARGETS = ("class", "source")
SPLIT_BY = ("patient", "source")


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
    target: str = "class"
    occlude: str = "none"
    occlude_fraction: float = 0.6
    split_by: str = "patient"
    test_sources: tuple[str, ...] = ()
    model: str = "vgg16"

    def __post_init__(self):
        from .backbones import MODEL_NAMES
        from .model import HEAD_ACTIVATIONS, OCCLUSIONS

        object.__setattr__(self, "test_sources", tuple(self.test_sources))
        for name, value, choices in (("target", self.target, TARGETS), ("occlude", self.occlude, OCCLUSIONS),
                                     ("split_by", self.split_by, SPLIT_BY), ("model", self.model, MODEL_NAMES),
                                     ("head_activation", self.head_activation, HEAD_ACTIVATIONS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
        if self.model != "vgg16" and self.width != 1.0:
            raise ValueError(f"--width scales VGG16 only; {self.model} is built at its published width "
                             "(leave --width at 1)")
        if not (isinstance(self.width, (int, float)) and math.isfinite(self.width) and 0 < self.width <= 1):
            raise ValueError(f"--width must be a number in (0, 1], got {self.width!r}")
        if self.weights is not None and not Path(self.weights).is_file():
            raise ValueError(f"--weights {self.weights}: no such file")
        if self.image_size is not None and not 32 <= self.image_size <= 2048:
            raise ValueError(f"--image-size must lie in [32, 2048], got {self.image_size!r}")
        if not 0 < self.occlude_fraction < 1:
            raise ValueError(f"occlude_fraction must lie in (0, 1), got {self.occlude_fraction!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"learning rate must be a positive finite number, got {self.learning_rate!r}")

    def digest(self) -> str:
        """SHA-256 of every setting. Settings added later are left out at the values that
        reproduce earlier runs, so finished runs of earlier versions keep their digest."""
        fields = dataclasses.asdict(self)
        fields["test_sources"] = list(self.test_sources)
        for name, legacy in LATER_FIELDS.items():
            if fields[name] == legacy:
                del fields[name]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


LATER_FIELDS = {"target": "class", "occlude": "none", "occlude_fraction": 0.6, "split_by": "patient",
                "test_sources": [], "model": "vgg16"}


def run_name(cfg: RunConfig, repeat: int) -> str:
    """``enh-cce-r0``; other backbones than VGG16 lead the name (``resnet50-enh-cce-r0``)."""
    prefix = "" if cfg.model == "vgg16" else f"{cfg.model}-"
    return f"{prefix}{cfg.input}-{cfg.loss}-r{repeat}"


def check_values(store_path, what: str) -> None:
    """Refuse a float store holding NaN, infinities or values outside [0, 1] before any training:
    a NaN would reach the normalisation statistics and train a constant model to exit 0."""
    from phasefeat.io.store import StoreError, open_store

    try:
        with open_store(store_path) as store:
            bad = store.invalid_samples(what)
            paths = store.source_paths
    except StoreError as exc:
        raise GridError(str(exc)) from None
    if bad:
        shown = ", ".join(f"#{i} ({paths[i]})" for i in bad[:3]) + (f" and {len(bad) - 3} more"
                                                                      if len(bad) > 3 else "")
        raise GridError(f"{store_path}: /{what} holds NaN, infinite or out-of-range (not in [0, 1]) values in "
                        f"{len(bad)} sample(s): {shown}; convert those images again")


def check_input(what: str) -> None:
    """Refuse an input name other than ``cxr`` and ``enh`` in one line."""
    if what not in ("cxr", "enh"):
        raise GridError(f"input must be cxr or enh, got {what!r}")


def store_info(store_path, what: str, target: str = "class") -> dict:
    """Labels (of the class or of the source), names, patients, sources, shape and identity."""
    from phasefeat.io.store import StoreError, open_store

    check_input(what)
    try:
        with open_store(store_path) as store:
            info = {"labels": store.labels.copy(), "class_names": store.class_names,
                    "patient_ids": store.patient_ids, "sources": store.sources, "sha256": store.sha256,
                    "shape": store.shape(what), "dtype": store.dtype(what),
                    "params_digest": store.attrs.get("params_digest", ""),
                    "params_json": store.attrs.get("params_json", ""),
                    "has_masks": store.has_masks.copy(),
                    "store_identity": store_identity(store)}
    except StoreError as exc:
        raise GridError(str(exc)) from None
    if len(info["labels"]) == 0:
        raise GridError(f"{store_path} holds no samples")
    counts = np.bincount(info["labels"], minlength=len(info["class_names"]))
    empty = [name for name, n in zip(info["class_names"], counts, strict=False) if n == 0]
    if empty:  # a model would predict a class it never saw, and macro averages would count it
        named = (f"class {empty[0]!r} holds" if len(empty) == 1 else
                 f"classes {', '.join(repr(n) for n in empty[:-1])} and {empty[-1]!r} hold")
        raise GridError(f"{store_path}: {named} no image (its files failed to convert, or its folder is empty: "
                        "`phasefeat inspect` lists failures); convert again with its images, or without its "
                        "folder")
    if target == "source":
        unknown = sum(1 for s in info["sources"] if not s)
        if unknown:
            raise GridError(f"{unknown} of {len(info['sources'])} samples of {store_path} have no source; "
                            "convert with --source-pattern (or a label file's source column) to probe sources")
        names = sorted(set(info["sources"]))
        index = {name: k for k, name in enumerate(names)}
        info["class_labels"], info["class_names_of_store"] = info["labels"], info["class_names"]
        info["labels"] = np.array([index[s] for s in info["sources"]], dtype=np.int32)
        info["class_names"] = names
    return info


def prepare_split(store_path, cfg: RunConfig, info: dict | None = None) -> Split:
    """The split of ``cfg`` (``info``: the store's labels and patients, if already read)."""
    from .splits import SplitError, duplicate_groups

    info = info or store_info(store_path, cfg.input, cfg.target)
    duplicates = duplicate_groups(info.get("sha256", ()))
    if cfg.occlude in ("lungs", "non-lungs") and not info["has_masks"].all():
        missing = int((~info["has_masks"]).sum())
        raise GridError(f"--occlude {cfg.occlude} needs a lung mask for every image; {missing} of "
                        f"{len(info['has_masks'])} have none (convert a layout with masks/ folders, or use "
                        "--occlude center)")
    try:
        if cfg.test_sources:
            return make_external_split(info["labels"], info["sources"], cfg.test_sources,
                                       info["patient_ids"], seed=cfg.split_seed,
                                       val_fraction=cfg.val_fraction, duplicates=duplicates)
        groups = info["sources"] if cfg.split_by == "source" else info["patient_ids"]
        if cfg.split_by == "source" and not all(groups):
            raise GridError("--split-by source needs a source for every sample "
                            "(convert with --source-pattern)")
        return make_split(info["labels"], groups, seed=cfg.split_seed, test_fraction=cfg.test_fraction,
                          val_fraction=cfg.val_fraction, duplicates=duplicates,
                          n_classes=len(info["class_names"]))
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


def train_run(store_path, cfg: RunConfig, out_dir, split: Split | None = None,
              verbose: int = 0, progress: bool = True, workers: int = 1, threads: int | None = None,
              expected_identity: str | None = None, runs_after: int = 0) -> dict:
    """Train, evaluate and save one run; returns its result dict (also written as JSON).

    A run that was interrupted resumes from its last finished epoch (``checkpoint.npz`` in
    ``out_dir``). ``threads`` is recorded only: the caller sets the thread count before the
    framework starts (:mod:`trainer.worker`). ``expected_identity``: the store identity the
    grid was planned on; another store at ``store_path`` fails the run before it trains.
    ``runs_after``: runs of the grid still to train after this one (their estimated time is
    printed after this run's first epoch).
    """
    import keras

    from .data import OccludedFeatures, StoreBatches, channel_stats, value_range
    from .model import MASK_OCCLUSIONS, classifier, occlusion_mask

    out_dir = Path(out_dir)
    spec = get_loss(cfg.loss)
    info = store_info(store_path, cfg.input, cfg.target)
    if expected_identity is not None and info["store_identity"] != expected_identity:
        raise RunFailed(f"{store_path} is not the store this grid was planned on (it changed since, or "
                        "another file lies at that path on this machine: "
                        f"{describe_difference(expected_identity, info['store_identity'])})")
    if expected_identity is None:  # a run of a planned grid was checked when the grid was planned
        check_values(store_path, cfg.input)
    split = split or prepare_split(store_path, cfg, info)
    make_dirs(out_dir)
    names, labels = info["class_names"], info["labels"]
    n_classes = len(names)
    h, w, c = info["shape"][1:]
    size = cfg.image_size or h
    shape = (size, size if cfg.image_size else w, c)
    lung_mode = cfg.occlude if cfg.occlude in MASK_OCCLUSIONS else None
    mask = None if cfg.occlude in ("none", *MASK_OCCLUSIONS) else \
        occlusion_mask(shape[0], shape[1], cfg.occlude, cfg.occlude_fraction)
    derive = None
    if cfg.occlude != "none" and cfg.input == "enh":
        derive = OccludedFeatures(cfg.occlude, cfg.occlude_fraction, info["params_json"], info["dtype"])
    mean, std = channel_stats(store_path, split.train, cfg.input, image_size=cfg.image_size,
                              mask=mask, derive=derive, lung_mode=lung_mode)

    _seed_everything(cfg.seed, cfg.deterministic)
    keras.config.set_dtype_policy("mixed_float16" if cfg.mixed_precision else "float32")
    model = classifier(cfg.model, shape, n_classes, width=cfg.width,
                             head={"units": cfg.head_units, "activation": cfg.head_activation,
                                   "dropout": cfg.dropout}, weights=cfg.weights,
                             preprocessing={"scale": 1 / value_range(info["dtype"]),
                                            "mean": mean.tolist(), "std": std.tolist()},
                             occlude=(cfg.occlude, cfg.occlude_fraction),
                             info={"model": cfg.model, "input": cfg.input, "class_names": list(names),
                                   "target": cfg.target,
                                   "occlude": cfg.occlude, "occlude_fraction": cfg.occlude_fraction,
                                   "store_params_digest": info["params_digest"],
                                   # what defines its test set: `trainer evaluate` rebuilds it from these
                                   "split": {"split_seed": cfg.split_seed, "split_by": cfg.split_by,
                                             "test_sources": list(cfg.test_sources),
                                             "test_fraction": cfg.test_fraction,
                                             "val_fraction": cfg.val_fraction},
                                   "store_identity": info["store_identity"]})
    loss = spec.build(gamma=cfg.focal_gamma, weights=class_weights(labels[split.train], n_classes)
                      if cfg.loss == "weighted_cce" else None)
    optimizer = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[cfg.optimizer](
        learning_rate=cfg.learning_rate)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=cfg.jit_compile)
    _build_training_state(model, n_classes, spec.label_mode)

    common = {"store_path": store_path, "what": cfg.input, "labels": labels, "n_classes": n_classes,
              "label_mode": spec.label_mode, "batch_size": cfg.batch_size,
              "image_size": cfg.image_size, "derive": derive, "lung_mode": lung_mode}
    # Threads, not processes: pickling ~1 MB samples between processes costs more than the read.
    common.update(workers=workers, use_multiprocessing=False)
    train = StoreBatches(indices=split.train, shuffle=True, seed=cfg.seed, augment=cfg.augment, **common)
    val = StoreBatches(indices=split.val, **common)
    test = StoreBatches(indices=split.test, **common)
    device = training_device()
    warning = cpu_warning(cfg, device, len(split.train), shape[:2])
    if warning and progress:
        from tqdm import tqdm

        tqdm.write(warning)
    identity = run_identity(cfg, info["store_identity"], split, threads, keras.backend.backend())
    try:  # the store's handles are closed also when the run stops part way (the store may be rewritten)
        history, seconds, resumed_at = _fit(model, cfg, out_dir, identity, train, val, progress, verbose,
                                            runs_after)
        val_loss, _ = model.evaluate(val, verbose=0)
        test_loss, _ = model.evaluate(test, verbose=0)
        probabilities = model.predict(test, verbose=0)
    finally:
        for ds in (train, val, test):
            ds.close()
    # The test batches are unshuffled and read in index order, so predictions follow split.test.
    test_labels = labels[split.test]
    metrics = classification_metrics(test_labels, probabilities, names)
    model.save(out_dir / "model.keras")
    np.savez(out_dir / "predictions.npz", indices=split.test, labels=test_labels,
             probabilities=probabilities.astype(np.float32))
    result = {
        "run": out_dir.name, "model": cfg.model, "input": cfg.input, "loss": cfg.loss, "seed": cfg.seed,
        "config": dataclasses.asdict(cfg), "config_digest": cfg.digest(),
        "store_params_digest": info["params_digest"], "store_identity": info["store_identity"],
        "class_names": names, "target": cfg.target, "occlude": cfg.occlude,
        "val_loss": float(val_loss), "test_loss": float(test_loss),
        "test_cross_entropy": _cross_entropy(probabilities, test_labels),
        "test_accuracy": metrics["accuracy"], "metrics": metrics,
        "epochs_run": len(history["loss"]), "history": history,
        "weights_sha256": _weights_digest(model), "train_seconds": seconds,
        "backend": keras.backend.backend(), "jit_compile": cfg.jit_compile,
        "mixed_precision": cfg.mixed_precision, "deterministic": cfg.deterministic,
        "device": device, "threads": threads, "resumed_at_epochs": resumed_at,
        "split_sizes": [len(split.train), len(split.val), len(split.test)],
        "test_classes_present": sorted(names[k] for k in set(test_labels.tolist())),
        "train_mean": mean.tolist(), "train_std": std.tolist(),
    }
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(out_dir / "result.json")
    (out_dir / CHECKPOINT).unlink(missing_ok=True)  # the run is done; its checkpoint is not needed
    return result


def _build_training_state(model, n_classes: int, label_mode: str) -> None:
    """Create the optimizer's and the metrics' variables before ``fit``.

    Created inside the first traced training step instead, they make TensorFlow trace that step
    twice (``train_run`` on the 32 x 32 test store: 6.8 s so, 3.8 s built here; 2-core VM). A
    resumed run's :func:`trainer.checkpoint.restore_variables` then fills the variables made here.
    The metrics' one made-up sample is forgotten: ``fit`` and ``evaluate`` reset them before they count.
    """
    model.optimizer.build(model.trainable_variables)
    y_true = np.zeros((1,), "int32") if label_mode == "int" else np.zeros((1, n_classes), "float32")
    model.compute_metrics(None, y_true, np.full((1, n_classes), 1 / n_classes, "float32"))


class RunFailed(GridError):
    """A run failed for a reason of its own (a diverging loss, a damaged checkpoint); retrying it
    elsewhere would fail again."""


def run_identity(cfg: RunConfig, store_id: dict, split: Split, threads: int | None, backend: str) -> dict:
    """What a run is: its settings, the store, the split, and where its arithmetic ran.

    TensorFlow on a CPU gives bit-identical weights only at one thread count, and backends
    differ in rounding: a checkpoint resumes only with the same ``threads`` (None: the
    framework's default on that machine) and Keras ``backend``.
    """
    return {"config_digest": cfg.digest(), "store": store_id,
            "split": hashlib.sha256(split.to_json().encode()).hexdigest(),
            "threads": threads, "backend": backend}


def keras_backend() -> str:
    """The Keras backend a run started now would use, without loading Keras if it is not loaded:
    ``KERAS_BACKEND``, else ``keras.json`` in ``KERAS_HOME`` (or ``~/.keras``), else TensorFlow."""
    import os
    import sys

    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        backend = json.loads((home / "keras.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None
    return backend if isinstance(backend, str) and backend else "tensorflow"


def _fit(model, cfg: RunConfig, out_dir: Path, identity: dict, train, val, progress: bool,
         verbose: int, runs_after: int = 0) -> tuple[dict, float, list[int]]:
    """``model.fit`` from the run's checkpoint, if it has one.

    Returns the whole run's history, its training seconds and the epochs it resumed at.

    Every epoch ends with a checkpoint (:mod:`trainer.checkpoint`), so a killed run loses at
    most the epoch it was in, and its resumed weights equal those of an uninterrupted run.
    """
    from .checkpoint import CheckpointError, load_checkpoint, restore_variables, resumable_callbacks

    path = out_dir / CHECKPOINT
    try:
        checkpoint = load_checkpoint(path, identity)
        if checkpoint is not None:
            restore_variables(model, checkpoint)
    except CheckpointError as exc:
        raise RunFailed(str(exc)) from None
    state = checkpoint["state"] if checkpoint else None
    done = state["epochs_done"] if state else 0
    early, saver = resumable_callbacks(path, identity, cfg.patience, state)
    if state and (state["stopped"] or done >= cfg.epochs):  # killed after its last epoch
        if state["best_weights"] is not None:
            model.set_weights(state["best_weights"])
        return saver.history, saver.seconds, saver.resumed_at
    train.set_epoch(done)
    try:
        model.fit(train, validation_data=val, epochs=cfg.epochs, initial_epoch=done, shuffle=False,
                  verbose=verbose, callbacks=[nan_guard(), early, saver,
                                              epoch_bar(out_dir.name, cfg.epochs, progress, done,
                                                        runs_after)])
    except TrainingDiverged as exc:
        raise RunFailed(str(exc)) from None
    return saver.history, saver.seconds, saver.resumed_at
