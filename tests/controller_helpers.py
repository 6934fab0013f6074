"""Data, a converted model and a learning-rate recorder shared by the controller tests."""

import math

import keras
import numpy as np
import pytest

import keras_actcoolr as kac

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def dead_from_the_start(seed=0):
    """An MLP whose only ReLU layer is off everywhere (bias -100), compiled with SGD on an ActCooLRSchedule."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(8, activation="relu", bias_initializer=keras.initializers.Constant(-100.0))(inputs)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(hidden)))
    model.compile(optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1)), loss=LOSS)
    return model


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 10)).astype("float32"), rng.integers(0, 3, n)


def converted(initial_learning_rate=0.1, momentum=0.9, width=16, seed=2):
    """A two-ReLU MLP converted to an APTModel, compiled with SGD on an ActCooLRSchedule."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(width, activation="relu")(inputs)
    x = keras.layers.Dense(width, activation="relu")(x)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(x)))
    model.compile(
        optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(initial_learning_rate), momentum=momentum),
        loss=LOSS,
    )
    return model


class LearningRateRecorder(keras.callbacks.Callback):
    """The learning rate and momentum each optimizer step uses, read before the step.

    Also imported by the scripts that tests run in child processes (with this directory on `PYTHONPATH`).
    """

    def __init__(self):
        super().__init__()
        self.rates, self.momenta = [], []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.rates.append(float(optimizer.learning_rate))
        self.momenta.append(float(getattr(optimizer, "momentum", getattr(optimizer, "beta_1", math.nan))))


def assert_same_state(state, expected, step=None, rel=1e-9, loss_rel=1e-5):
    """Two controller states (`{"part.field": value}`): equal, but the collapse guard's loss statistics.

    Those read the measured batch's loss off Keras' float32 loss tracker (a
    difference of its running sum), whose rounding depends on the sum so far,
    which a resumed epoch starts again: they agree to `loss_rel`. A field that
    is unknown (None) is unknown in both; NaN equals NaN.
    """
    assert set(state) == set(expected), step
    unknown = {k for k, v in expected.items() if v is None}
    assert {k for k, v in state.items() if v is None} == unknown, step
    known = set(state) - unknown
    exact = {k: state[k] for k in known if "loss_" not in k}
    assert exact == pytest.approx({k: expected[k] for k in exact}, rel=rel, abs=1e-12, nan_ok=True), step
    for key in known - set(exact):
        assert state[key] == pytest.approx(expected[key], rel=loss_rel, nan_ok=True), (step, key)
