"""The loss registry: the study's two losses and the ones a careful comparison adds.

Each entry builds a Keras loss and says which label form it takes: one-hot
(``"onehot"``) or integer (``"int"``). With one-hot labels CCE and SCCE are the
same function with the same gradient, which is why a fair comparison pairs them
on the same seeds (see ``docs/reproducing-the-paper.md``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

__all__ = ["LossSpec", "LOSSES", "get_loss", "class_weights", "weighted_cce_class"]


@dataclasses.dataclass(frozen=True)
class LossSpec:
    name: str
    label_mode: str  # "onehot" or "int"
    description: str
    build: Callable


@functools.cache
def weighted_cce_class():
    """The registered weighted-CCE loss class (defined once, on first use: Keras is heavy)."""
    import keras

    @keras.saving.register_keras_serializable(package="trainer")
    class WeightedCategoricalCrossentropy(keras.losses.Loss):
        """Categorical cross-entropy with a weight per true class."""

        def __init__(self, weights, name="weighted_cce", **kwargs):
            super().__init__(name=name, **kwargs)
            self.weights = [float(w) for w in weights]

        def call(self, y_true, y_pred):
            ops = keras.ops
            y_pred = ops.clip(y_pred, keras.config.epsilon(), 1 - keras.config.epsilon())
            per_sample = -ops.sum(y_true * ops.log(y_pred), axis=-1)
            w = ops.sum(y_true * ops.convert_to_tensor(self.weights, dtype=y_pred.dtype), axis=-1)
            return w * per_sample

        def get_config(self):
            return {**super().get_config(), "weights": self.weights}

    return WeightedCategoricalCrossentropy


def _build_cce(**_):
    import keras

    return keras.losses.CategoricalCrossentropy()


def _build_scce(**_):
    import keras

    return keras.losses.SparseCategoricalCrossentropy()


def _build_focal(gamma: float = 2.0, **_):
    import keras

    return keras.losses.CategoricalFocalCrossentropy(gamma=gamma, alpha=0.25)


def _build_weighted(weights=None, **_):
    if weights is None:
        raise ValueError("weighted_cce needs class weights (from the training split)")
    return weighted_cce_class()(weights)


def _build_cce_ls(label_smoothing: float = 0.1, **_):
    import keras

    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


LOSSES: dict[str, LossSpec] = {
    "cce": LossSpec("cce", "onehot", "categorical cross-entropy (one-hot labels)", _build_cce),
    "scce": LossSpec("scce", "int", "sparse categorical cross-entropy (integer labels)", _build_scce),
    "focal": LossSpec("focal", "onehot", "categorical focal cross-entropy (gamma, alpha 0.25)",
                      _build_focal),
    "weighted_cce": LossSpec("weighted_cce", "onehot",
                             "CCE weighted by inverse class frequency of the training split",
                             _build_weighted),
    "cce_ls": LossSpec("cce_ls", "onehot", "CCE with label smoothing (0.1)", _build_cce_ls),
}


def get_loss(name: str) -> LossSpec:
    """Look a loss up by name; unknown names list the valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}") from None


def class_weights(train_labels, n_classes: int) -> list[float]:
    """Inverse-frequency weights normalised to mean 1 (``n / (C * count_c)``)."""
    counts = np.bincount(np.asarray(train_labels), minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"a class has no training samples (counts {counts.astype(int).tolist()})")
    return (counts.sum() / (n_classes * counts)).tolist()
