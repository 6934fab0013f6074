"""The layer filter reads a layer whose whole-vector count saturates through its groups of 8 channels."""

import math
import warnings

import keras
import numpy as np
import pytest

import keras_actcoolr as kac
from keras_actcoolr.temperature import vector_temperature_from_groups

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_independent_flips_give_the_vector_temperature_of_the_groups():
    # 20 channels: groups of 8, 8 and 4; every channel flips independently with probability p.
    rng = np.random.default_rng(0)
    channels, positions, p = 20, 200_000, 0.02
    flips = rng.random((positions, channels)) < p
    vector_unchanged = np.sum(~flips.any(axis=1))
    group_unchanged = sum(np.sum(~flips[:, a : a + 8].any(axis=1)) for a in range(0, channels, 8))
    group_positions = 3 * positions
    t_vector = -math.log2(vector_unchanged / positions)
    t_group = -math.log2(group_unchanged / group_positions)
    # Groups of 8, 8 and 4 channels: with independent flips temperatures add up over the groups
    # (T is -log2 of an unchanged share), so 3 times their pooled temperature is the vector's, up to
    # the pooling of unequal groups (about 1 % here) and the sampling noise.
    estimate = vector_temperature_from_groups(t_group, positions, group_positions)
    assert estimate == pytest.approx(t_vector, rel=0.02)
    # Equal groups (16 channels): exact up to the sampling noise.
    flips = flips[:, :16]
    vector_unchanged = np.sum(~flips.any(axis=1))
    group_unchanged = sum(np.sum(~flips[:, a : a + 8].any(axis=1)) for a in (0, 8))
    estimate = vector_temperature_from_groups(-math.log2(group_unchanged / (2 * positions)), positions, 2 * positions)
    assert estimate == pytest.approx(-math.log2(vector_unchanged / positions), rel=0.02)


def test_closed_form_and_empty_layer():
    assert vector_temperature_from_groups(0.5, 100, 300) == pytest.approx(1.5)
    # A 1024-unit layer (128 groups) read as 64 of its channels (8 groups).
    assert vector_temperature_from_groups(0.25, 10, 1280, max_groups=8) == pytest.approx(2.0)
    assert vector_temperature_from_groups(0.25, 10, 40, max_groups=8) == pytest.approx(1.0)
    assert vector_temperature_from_groups(0.7, 0.0, 0.0) == 0.0
    np.testing.assert_allclose(vector_temperature_from_groups([0.1, 0.2], [10, 4], [80, 4]), [0.8, 0.2])


def wide_mlp(seed=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    h = keras.layers.Dense(8, activation="relu", name="narrow")(inputs)
    h = keras.layers.Dense(96, activation="relu", name="wide")(h)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(h)))
    model.compile(optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.5), momentum=0.0), loss=LOSS)
    return model


def fit_wide_mlp(**switches):
    """One epoch of `wide_mlp` at batch 8 under `ActCooLR(sigma=1.0, every_step=2, **switches)`."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = wide_mlp()
    controller = kac.ActCooLR(sigma=1.0, every_step=2, initial_learning_rate=None, **switches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[controller], verbose=0, shuffle=False)
    return controller


def followed_temperatures(record):
    """The layer filter's reading of a record, by the rules of docs/method.md (layer filter)."""
    followed = []
    for name in ("narrow_relu", "wide_relu"):
        groups = record["group_positions"][name] / record["positions"][name]
        if record["dead"][name] >= 1.0:
            continue
        if groups > 8 or name in record["saturated"]:
            if name in record["group_saturated"]:
                continue  # saturated in both counts: left out
            followed.append(min(groups, 8) * record["group_layers"][name])
        else:
            followed.append(record["layers"][name])
    return followed


def test_a_wide_or_saturated_layer_is_followed_through_its_groups(fresh_session):
    controller = fit_wide_mlp(collapse_guard=False)
    read_through_groups = 0
    for record in controller.measurements:
        # 8 positions (the batch), 96 channels: 12 groups of 8 per position, read as 8 groups.
        assert record["positions"]["wide_relu"] == 8 and record["group_positions"]["wide_relu"] == 96
        followed = followed_temperatures(record)
        if not followed:
            assert record["control_temperature"] is None
            continue
        # The probability of the mean temperature, not trusted below 0.5 / N.
        probability = max(1 - 2.0 ** -np.mean(followed), 0.5 / 8)
        control = -math.log2(1 - probability)
        assert record["control_temperature"] == pytest.approx(control, rel=1e-9)
        read_through_groups += "wide_relu" not in record["group_saturated"]
    assert read_through_groups >= 2, "the wide layer was never read through its groups: the test proves nothing"


def test_the_paper_controller_has_no_such_reading(fresh_session):
    controller = fit_wide_mlp(guards=False)
    for record in controller.measurements:
        assert record["control_temperature"] == pytest.approx(record["temperature"], rel=1e-12)
