"""One definition of a trial step, for both range-analysis engines (docs/method.md#the-trial-step).

The trial step at rate `lr_k` is the optimizer's update from the current state
at the current rate `lr`, scaled by `lr_k / lr`: `w0 + (lr_k / lr) * (w1 - w0)`.
After some training with Keras' SGD and momentum 0.9 (so the velocity is not
zero), the counts of `lr_range_analysis` and of the analysis inside `fit`
(`ActCooLR`'s) are compared with a NumPy computation of that step: gradient
from `tf.GradientTape` on the batch, Keras' SGD momentum update, the trial
weights, the ReLU patterns before and after, and the unchanged positions
counted by hand.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_actcoolr as kac
from keras_actcoolr import temperature as T

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RATES = np.asarray(T.RANGE_LEARNING_RATES)
BATCH = 64
TRAINED_STEPS = 8
LR, MOMENTUM = 0.1, 0.9


class RangeAt(kac.callbacks.MeasuringCallback):
    """Asks the model for a range analysis with the measurement of one step."""

    def __init__(self, step):
        super().__init__(every_step=1)
        self.step = step
        self.analyses = []

    def steps_to_measurement(self, step):
        return (self.step - step) if step <= self.step else 10**9

    def wants_range_analysis(self, step):
        return True

    def on_measurement(self, record, range_analysis):
        super().on_measurement(record, range_analysis)
        self.analyses.append(range_analysis)


def data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 10)).astype("float32"), rng.integers(0, 3, n)


def trained_model():
    """Dense-ReLU-Dense, trained TRAINED_STEPS plain Keras steps of SGD with momentum 0.9."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden)))
    model.compile(optimizer=keras.optimizers.SGD(LR, momentum=MOMENTUM), loss=LOSS)
    x, y = data(TRAINED_STEPS * 16, seed=3)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == TRAINED_STEPS
    return model


def numpy_counts(model, x, y):
    """`(K,)` unchanged positions of the hidden ReLU for the trial step at each rate, and the velocity's share.

    Everything by hand in float32 NumPy from the model's weights and velocities,
    but the gradient, which `tf.GradientTape` computes on the batch.
    """
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    gradients = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    w0 = [v.numpy() for v in model.trainable_variables]
    velocities = [m.numpy() for m in model.optimizer.momentums]
    lr, momentum = np.float32(LR), np.float32(MOMENTUM)
    # Keras' SGD: v <- momentum * v - lr * g; w <- w + v (each operation rounded to float32).
    w1 = [w + (v * momentum - g * lr) for w, v, g in zip(w0, velocities, gradients)]

    def pattern(weights):
        kernel, bias = weights[0], weights[1]
        return (x @ kernel + bias) > 0

    before = pattern(w0)
    step = float(lr)  # the optimizer's float32 rate; the ratio in float64, then rounded
    counts = []
    for rate in RATES:
        trial = [a + np.float32(rate / step) * (b - a) for a, b in zip(w0, w1)]
        counts.append(np.all(pattern(trial) == before, axis=-1).sum())
    # The share of the update that does not depend on the rate in Keras' SGD: momentum * v.
    share = np.abs(velocities[0] * momentum).sum() / np.abs(w1[0] - w0[0]).sum()
    return np.array(counts, dtype=np.float64), share


@pytest.mark.usefixtures("fresh_session")
def test_both_engines_take_the_trial_step_of_numpy_after_training_with_momentum():
    x, y = data(BATCH, seed=4)
    model = trained_model()
    expected, share = numpy_counts(model, x, y)
    assert share > 0.1  # the velocity is a real part of the update
    assert expected.max() == BATCH and expected.min() < BATCH / 4 and len(np.unique(expected)) > 8

    result = kac.lr_range_analysis(model, (x, y), batch_size=BATCH)
    unchanged = BATCH * 2.0 ** -result.layer_temperatures[:, 0]
    np.testing.assert_allclose(unchanged, np.maximum(expected, 0.5), rtol=1e-9)

    observer = RangeAt(TRAINED_STEPS)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[observer])
    (in_fit,) = observer.analyses
    np.testing.assert_array_equal(in_fit["counts"][:, 0, 0], expected)
    np.testing.assert_array_equal(in_fit["counts"][:, 0, 1], np.full(len(RATES), BATCH))


@pytest.mark.usefixtures("fresh_session")
def test_a_zero_current_rate_is_refused_by_name():
    # The trial steps scale the step taken at the current rate: a rate of 0 gives nothing to scale.
    x, y = data(16, seed=4)
    model = trained_model()
    model.optimizer.learning_rate = 0.0
    with pytest.raises(ValueError, match=r"optimizer.learning_rate=0.0"):
        kac.lr_range_analysis(model, (x, y), batch_size=16)
    with pytest.raises(ValueError, match=r"optimizer.learning_rate=0.0"):
        kac.measure_temperature(model, (x, y), learning_rate=0.1, batch_size=16)
