"""Baseline schedules (StepDecay, TriangularCyclic, OneCycle) and the OneCycleMomentum callback.

Every expected value comes from a closed form written here in NumPy.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from controller_helpers import LearningRateRecorder

import keras_actcoolr as kac


def evaluate(schedule, steps):
    """The schedule at each step, called as the optimizer calls it (an int64 step)."""
    return np.array([float(schedule(keras.ops.convert_to_tensor(s, "int64"))) for s in steps])


def step_decay_reference(steps, initial, factor, step_size=None, boundaries=None):
    steps = np.asarray(steps)
    if boundaries is not None:
        exponent = np.searchsorted(np.asarray(boundaries), steps, side="right")  # boundaries <= step
    else:
        exponent = np.floor(steps / step_size)
    return initial * factor**exponent


def triangular_reference(steps, base, top, step_size):
    # Smith (2017), section 3.1.
    steps = np.asarray(steps, dtype=np.float64)
    cycle = np.floor(1 + steps / (2 * step_size))
    x = np.abs(steps / step_size - 2 * cycle + 1)
    return base + (top - base) * np.maximum(0.0, 1 - x)


def one_cycle_reference(steps, start, peak_value, end, total_steps, t_max):
    last = total_steps - 1
    return np.interp(np.asarray(steps, dtype=np.float64), [0, t_max * last, last], [start, peak_value, end])


class TestStepDecay:
    def test_step_size_matches_closed_form(self):
        schedule = kac.StepDecay(0.4, step_size=7, factor=0.5)
        steps = np.arange(0, 50)
        expected = step_decay_reference(steps, 0.4, 0.5, step_size=7)
        np.testing.assert_allclose(evaluate(schedule, steps), expected, rtol=1e-6)
        assert float(schedule(0)) == pytest.approx(0.4, rel=1e-7)  # first step
        assert float(schedule(6)) == pytest.approx(0.4, rel=1e-7)  # last step before the first decay
        assert float(schedule(7)) == pytest.approx(0.2, rel=1e-7)

    def test_boundaries_match_closed_form(self):
        schedule = kac.StepDecay(0.1, boundaries=[10, 25, 26], factor=0.1)
        steps = np.arange(0, 40)
        expected = step_decay_reference(steps, 0.1, 0.1, boundaries=[10, 25, 26])
        np.testing.assert_allclose(evaluate(schedule, steps), expected, rtol=1e-6)
        assert float(schedule(9)) == pytest.approx(0.1, rel=1e-7)
        assert float(schedule(10)) == pytest.approx(0.01, rel=1e-6)
        assert float(schedule(39)) == pytest.approx(1e-4, rel=1e-6)

    def test_long_training_stays_exact(self):
        schedule = kac.StepDecay(1.0, step_size=1000, factor=0.5)
        assert float(schedule(10_000_123)) == pytest.approx(0.5**10_000, abs=0.0)  # underflows to 0 like NumPy
        assert float(schedule(2_999)) == pytest.approx(0.25, rel=1e-7)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"initial_learning_rate": 0.0, "step_size": 3}, "initial_learning_rate=0.0"),
            ({"initial_learning_rate": 0.1}, "exactly one"),
            ({"initial_learning_rate": 0.1, "step_size": 3, "boundaries": [3]}, "exactly one"),
            ({"initial_learning_rate": 0.1, "step_size": 0}, "step_size=0"),
            ({"initial_learning_rate": 0.1, "step_size": 2.5}, "step_size=2.5"),
            ({"initial_learning_rate": 0.1, "boundaries": [5, 5]}, r"boundaries=\[5, 5\]"),
            ({"initial_learning_rate": 0.1, "boundaries": []}, r"boundaries=\[\]"),
            ({"initial_learning_rate": 0.1, "step_size": 3, "factor": -0.5}, "factor=-0.5"),
        ],
        ids=["zero_rate", "neither", "both", "zero_step", "float_step", "repeated", "empty", "negative_factor"],
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            kac.StepDecay(**kwargs)


class TestTriangularCyclic:
    def test_matches_smiths_closed_form(self):
        schedule = kac.TriangularCyclic(0.01, 0.3, step_size=6)
        steps = np.arange(0, 61)  # five cycles, first and last step included
        np.testing.assert_allclose(evaluate(schedule, steps), triangular_reference(steps, 0.01, 0.3, 6), rtol=1e-6)
        assert float(schedule(0)) == pytest.approx(0.01, rel=1e-6)
        assert float(schedule(6)) == pytest.approx(0.3, rel=1e-6)
        assert float(schedule(12)) == pytest.approx(0.01, rel=1e-6)
        assert float(schedule(60)) == pytest.approx(0.01, rel=1e-6)

    def test_long_training_stays_exact(self):
        schedule = kac.TriangularCyclic(0.1, 1.1, step_size=3)
        step = 30_000_001  # float32 cannot hold this step; the schedule does not need to
        assert float(schedule(step)) == pytest.approx(triangular_reference(step, 0.1, 1.1, 3), rel=1e-6)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"initial_learning_rate": 0.3, "maximal_learning_rate": 0.3, "step_size": 2}, "greater than"),
            ({"initial_learning_rate": -0.1, "maximal_learning_rate": 0.3, "step_size": 2}, "learning_rate=-0.1"),
            ({"initial_learning_rate": 0.1, "maximal_learning_rate": 0.3, "step_size": 0}, "step_size=0"),
        ],
        ids=["flat", "negative", "zero_step"],
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            kac.TriangularCyclic(**kwargs)


class TestOneCycle:
    @pytest.mark.parametrize(
        "total_steps, t_max, final",
        [(11, 0.3, 0.0), (100, 0.7, 0.001), (230, 0.15, 0.05), (2, 0.5, 0.0)],
        ids=["peak_on_a_step", "late_peak", "early_peak", "two_steps"],
    )
    def test_matches_closed_form(self, total_steps, t_max, final):
        schedule = kac.OneCycle(0.1, 1.7, total_steps=total_steps, t_max=t_max, final_learning_rate=final)
        steps = np.arange(0, total_steps + 5)  # past the end too
        expected = one_cycle_reference(steps, 0.1, 1.7, final, total_steps, t_max)
        np.testing.assert_allclose(evaluate(schedule, steps), expected, rtol=1e-6, atol=1e-7)
        assert float(schedule(0)) == pytest.approx(0.1, rel=1e-6)  # first step
        assert float(schedule(total_steps - 1)) == pytest.approx(final, abs=1e-7)  # last step

    def test_peak_value_on_the_peak_step(self):
        schedule = kac.OneCycle(0.5, 1.0, total_steps=11, t_max=0.3)  # peak at step 0.3 * 10 = 3
        assert float(schedule(3)) == pytest.approx(1.0, rel=1e-6)
        assert float(schedule(2)) < 1.0 and float(schedule(4)) < 1.0

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"maximal_learning_rate": 0.05}, "greater than"),
            ({"total_steps": 1}, "total_steps=1"),
            ({"t_max": 0.0}, "t_max=0.0"),
            ({"t_max": 1.0}, "t_max=1.0"),
            ({"final_learning_rate": -0.1}, "final_learning_rate=-0.1"),
            ({"final_learning_rate": 2.0}, "final_learning_rate=2.0"),
        ],
        ids=["max_below_start", "one_step", "t_max_0", "t_max_1", "negative_final", "final_above_max"],
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        arguments = {"initial_learning_rate": 0.1, "maximal_learning_rate": 1.0, "total_steps": 10, **kwargs}
        with pytest.raises(ValueError, match=match):
            kac.OneCycle(**arguments)


SCHEDULES = {
    "step_size": (kac.StepDecay, {"initial_learning_rate": 0.2, "step_size": 5, "factor": 0.3, "boundaries": None}),
    "boundaries": (
        kac.StepDecay,
        {"initial_learning_rate": 0.2, "step_size": None, "factor": 0.1, "boundaries": [4, 9]},
    ),
    "cyclic": (kac.TriangularCyclic, {"initial_learning_rate": 0.01, "maximal_learning_rate": 0.4, "step_size": 3}),
    "onecycle": (
        kac.OneCycle,
        {
            "initial_learning_rate": 0.05,
            "maximal_learning_rate": 0.5,
            "total_steps": 12,
            "t_max": 0.25,
            "final_learning_rate": 0.001,
        },
    ),
}


def tiny_model(learning_rate, momentum=0.9):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum), loss="mse")
    return model


@pytest.mark.parametrize("case", list(SCHEDULES))
class TestSerialization:
    def test_config_is_the_constructor_arguments(self, case):
        cls, kwargs = SCHEDULES[case]
        schedule = cls(**kwargs, name="s")
        assert schedule.get_config() == {**kwargs, "name": "s"}
        restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
        assert type(restored) is cls
        assert restored.get_config() == schedule.get_config()
        steps = np.arange(0, 20)
        np.testing.assert_array_equal(evaluate(restored, steps), evaluate(schedule, steps))

    def test_saved_model_keeps_the_schedule(self, case, tmp_path):
        cls, kwargs = SCHEDULES[case]
        model = tiny_model(cls(**kwargs))
        model.optimizer.build(model.trainable_variables)
        path = tmp_path / "model.keras"
        model.save(path)
        schedule = kac.schedules.find_schedule(keras.models.load_model(path).optimizer)
        assert type(schedule) is cls and schedule.get_config() == {**kwargs, "name": cls.__name__}


def test_fit_uses_the_closed_forms():
    """The rate each optimizer step uses is the closed form of its step."""
    x = np.ones((20, 3), "float32")
    y = np.zeros((20, 1), "float32")
    references = {
        "step_size": lambda s: step_decay_reference(s, 0.2, 0.3, step_size=5),
        "boundaries": lambda s: step_decay_reference(s, 0.2, 0.1, boundaries=[4, 9]),
        "cyclic": lambda s: triangular_reference(s, 0.01, 0.4, 3),
        "onecycle": lambda s: one_cycle_reference(s, 0.05, 0.5, 0.001, 12, 0.25),
    }
    for case, (cls, kwargs) in SCHEDULES.items():
        model = tiny_model(cls(**kwargs))
        recorder = LearningRateRecorder()
        model.fit(x, y, batch_size=5, epochs=3, verbose=0, callbacks=[recorder])
        np.testing.assert_allclose(recorder.rates, references[case](np.arange(12)), rtol=1e-6, atol=1e-8, err_msg=case)


class TestBindSchedule:
    @pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "loss_scale"])
    def test_state_lives_in_the_optimizer_that_applies_the_updates(self, wrapped):
        schedule = kac.ActCooLRSchedule(0.2)
        inner = keras.optimizers.SGD(schedule, momentum=0.9)
        optimizer = keras.optimizers.LossScaleOptimizer(inner) if wrapped else inner
        assert kac.schedules.bind_schedule(optimizer) is schedule
        # The schedule holds the rate only (docs/method.md#the-static-controller), one variable each.
        assert [v.name for v in schedule.variables] == [
            f"actcoolr_rate_{key}"
            for key in ("anchor_step", "anchor_learning_rate", "drift", "min_learning_rate", "max_learning_rate")
        ]
        # The controller parts' state: one variable per field, named after its part.
        parts = kac.state.controller_state(optimizer)
        assert sorted(v.name for v in parts.variables) == sorted(
            [f"actcoolr_sigma_{k}" for k in ("sigma", "start_temperature", "ceiling", "pool_examples", "pool_batches", "pool_done")]
            + [f"actcoolr_collapse_{k}" for k in ("collapses", "ceiling", "loss_average", "loss_count", "loss_reference", "loss_minimum")]
            + ["actcoolr_runaway_rise_learning_rate", "actcoolr_runaway_rise_z"]
        )  # fmt: skip
        assert {id(v) for v in parts.variables} <= {id(v) for v in inner.variables}
        assert {id(v) for v in schedule.variables} <= {id(v) for v in inner.variables}
        # Binding again keeps the same variables.
        variables = [id(v) for v in schedule.variables]
        assert kac.schedules.bind_schedule(optimizer) is schedule
        assert [id(v) for v in schedule.variables] == variables

    def test_with_the_layer_count_the_state_holds_the_pooled_counts(self):
        schedule = kac.ActCooLRSchedule(0.2)
        optimizer = keras.optimizers.SGD(schedule)
        kac.schedules.bind_schedule(optimizer, layers=3)
        sigma = kac.state.controller_state(optimizer)["sigma"]
        (pool,) = [v for v in sigma.variables if v.name == "actcoolr_sigma_pool_counts"]
        assert tuple(pool.shape) == (25, 3, 2) and pool.dtype == "float64"
        counts = np.arange(150, dtype=np.float64).reshape(25, 3, 2)
        sigma.write(pool_counts=counts)
        np.testing.assert_array_equal(sigma.read().pool_counts, counts)

    @pytest.mark.parametrize("learning_rate", [0.1, kac.StepDecay(0.1, step_size=5)], ids=["float", "other_schedule"])
    def test_other_learning_rates_bind_nothing(self, learning_rate):
        optimizer = keras.optimizers.SGD(learning_rate)
        count = len(optimizer.variables)
        assert kac.schedules.bind_schedule(optimizer) is None
        assert len(optimizer.variables) == count

    def test_state_reads_the_variables_on_every_call(self):
        schedule = kac.schedules.bind_schedule(keras.optimizers.SGD(kac.ActCooLRSchedule(0.2)))
        assert schedule.state()["drift"] == 0.0
        # As a checkpoint restore does: the variable changes without the schedule's knowledge.
        (drift,) = [v for v in schedule.variables if v.name.endswith("actcoolr_rate_drift")]
        drift.assign(0.25)
        assert schedule.state()["drift"] == 0.25
        assert schedule.value_at(schedule.state()["anchor_step"] + 4) == pytest.approx(0.2 + 4 * 0.25)

    def test_refresh_is_a_deprecated_no_op(self):
        schedule = kac.schedules.bind_schedule(keras.optimizers.SGD(kac.ActCooLRSchedule(0.2)))
        before = schedule.state()
        with pytest.warns(DeprecationWarning, match="refresh"):
            schedule.refresh()
        assert schedule.state() == pytest.approx(before, nan_ok=True)


def momentum_reference(steps, total_steps, t_max, base=0.765, top=0.9):
    last = total_steps - 1
    return np.interp(np.asarray(steps, dtype=np.float64), [0, t_max * last, last], [top, base, top])


def sgd_replay(x, y, batch_size, rates, momenta, nesterov=False):
    """Keras SGD with momentum (`m = momentum * m - lr * g; w += m`) on `mean((x w - y)**2)`, in float64.

    With `nesterov`, `w += momentum * m - lr * g` (the rule in Keras' SGD docstring).
    """
    w = np.zeros((x.shape[1], 1))
    m = np.zeros_like(w)
    batches = len(x) // batch_size
    for step, (rate, momentum) in enumerate(zip(rates, momenta)):
        start = (step % batches) * batch_size
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        gradient = 2.0 / len(xb) * xb.T @ (xb @ w - yb)
        m = momentum * m - rate * gradient
        w = w + (momentum * m - rate * gradient if nesterov else m)
    return w


def regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(40, 1))).astype("float32")
    return x, y


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    import keras_actcoolr as kac

    x, y = (np.array(a, "float32") for a in json.loads(sys.argv[1]))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
        inner = keras.optimizers.SGD(kac.OneCycle(0.01, 0.1, total_steps=20, t_max=0.3), momentum=0.9)
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(inner), loss="mse")
    momenta = []
    recorder = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: momenta.append(inner.momentum))
    model.fit(x, y, batch_size=20, epochs=10, shuffle=False, verbose=0, callbacks=[kac.OneCycleMomentum(), recorder])
    local = strategy.experimental_local_results(model.trainable_variables[0].value)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "momenta": momenta,
        "weights": [np.asarray(w).tolist() for w in local],
        "momentum_after": inner.momentum,
        "config_momentum": inner.get_config()["momentum"],
    }))
    """
)


class TestOneCycleMomentum:
    def test_momentum_follows_the_cycle_inside_the_train_step(self, learning_rate_recorder):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(40, 3)).astype("float32")
        y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(40, 1))).astype("float32")
        total = 21  # the peak of the cycle on step 0.3 * 20 = 6
        schedule = kac.OneCycle(0.01, 0.1, total_steps=total, t_max=0.3)
        model = tiny_model(schedule)
        # A first fit traces the train step with the float momentum 0.9 ...
        model.fit(x, y, batch_size=20, epochs=1, verbose=0, shuffle=False)
        # ... the callback must still reach the traced step of the second fit (steps 2 to 21, one past the cycle).
        recorder = learning_rate_recorder
        model.fit(
            x, y, batch_size=20, epochs=10, verbose=0, shuffle=False,
            callbacks=[kac.OneCycleMomentum(), recorder],
        )  # fmt: skip
        expected_momenta = momentum_reference(np.arange(2, 22), total, 0.3)
        np.testing.assert_allclose(recorder.momenta, expected_momenta, rtol=1e-6)
        assert recorder.momenta[6 - 2] == pytest.approx(0.765, rel=1e-6)
        assert recorder.momenta[-1] == pytest.approx(0.9, rel=1e-6)
        rates = one_cycle_reference(np.arange(22), 0.01, 0.1, 0.0, total, 0.3)
        momenta = np.concatenate([[0.9, 0.9], expected_momenta])
        w = sgd_replay(x.astype(np.float64), y.astype(np.float64), 20, rates, momenta)
        np.testing.assert_allclose(model.get_weights()[0], w, rtol=1e-4, atol=1e-6)
        # The cycle made a difference: a constant momentum of 0.9 ends elsewhere.
        constant = sgd_replay(x.astype(np.float64), y.astype(np.float64), 20, rates, np.full(22, 0.9))
        assert np.max(np.abs(constant - w)) > 100 * np.max(np.abs(model.get_weights()[0] - w))
        # After fit the optimizer holds a float again and saves as usual.
        assert isinstance(model.optimizer.momentum, float)
        assert model.optimizer.get_config()["momentum"] == pytest.approx(expected_momenta[-1])

    def test_explicit_cycle_and_adam_beta_1(self, learning_rate_recorder):
        x = np.ones((30, 3), "float32")
        y = np.zeros((30, 1), "float32")
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        recorder = learning_rate_recorder
        callback = kac.OneCycleMomentum(total_steps=10, t_max=0.5, base_momentum=0.8, max_momentum=0.95)
        model.fit(x, y, batch_size=5, epochs=2, verbose=0, callbacks=[callback, recorder])
        np.testing.assert_allclose(
            recorder.momenta, momentum_reference(np.arange(12), 10, 0.5, base=0.8, top=0.95), rtol=1e-6
        )
        assert isinstance(model.optimizer.beta_1, float)

    def test_model_saved_during_fit_loads(self, tmp_path):
        path = tmp_path / "checkpoint.keras"
        model = tiny_model(kac.OneCycle(0.01, 0.1, total_steps=20, t_max=0.5))
        checkpoint = keras.callbacks.ModelCheckpoint(path)
        model.fit(np.ones((8, 3)), np.zeros((8, 1)), batch_size=4, epochs=1, verbose=0,
                  callbacks=[kac.OneCycleMomentum(), checkpoint])  # fmt: skip
        # Saved at the end of the epoch, after step 1 (L = 19, peak 9.5): 0.9 - 0.135 / 9.5.
        momentum = keras.models.load_model(path).optimizer.momentum
        assert isinstance(momentum, float) and momentum == pytest.approx(0.9 - 0.135 / 9.5)

    def test_nesterov_momentum_follows_the_cycle(self, learning_rate_recorder):
        x, y = regression_data()
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
        schedule = kac.OneCycle(0.01, 0.1, total_steps=20, t_max=0.3)
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True), loss="mse")
        model.fit(x, y, batch_size=20, epochs=10, verbose=0, shuffle=False,
                  callbacks=[kac.OneCycleMomentum(), learning_rate_recorder])  # fmt: skip
        momenta = momentum_reference(np.arange(20), 20, 0.3)
        np.testing.assert_allclose(learning_rate_recorder.momenta, momenta, rtol=1e-6)
        rates = one_cycle_reference(np.arange(20), 0.01, 0.1, 0.0, 20, 0.3)
        w = sgd_replay(x.astype(np.float64), y.astype(np.float64), 20, rates, momenta, nesterov=True)
        np.testing.assert_allclose(model.get_weights()[0], w, rtol=1e-4, atol=1e-6)
        constant = sgd_replay(x.astype(np.float64), y.astype(np.float64), 20, rates, np.full(20, 0.9), nesterov=True)
        assert np.max(np.abs(constant - w)) > 100 * np.max(np.abs(model.get_weights()[0] - w))

    def test_a_later_fit_without_the_callback_keeps_the_last_momentum(self):
        x, y = regression_data()
        model = tiny_model(kac.OneCycle(0.01, 0.1, total_steps=4, t_max=0.5))
        model.fit(x, y, batch_size=20, epochs=1, verbose=0, shuffle=False, callbacks=[kac.OneCycleMomentum()])
        # Steps 0 and 1 of the cycle (L = 3, peak 1.5): 0.9, then 0.9 - 0.135 / 1.5.
        last = 0.9 - 0.135 / 1.5
        assert model.optimizer.momentum == pytest.approx(last)
        before = model.get_weights()[0].astype(np.float64)
        velocity = model.optimizer.momentums[0].numpy().astype(np.float64)
        model.fit(x[:20], y[:20], batch_size=20, epochs=1, verbose=0, shuffle=False)
        # One plain step at the schedule's rate of step 2 with the float momentum, not the cycle's 0.81.
        rate = one_cycle_reference([2], 0.01, 0.1, 0.0, 4, 0.5)[0]
        gradient = 2.0 / 20 * x[:20].T.astype(np.float64) @ (x[:20].astype(np.float64) @ before - y[:20])
        expected = before + float(np.float32(last)) * velocity - rate * gradient
        np.testing.assert_allclose(model.get_weights()[0], expected, rtol=1e-5, atol=1e-7)

    @pytest.mark.slow
    def test_two_replicas_and_a_loss_scale_optimizer_follow_the_cycle(self, tmp_path):
        x, y = regression_data()
        script = tmp_path / "mirrored.py"
        script.write_text(MIRRORED_SCRIPT)
        tests = Path(__file__).resolve().parent
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tests), env.get("PYTHONPATH")]))
        argument = json.dumps([x.tolist(), y.tolist()])
        done = subprocess.run(
            [sys.executable, str(script), argument], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        run = json.loads(done.stdout.splitlines()[-1])
        assert run["replicas"] == 2
        momenta = momentum_reference(np.arange(20), 20, 0.3)
        np.testing.assert_allclose(run["momenta"], momenta, rtol=1e-6)
        rates = one_cycle_reference(np.arange(20), 0.01, 0.1, 0.0, 20, 0.3)
        w = sgd_replay(x.astype(np.float64), y.astype(np.float64), 20, rates, momenta)
        for replica in run["weights"]:
            np.testing.assert_allclose(np.array(replica), w, rtol=1e-4, atol=1e-6)
        assert run["momentum_after"] == run["config_momentum"] == pytest.approx(momenta[-1])

    def test_needs_the_cycle(self):
        model = tiny_model(0.1)
        with pytest.raises(ValueError, match="total_steps"):
            model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0, callbacks=[kac.OneCycleMomentum()])

    def test_needs_momentum(self):
        model = tiny_model(kac.OneCycle(0.01, 0.1, total_steps=10), momentum=0.0)
        with pytest.raises(ValueError, match="momentum=0.0"):
            model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0, callbacks=[kac.OneCycleMomentum()])

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"total_steps": 1}, "total_steps=1"),
            ({"t_max": 1.5}, "t_max=1.5"),
            ({"base_momentum": 0.0}, "base_momentum=0.0"),
            ({"base_momentum": 0.9, "max_momentum": 0.8}, "max_momentum=0.8"),
        ],
        ids=["one_step", "t_max", "zero_base", "max_below_base"],
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            kac.OneCycleMomentum(**kwargs)


@pytest.mark.parametrize(
    "make, received",
    [
        (lambda: kac.ActCooLRSchedule("0.1"), "initial_learning_rate='0.1'"),
        (lambda: kac.StepDecay("0.1", step_size=5), "initial_learning_rate='0.1'"),
        (lambda: kac.OneCycle(0.1, 1.0, total_steps="10"), "total_steps='10'"),
        (lambda: kac.OneCycle(0.1, 1.0, total_steps=10, t_max="0.5"), "t_max='0.5'"),
    ],
    ids=["actcoolr_schedule", "step_decay", "one_cycle_steps", "one_cycle_t_max"],
)
def test_a_string_argument_is_shown_quoted(make, received):
    # `repr`: the quotes tell the string "0.1" from the number 0.1.
    with pytest.raises(ValueError, match=rf"Received: {received}$"):
        make()
