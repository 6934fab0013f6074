"""A step taken, analysed and undone leaves no trace (`ActCooLR(initial_learning_rate="auto")`).

The reference of each comparison is plain Keras: a model that never saw the
analysed batch, trained on the batches after it. The analysed step must leave
the weights, the optimizer's slots and `iterations`, a `LossScaleOptimizer`'s
scale and step counter, and the metrics as they were. Two replicas of
`MirroredStrategy` run in a child process (`tests/test_distributed.py`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_actcoolr as kac

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH = 16


class BeforeFirstStep(kac.callbacks.MeasuringCallback):
    """Asks for one range analysis before the first step (taken and undone), and nothing else."""

    def __init__(self):
        super().__init__(every_step=1)
        self.analyses = []

    def steps_to_measurement(self, step):
        return 0 if step == 0 and not self.analyses else 10**9

    def wants_range_analysis(self, step):
        return "before_step"

    def on_range_analysis_before_step(self, record, range_analysis):
        self.analyses.append(range_analysis)


def data(n=3 * BATCH, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 10)).astype("float32"), rng.integers(0, 3, n)


def mlp(seed=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(12, activation="relu", name="d1")(inputs)
    x = keras.layers.Dense(9, activation="relu", name="d2")(x)
    return kac.convert(keras.Model(inputs, keras.layers.Dense(3, name="out")(x)))


OPTIMIZERS = {
    "sgd_momentum": lambda rate: keras.optimizers.SGD(rate, momentum=0.9),
    "adam": lambda rate: keras.optimizers.Adam(rate),
    "loss_scale": lambda rate: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(rate, momentum=0.9)),
}
STRATEGIES = {
    "none": lambda: tf.distribute.get_strategy(),
    "one_device": lambda: tf.distribute.OneDeviceStrategy("/cpu:0"),
    "mirrored_one": lambda: tf.distribute.MirroredStrategy(["/cpu:0"]),
}


def trained(strategy, optimizer, x, y, callbacks):
    with strategy.scope():
        model = mlp()
        model.compile(optimizer=OPTIMIZERS[optimizer](0.05), loss=LOSS, metrics=["accuracy"])
    history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
    # By name without the optimizer's own prefix ("sgd/", "adam_1/", ...), which differs between models.
    optimizer_state = {v.path.split("/")[-1]: np.asarray(v.numpy()) for v in model.optimizer.variables}
    return [w.numpy() for w in model.weights], optimizer_state, history.history


def assert_no_trace(strategy, optimizer):
    x, y = data()
    observer = BeforeFirstStep()
    weights, state, history = trained(STRATEGIES[strategy](), optimizer, x, y, [observer])
    # Plain Keras on the batches after the analysed one (its batch is used up).
    expected_weights, expected_state, expected_history = trained(
        STRATEGIES[strategy](), optimizer, x[BATCH:], y[BATCH:], []
    )
    assert len(observer.analyses) == 1
    # The slots exist on both sides and are not zero: the check below compares something.
    assert set(state) == set(expected_state) and any("momentum" in k or "moment" in k for k in state)
    for key, value in expected_state.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)
    assert int(expected_state[next(k for k in state if k.endswith("iteration"))]) == 2
    for weight, expected in zip(weights, expected_weights):
        np.testing.assert_array_equal(weight, expected)
    # The metrics of the epoch: the two trained batches only.
    assert history["loss"] == expected_history["loss"]
    assert history["accuracy"] == expected_history["accuracy"]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_analysed_step_leaves_no_trace_on_one_device(fresh_session, optimizer):
    assert_no_trace("none", optimizer)


@pytest.mark.parametrize("strategy", ["one_device", "mirrored_one"])
def test_analysed_step_leaves_no_trace_under_a_strategy(fresh_session, strategy):
    assert_no_trace(strategy, "sgd_momentum")


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_the_schedules_initial_rate_changes_nothing_with_auto_start(fresh_session, optimizer):
    """With `initial_learning_rate="auto"` the first rate comes from the analysis, whatever the schedule's."""
    x, y = data(n=4 * BATCH)

    def run(initial):
        model = mlp()
        make = OPTIMIZERS[optimizer]
        model.compile(optimizer=make(kac.ActCooLRSchedule(initial)), loss=LOSS)
        controller = kac.ActCooLR(every_step=2)
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[controller])
        return [w.numpy() for w in model.weights], controller

    low, low_controller = run(1e-4)
    high, high_controller = run(10.0)
    assert low_controller.auto_learning_rate is not None
    assert low_controller.auto_learning_rate == pytest.approx(high_controller.auto_learning_rate, rel=1e-6)
    moved = max(np.abs(w - w0).max() for w, w0 in zip(low, [w.numpy() for w in mlp().weights]))
    assert moved > 1e-3  # the three steps trained
    for a, b in zip(low, high):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
