"""A step taken, analysed and undone leaves no trace (`ActCooLR(initial_learning_rate="auto")`).

The reference of each comparison is plain Keras: a model that never saw the
analysed batch, trained on the batches after it. The analysed step must leave
the weights, the optimizer's slots and `iterations`, a `LossScaleOptimizer`'s
scale and step counter, and the metrics as they were. Two replicas of
`MirroredStrategy` run in a child process (`tests/test_distributed.py`).
"""

import json
import os
import subprocess
import sys
import textwrap

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
        return kac.models.AnalysisMode.BEFORE_STEP

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


@pytest.mark.parametrize(
    "optimizer",
    # One optimizer in the fast tier, the others in the slow one.
    [name if name == "sgd_momentum" else pytest.param(name, marks=pytest.mark.slow) for name in sorted(OPTIMIZERS)],
)
def test_analysed_step_leaves_no_trace_on_one_device(fresh_session, optimizer):
    assert_no_trace("none", optimizer)


@pytest.mark.parametrize("strategy", ["one_device", pytest.param("mirrored_one", marks=pytest.mark.slow)])
def test_analysed_step_leaves_no_trace_under_a_strategy(fresh_session, strategy):
    assert_no_trace(strategy, "sgd_momentum")


@pytest.mark.parametrize("optimizer", ["sgd_momentum", pytest.param("adam", marks=pytest.mark.slow)])
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


# ------------------------------------------------------------ two replicas (a child process)

TWO_REPLICAS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    import keras_actcoolr as kac
    import test_undone_step as t

    # One MirroredStrategy for the whole process: two instances would draw the same collective keys.
    TWO = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    STRATEGIES = {
        "none": lambda: tf.distribute.get_strategy(),
        "one_device": lambda: tf.distribute.OneDeviceStrategy("/cpu:0"),
        "two": lambda: TWO,
    }
    t.STRATEGIES.update(STRATEGIES)

    # 1. The analysed step leaves no trace on two replicas, for every optimizer.
    for optimizer in sorted(t.OPTIMIZERS):
        t.assert_no_trace("two", optimizer)

    # 2. Every default of ActCooLR (initial_learning_rate="auto"): the same run on one device and on two
    #    replicas, for the same global batches (a model without batch norm or dropout).
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(512, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 512)


    def run(name):
        strategy = STRATEGIES[name]()
        with strategy.scope():
            keras.utils.set_random_seed(0)
            inputs = keras.Input((8, 8, 1))
            h = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
            h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(h))
            model = kac.convert(keras.Model(inputs, keras.layers.Dense(10)(h)))
            model.compile(
                optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1), momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        controller = kac.ActCooLR()
        model.fit(x, y, batch_size=64, epochs=4, shuffle=False, callbacks=[controller], verbose=0)
        return {
            "replicas": strategy.num_replicas_in_sync,
            "auto_learning_rate": controller.auto_learning_rate,
            "analysis": np.asarray(controller.range_analysis["counts"]).tolist(),
            "history": [
                {k: r[k] for k in ("step", "learning_rate", "temperature", "next_learning_rate")}
                for r in controller.measurements
            ],
            "weights": [w.tolist() for w in model.get_weights()],
        }


    print(json.dumps({name: run(name) for name in STRATEGIES}))
    """
)


@pytest.mark.slow
def test_two_replicas_leave_no_trace_and_equal_one_device_with_every_default(tmp_path):
    script = tmp_path / "two_replicas.py"
    script.write_text(TWO_REPLICAS_SCRIPT)
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    reference = runs["none"]
    assert [runs[name]["replicas"] for name in ("none", "one_device", "two")] == [1, 1, 2]
    assert len(reference["history"]) >= 3
    assert len({round(r["learning_rate"], 6) for r in reference["history"]}) >= 3  # the controller moved the rate
    for name in ("one_device", "two"):
        run = runs[name]
        # Integer counts summed over the replicas: the analysis before the first step is the same.
        np.testing.assert_array_equal(run["analysis"], reference["analysis"])
        assert run["auto_learning_rate"] == pytest.approx(reference["auto_learning_rate"], rel=1e-6)
        assert [r["step"] for r in run["history"]] == [r["step"] for r in reference["history"]]
        for record, expected in zip(run["history"], reference["history"]):
            for key in ("learning_rate", "temperature", "next_learning_rate"):
                assert record[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-9), (name, record["step"], key)
        for weight, expected in zip(run["weights"], reference["weights"]):
            np.testing.assert_allclose(weight, expected, rtol=1e-4, atol=1e-5)
