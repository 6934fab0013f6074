"""The range-analysis engine: the network traced once, the rates looped over in the graph.

The counts of the start-of-training analysis (the train step's) and of
`lr_range_analysis` are checked against NumPy counts of the patterns for
several rates; the graphs are checked to hold the forward pass once for all
the rates; the steps without an analysis measure as the plain measuring step
does; and the analysis runs under `tf.distribute.MirroredStrategy` and XLA.
"""

import json
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_actcoolr as kac
from keras_actcoolr import temperature as T

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RATES = np.asarray(T.RANGE_LEARNING_RATES)


def data(n=128, shape=(10,), classes=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, classes, n)


def mlp(seed=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(12, activation="relu", name="d1")(inputs)
    x = keras.layers.Dense(9, activation="relu", name="d2")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def conv_net(seed=3, dropout=True):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(name="relu")(x)
    if dropout:
        x = keras.layers.Dropout(0.3, seed=7)(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(keras.layers.Flatten()(x))
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def mlp_patterns(weights, x):
    """Patterns (z > 0) of the two ReLU layers of `mlp`, in float32 NumPy."""
    k1, b1, k2, b2 = weights[:4]
    z1 = x @ k1 + b1
    return z1 > 0, (np.maximum(z1, 0) @ k2 + b2) > 0


def numpy_temperatures(before, trials, x):
    """`(K, 2)` layer temperatures `-log2(max(U, 0.5) / N)` of `mlp` for each weight list of `trials`."""
    reference = mlp_patterns(before, x)
    rows = []
    for weights in trials:
        unchanged = [np.all(p0 == p1, axis=-1).sum() for p0, p1 in zip(reference, mlp_patterns(weights, x))]
        rows.append([-np.log2(max(u, 0.5) / len(x)) for u in unchanged])
    return np.array(rows)


def first_step_weights(rate, x, y):
    """The weights of `mlp` before and after one plain Keras SGD step (momentum 0.9) at `rate`."""
    reference = mlp()
    before = [w.numpy() for w in reference.weights]
    reference.compile(optimizer=keras.optimizers.SGD(rate, momentum=0.9), loss=LOSS)
    reference.train_on_batch(x, y)
    return before, [w.numpy() for w in reference.weights]


def interpolated(before, after, rate, rates=RATES):
    """`w0 + (lr_k / lr) * (w1 - w0)` for every rate of `rates`, in float32 as the step computes it.

    The step's rate is the optimizer's float32 value; the ratio is taken in float64, then rounded.
    """
    step = float(np.float32(rate))
    return [[w0 + np.float32(k / step) * (w1 - w0) for w0, w1 in zip(before, after)] for k in rates]


def converted_mlp(rate, jit_compile=False):
    model = kac.convert(mlp())
    model.compile(
        optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(rate), momentum=0.9), loss=LOSS, jit_compile=jit_compile
    )
    return model


def graph_op_types(model):
    """Per trace of the model's train steps by mode: op types of the step's graph and of its function library.

    The mode is None for `train_step`, and the `mode` that the train function passes to `measured_train_step`.
    """
    traces = collections.defaultdict(list)

    def recording(step):
        def recording_step(batch, **kwargs):
            logs = step(batch, **kwargs)
            graph = tf.compat.v1.get_default_graph()
            library = collections.Counter(
                node.op for function in graph.as_graph_def().library.function for node in function.node_def
            )
            outer = collections.Counter(op.type for op in graph.get_operations())
            traces[kwargs.get("mode")].append((outer, library))
            return logs

        return recording_step

    model.train_step = recording(model.train_step)
    if isinstance(model, kac.APTModel):
        model.measured_train_step = recording(model.measured_train_step)
    return traces


class TestStartOfTrainingAnalysis:
    def test_counts_of_every_rate_match_numpy(self):
        # The step analysed and undone is taken at a fixed reference rate, whatever the schedule's (0.1 here).
        rate = kac.models.BEFORE_STEP_LEARNING_RATE
        x, y = data(n=64)
        before, after = first_step_weights(rate, x, y)
        expected = numpy_temperatures(before, interpolated(before, after, rate), x)
        assert expected[0].max() < expected[-1].min()  # the grid spans cold to hot
        assert len(np.unique(expected[:, 1])) > 5

        model = converted_mlp(0.1)
        controller = kac.ActCooLR(every_step=1, initial_learning_rate="auto")
        model.fit(
            np.concatenate([x, x]),
            np.concatenate([y, y]),
            batch_size=64,
            epochs=1,
            callbacks=[controller],
            verbose=0,
            shuffle=False,
        )
        analysis = controller.range_analysis
        np.testing.assert_array_equal(analysis["learning_rates"], RATES)
        np.testing.assert_allclose(analysis["layer_temperatures"], expected, rtol=1e-12, atol=0)
        np.testing.assert_allclose(analysis["temperatures"], expected.mean(axis=1), rtol=1e-12, atol=0)
        # The analysed step's own temperature: the patterns after the step itself.
        (step,) = numpy_temperatures(before, [after], x)
        np.testing.assert_allclose(analysis["step_temperature"], step.mean(), rtol=1e-12)

    def test_sigma_estimated_on_the_first_step_fits_the_numpy_counts(self):
        rate = 0.1
        x, y = data(n=64)
        before, after = first_step_weights(rate, x, y)
        temperatures = numpy_temperatures(before, interpolated(before, after, rate), x).mean(axis=1)
        sigma, _ = T.fit_erf_model(RATES, temperatures)

        model = converted_mlp(rate)
        controller = kac.ActCooLR(every_step=2, initial_learning_rate=None)
        model.fit(x, y, batch_size=64, epochs=1, callbacks=[controller], verbose=0, shuffle=False)
        (record,) = controller.history
        assert record["sigma"] == pytest.approx(float(np.float32(sigma)), rel=1e-6)
        (step,) = numpy_temperatures(before, [after], x)
        np.testing.assert_allclose(record["temperature"], step.mean(), rtol=1e-12)


class TestTracedOnce:
    def test_forward_pass_is_in_the_graph_once_for_all_rates(self):
        x, y = data(n=64, shape=(6, 6, 2), classes=4)
        plain = conv_net()
        plain.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=LOSS)
        # A tf.function that creates variables (the optimizer's, on its first step) is traced twice.
        plain.optimizer.build(plain.trainable_variables)
        plain_traces = graph_op_types(plain)
        plain.fit(x, y, batch_size=16, epochs=1, verbose=0)
        ((plain_ops, _),) = plain_traces[None]

        model = kac.convert(conv_net())
        model.compile(optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.05), momentum=0.9), loss=LOSS)
        model.optimizer.build(model.trainable_variables)
        traces = graph_op_types(model)
        model.fit(
            x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kac.ActCooLR(every_step=1, initial_learning_rate=None)]
        )
        # One trace measures every step, those with the 25-rate analysis and those without.
        assert set(traces) == {"estimate"}
        ((outer, library),) = traces["estimate"]
        convolutions = plain_ops["Conv2D"]
        assert convolutions == 2
        # The step's own forward pass, and one more inside the loop over the rates.
        assert outer["Conv2D"] == convolutions
        assert library["Conv2D"] == convolutions
        assert outer["While"] + outer["StatelessWhile"] == 1

    def test_steps_without_analysis_measure_as_the_measuring_step(self):
        # Same controller, sigma estimated in one run and given in the other: the steps after
        # the first run through the analysing function (no rates) in the one, through the
        # plain measuring function in the other, and must measure the same bit for bit.
        x, y = data(n=96, shape=(6, 6, 2), classes=4)

        def run(sigma):
            model = kac.convert(conv_net())
            model.compile(optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.05), momentum=0.9), loss=LOSS)
            model.optimizer.build(model.trainable_variables)
            traces = graph_op_types(model)
            # sigma estimated on the first batch only: the steps after it have no range analysis.
            controller = kac.ActCooLR(every_step=1, sigma=sigma, initial_learning_rate=None, sigma_examples=16)
            model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[controller])
            return controller.history, {mode: len(t) for mode, t in traces.items()}

        estimated, estimated_traces = run(None)
        sigma = estimated[0]["sigma"]
        given, given_traces = run(sigma)
        assert estimated_traces == {"estimate": 1}
        assert given_traces == {"measure": 1}
        assert len(estimated) == len(given) == 6
        for a, b in zip(estimated, given):
            assert a["step"] == b["step"]
            assert a["layers"] == b["layers"]
            assert a["learning_rate"] == b["learning_rate"]
            assert a["sigma"] == b["sigma"]
        assert len({r["temperature"] for r in given}) > 3


class TestExecutionOptions:
    def test_xla_gives_the_counts_of_the_graph(self):
        x, y = data(n=128)
        results = {}
        for jit_compile in (False, True):
            model = converted_mlp(0.1, jit_compile=jit_compile)
            controller = kac.ActCooLR(every_step=1, initial_learning_rate="auto")
            model.fit(x, y, batch_size=64, epochs=1, callbacks=[controller], verbose=0, shuffle=False)
            results[jit_compile] = controller.range_analysis["layer_temperatures"]
        assert len(np.unique(results[False])) > 10
        # XLA may round a pre-activation otherwise: allow one position per layer and rate to differ.
        unchanged = {jit: 64 * 2.0**-temperatures for jit, temperatures in results.items()}
        assert np.abs(unchanged[True] - unchanged[False]).max() <= 1 + 1e-9


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    import keras_actcoolr as kac

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 10)).astype("float32")
    y = rng.integers(0, 3, 128)


    def run(devices, in_scope):
        strategy = tf.distribute.MirroredStrategy(devices) if devices else tf.distribute.get_strategy()
        with strategy.scope():
            keras.utils.set_random_seed(5)
            inputs = keras.Input((10,))
            h = keras.layers.Dense(12, activation="relu", name="d1")(inputs)
            h = keras.layers.Dense(9, activation="relu", name="d2")(h)
            model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(h)))
            model.compile(
                optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1), momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        controller = kac.ActCooLR(every_step=1, initial_learning_rate="auto")
        fit = lambda: model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0, callbacks=[controller])
        if in_scope:
            with strategy.scope():
                fit()
        else:
            fit()
        return {
            "analysis": controller.range_analysis["layer_temperatures"].tolist(),
            "history": [r["temperature"] for r in controller.history],
        }


    print(json.dumps({
        "none": run(None, False),
        "two": run(["/cpu:0", "/cpu:1"], False),
        "two_in_scope": run(["/cpu:0", "/cpu:1"], True),
    }))
    """
)


@pytest.mark.slow
class TestMirroredStrategy:
    def test_two_replicas_count_as_one(self, tmp_path):
        # Logical devices must be set before TensorFlow starts: a child process.
        script = tmp_path / "mirrored.py"
        script.write_text(MIRRORED_SCRIPT)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        runs = json.loads(done.stdout.strip().splitlines()[-1])
        reference = np.array(runs["none"]["analysis"])
        assert reference.shape == (len(RATES), 2) and len(np.unique(reference)) > 10
        for name in ("two", "two_in_scope"):
            # Counts are integers summed over the replicas: the same as on one device.
            np.testing.assert_array_equal(np.array(runs[name]["analysis"]), reference)
            np.testing.assert_allclose(runs[name]["history"], runs["none"]["history"], rtol=1e-6)


class TestLrRangeAnalysis:
    def test_counts_of_every_rate_match_numpy(self):
        x, y = data(n=64)
        reference = mlp()
        model = kac.convert(reference)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
        with tf.GradientTape() as tape:
            loss = LOSS(y, reference(x, training=True))
        gradients = [g.numpy() for g in tape.gradient(loss, reference.trainable_weights)]
        before = [w.numpy() for w in reference.trainable_weights]
        rates = [0.003, 0.1, 0.7, 5.0]
        # The trial step (docs/method.md): the SGD step at the model's rate 0.1, `w1 = w - float32(0.1) * g`
        # in float32, scaled to each rate.
        after = [w - np.float32(0.1) * g for w, g in zip(before, gradients)]
        trials = interpolated(before, after, 0.1, rates)
        expected = numpy_temperatures(before, trials, x)
        assert len(np.unique(expected)) > 4

        result = kac.lr_range_analysis(model, (x, y), learning_rates=rates, batch_size=64)
        np.testing.assert_allclose(result.layer_temperatures, expected, rtol=1e-12, atol=0)
        runner = kac.analysis._runner(model)
        assert runner._trial.experimental_get_tracing_count() == 1
