"""The loss registry: each loss against its formula computed by hand, on unequal weights and classes."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from trainer.losses import LOSSES, class_weights, get_loss  # noqa: E402

#: Four samples of three classes (a batch size unlike the class count, so a sum over the wrong axis shows).
Y = np.array([0, 1, 2, 2])
P = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]], dtype=np.float32)
ONEHOT = np.eye(3, dtype=np.float32)[Y]
P_TRUE = P[np.arange(len(Y)), Y].astype(np.float64)


def _value(name, labels, probabilities=P, **options):
    return float(get_loss(name).build(**options)(labels, probabilities))


def test_the_registry_names_each_loss_and_its_label_form():
    assert {name: spec.label_mode for name, spec in LOSSES.items()} == {
        "cce": "onehot", "scce": "int", "focal": "onehot", "weighted_cce": "onehot", "cce_ls": "onehot"}
    assert all(get_loss(name) is spec and spec.name == name for name, spec in LOSSES.items())
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid: cce, scce, focal, weighted_cce, cce_ls"):
        get_loss("hinge")


def test_cce_and_scce_are_the_mean_cross_entropy_of_the_true_class():
    by_hand = np.mean(-np.log(P_TRUE))
    assert _value("cce", ONEHOT) == pytest.approx(by_hand, rel=1e-5)
    assert _value("scce", Y) == pytest.approx(by_hand, rel=1e-5)


def test_focal_loss_is_alpha_times_the_modulated_cross_entropy():
    """Defaults gamma 2, alpha 0.25: mean of 0.25 (1 - p)^2 (-log p) over the true classes."""
    by_hand = np.mean(0.25 * (1 - P_TRUE) ** 2 * -np.log(P_TRUE))
    assert _value("focal", ONEHOT) == pytest.approx(by_hand, rel=1e-5)
    gamma_one = np.mean(0.25 * (1 - P_TRUE) * -np.log(P_TRUE))
    assert _value("focal", ONEHOT, gamma=1.0) == pytest.approx(gamma_one, rel=1e-5)


def test_label_smoothing_moves_a_tenth_of_each_label_to_the_classes_evenly():
    smoothed = ONEHOT * 0.9 + 0.1 / 3
    by_hand = np.mean(-(smoothed * np.log(P.astype(np.float64))).sum(axis=1))
    assert _value("cce_ls", ONEHOT) == pytest.approx(by_hand, rel=1e-5)
    assert _value("cce_ls", ONEHOT, label_smoothing=0.2) == pytest.approx(
        np.mean(-((ONEHOT * 0.8 + 0.2 / 3) * np.log(P.astype(np.float64))).sum(axis=1)), rel=1e-5)


def test_weighted_cce_is_the_weighted_mean_of_the_cross_entropies():
    """Unequal weights 1, 2, 4: the loss is mean_i w[y_i] * -log p_i[y_i] (weights 1, 1, 1 cannot tell)."""
    by_hand = np.mean(np.array([1.0, 2.0, 4.0])[Y] * -np.log(P_TRUE))
    assert _value("weighted_cce", ONEHOT, weights=[1.0, 2.0, 4.0]) == pytest.approx(by_hand, rel=1e-5)


def test_weighted_cce_with_unit_weights_is_keras_cce_even_at_certain_predictions():
    """Probabilities of exactly 0 and 1 are clipped to [eps, 1 - eps] as Keras' CCE clips them."""
    certain = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=np.float32)
    for probabilities in (P, certain):
        weighted = _value("weighted_cce", ONEHOT, probabilities, weights=[1.0, 1.0, 1.0])
        assert np.isfinite(weighted)
        assert weighted == pytest.approx(_value("cce", ONEHOT, probabilities), rel=1e-5)
    right = _value("weighted_cce", ONEHOT[:1], certain[:1], weights=[1.0, 1.0, 1.0])
    assert right == pytest.approx(-np.log(np.float32(1) - np.float32(keras.config.epsilon())), rel=1e-3)


def test_weighted_cce_keeps_its_weights_through_serialisation():
    loss = get_loss("weighted_cce").build(weights=[1, 2, 4])
    assert loss.get_config()["weights"] == [1.0, 2.0, 4.0]
    back = keras.losses.deserialize(keras.losses.serialize(loss))
    assert back.weights == [1.0, 2.0, 4.0] and float(back(ONEHOT, P)) == pytest.approx(float(loss(ONEHOT, P)))


def test_weighted_cce_without_weights_says_where_they_come_from():
    with pytest.raises(ValueError, match="needs class weights"):
        get_loss("weighted_cce").build()


def test_class_weights_are_inverse_frequencies_of_mean_one():
    """Counts 6, 3, 1 of 10: n / (C count_c) = 10/18, 10/9, 10/3."""
    weights = class_weights([0] * 6 + [1] * 3 + [2], 3)
    assert weights == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert np.average(weights, weights=[6, 3, 1]) == pytest.approx(1.0)  # the expected weight of a sample
    assert class_weights([0, 0, 0, 1], 2) == pytest.approx([4 / 6, 2.0])


@pytest.mark.parametrize("labels", [[0, 0, 1], [1, 2, 2], [0, 2, 2]])
def test_class_weights_refuse_a_class_without_samples(labels):
    with pytest.raises(ValueError, match="a class has no training samples"):
        class_weights(labels, 3)


def test_weighted_cce_sums_over_the_last_axis_whatever_the_rank():
    """Classes are the last axis (as in Keras' losses): a batch of 2 x 2 predictions of 3 classes."""
    y = ONEHOT.reshape(2, 2, 3)
    p = P.reshape(2, 2, 3)
    weighted = float(get_loss("weighted_cce").build(weights=[1.0, 2.0, 4.0])(y, p))
    assert weighted == pytest.approx(np.mean(np.array([1.0, 2.0, 4.0])[Y] * -np.log(P_TRUE)), rel=1e-5)


def test_the_registry_entries_cannot_be_changed():
    """One registry serves every run of a grid: no run may change an entry under the others."""
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        get_loss("cce").label_mode = "int"


def test_every_weighted_cce_loss_is_of_the_one_registered_class():
    """Keras finds a saved loss's class by its registered name: one class, defined once per process."""
    from trainer.losses import weighted_cce_class

    first, second = (get_loss("weighted_cce").build(weights=[1, 2, 3]) for _ in range(2))
    assert type(first) is type(second) is weighted_cce_class()
    assert keras.saving.get_registered_object("trainer>WeightedCategoricalCrossentropy") is weighted_cce_class()
