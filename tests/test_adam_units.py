"""ActCooLR driving Adam reads the rate in Adam's units (`ActCooLR(adam_units=True)`, docs/method.md).

Values are derived independently: Adam's step from the weights Keras' own
`Adam` moves, a NumPy simulation of Adam's slots on noise gradients, and the
erf model's start rate from the range analysis' fitted `sigma` and `mu`.
"""

import math

import keras
import numpy as np
import pytest
from controller_helpers import LOSS, data
from scipy import stats

import keras_actcoolr as kac
from keras_actcoolr import temperature as T


def test_first_adam_step_moves_every_weight_by_the_rate():
    # After one update m_hat = g and v_hat = g**2: the factor is g / |g| = +-1 (0 where g = 0).
    g = np.array([[0.5, -2.0], [3.0, 0.0]])
    m, v = 0.1 * g, 0.001 * g**2
    scale = T.adam_step_scale([m], [v], 1, 0.9, 0.999, 0.0)
    assert scale == pytest.approx(math.sqrt(3 / 4), rel=1e-12)  # 3 of 4 weights move by the rate
    assert T.adam_step_scale([], [], 5, 0.9, 0.999, 1e-7) == 0.0
    assert T.adam_step_scale([m], [v], 0, 0.9, 0.999, 1e-7) == 0.0


def test_step_scale_is_the_step_keras_adam_takes():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=(7, 5)).astype("float32")), keras.Variable(np.zeros(5, "float32"))]
    rate = 0.01
    optimizer = keras.optimizers.Adam(rate)
    for _ in range(6):
        before = [np.array(v.numpy(), dtype=np.float64) for v in variables]
        gradients = [rng.normal(0.3, 1.0, size=v.shape).astype("float32") for v in variables]
        optimizer.apply_gradients(zip(gradients, variables))
        moved = np.concatenate([(np.array(v.numpy(), np.float64) - b).ravel() for v, b in zip(variables, before)])
    observed = math.sqrt(np.mean((moved / rate) ** 2))  # the root mean square of the last step, per unit rate
    slots = {v.path: v.numpy() for v in optimizer.variables}
    names = [v.path for v in variables]
    momentums = [s for p, s in slots.items() if p.endswith("_momentum")]
    velocities = [s for p, s in slots.items() if p.endswith("_velocity")]
    assert len(momentums) == len(velocities) == len(names)
    scale = T.adam_step_scale(momentums, velocities, int(optimizer.iterations), 0.9, 0.999, 1e-7)
    assert scale == pytest.approx(observed, rel=1e-3)
    assert 0.0 < scale < 1.0


def test_noise_step_scale_matches_a_simulation_of_adam():
    rng = np.random.default_rng(1)
    beta_1, beta_2, steps = 0.9, 0.999, 400
    m = v = np.zeros(20000)
    for _ in range(steps):
        g = rng.normal(0.0, 2.0, size=m.shape)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
    simulated = math.sqrt(np.mean(((m / (1 - beta_1**steps)) / np.sqrt(v / (1 - beta_2**steps))) ** 2))
    assert T.adam_noise_step_scale(beta_1) == pytest.approx(simulated, rel=0.03)
    assert T.adam_noise_step_scale(0.9) == pytest.approx(math.sqrt(0.1 / 1.9), rel=1e-12)


def _fit(optimizer, **controller_kwargs):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    x = keras.layers.Dense(16, activation="relu")(x)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(x)))
    model.compile(optimizer=optimizer, loss=LOSS)
    controller = kac.ActCooLR(every_step=2, **controller_kwargs)
    x_train, y_train = data(n=200)
    model.fit(x_train, y_train, batch_size=20, epochs=1, callbacks=[controller], verbose=0, shuffle=False)
    return controller


@pytest.mark.parametrize(
    ("make_optimizer", "adam_units", "factor", "start_temperature"),
    # The default start temperatures: 1.5 for Adam and for SGD with momentum 0.9.
    [
        (lambda: keras.optimizers.Adam(kac.ActCooLRSchedule(1e-3)), True, 10.0 / math.sqrt(0.1 / 1.9), 1.5),
        (lambda: keras.optimizers.Adam(kac.ActCooLRSchedule(1e-3)), False, 10.0, 1.5),
        (lambda: keras.optimizers.SGD(kac.ActCooLRSchedule(0.1), momentum=0.9), True, 10.0, 1.5),
    ],
    ids=["adam", "adam-paper-units", "sgdm"],
)
def test_automatic_ceiling_in_adam_units(make_optimizer, adam_units, factor, start_temperature):
    controller = _fit(make_optimizer(), adam_units=adam_units)
    analysis = controller.range_analysis
    target = 1.0 - 2.0**-start_temperature  # P* = 1 - 2**-T0
    start = math.exp(analysis["mu"] + analysis["sigma"] * stats.norm.ppf(target))
    expected = min(factor * start, 100.0)
    records = controller.measurements
    assert records
    for record in records:
        assert record["max_learning_rate"] == pytest.approx(expected, rel=1e-6)
    scales = [r["step_scale"] for r in records if r["step_scale"] is not None]
    if adam_units and "adam" in type(controller.model.optimizer).__name__.lower():
        assert scales and all(0.0 < s <= 1.0 + 1e-6 for s in scales)
    else:
        assert scales == [] or all(s == 1.0 for s in scales)


def test_adam_units_switch_is_checked():
    with pytest.raises(ValueError, match="adam_units"):
        kac.ActCooLR(adam_units="yes")


class StepRecorder(keras.callbacks.Callback):
    """Root mean square of each step's weight change per unit rate, keyed by the optimizer's iteration."""

    def __init__(self):
        super().__init__()
        self.scales = {}

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.iteration = int(optimizer.iterations)
        self.rate = float(optimizer.learning_rate)
        self.before = [np.array(v.numpy(), np.float64) for v in self.model.trainable_variables]

    def on_train_batch_end(self, batch, logs=None):
        after = [np.array(v.numpy(), np.float64) for v in self.model.trainable_variables]
        moved = np.concatenate([(a - b).ravel() for a, b in zip(after, self.before)])
        self.scales[self.iteration] = math.sqrt(np.mean((moved / self.rate) ** 2))


def test_runaway_guard_reads_the_step_adam_took():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(x)))
    model.compile(optimizer=keras.optimizers.Adam(kac.ActCooLRSchedule(1e-3)), loss=LOSS)
    controller, recorder = kac.ActCooLR(every_step=2), StepRecorder()
    x_train, y_train = data(n=200)
    model.fit(x_train, y_train, batch_size=20, epochs=1, callbacks=[controller, recorder], verbose=0, shuffle=False)
    checked = 0
    for record in controller.measurements:
        if record["step_scale"] is not None and record["step"] in recorder.scales:
            assert record["step_scale"] == pytest.approx(recorder.scales[record["step"]], rel=1e-3)
            checked += 1
    assert checked >= 3
