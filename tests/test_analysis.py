"""lr_range_analysis and measure_temperature: state untouched, counts against NumPy, erf fit."""

import keras
import numpy as np
import pytest
from scipy import stats

import keras_actcoolr as kac
from keras_actcoolr import analysis

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def data(n=128, shape=(10,), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, 3, n)


def mlp(seed=4):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(12, activation="relu", name="d1")(inputs)
    x = keras.layers.Dense(9, activation="relu", name="d2")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def bn_dropout_model(seed=4):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Dropout(0.25, seed=3)(keras.layers.Flatten()(x))
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    return kac.convert(keras.Model(inputs, keras.layers.Dense(3)(x)))


def snapshot(model):
    return [v.numpy().copy() for v in model.variables] + [v.numpy().copy() for v in model.optimizer.variables]


class TestStateIsRestored:
    @pytest.mark.parametrize(
        "optimizer",
        [lambda: keras.optimizers.SGD(kac.ActCooLRSchedule(0.05), momentum=0.9), lambda: keras.optimizers.Adam(1e-3)],
        ids=["sgd_momentum_actcoolr_schedule", "adam"],
    )
    def test_every_variable_is_restored_bit_for_bit(self, optimizer):
        x, y = data(n=64, shape=(6, 6, 2))
        model = bn_dropout_model()
        model.compile(optimizer=optimizer(), loss=LOSS)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # non-zero slots, statistics and seed state
        before = snapshot(model)
        count = len(model.optimizer.variables)
        result = kac.lr_range_analysis(model, (x, y), batch_size=16, batches=2)
        kac.measure_temperature(model, (x, y), batch_size=16)
        after = snapshot(model)
        assert len(model.optimizer.variables) == count
        assert len(before) == len(after)
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
        assert result.layer_names == ("relu", "hidden_relu")
        # Training goes on as if no analysis had happened.
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        assert np.isfinite(history.history["loss"][0])

    def test_functions_are_traced_once_for_all_rates(self):
        x, y = data()
        model = kac.convert(mlp())
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
        kac.lr_range_analysis(model, (x, y), batches=2)
        kac.lr_range_analysis(model, (x, y), batches=2)
        runner = kac.analysis._runner(model)  # the cached runner (tests may read private state)
        assert runner._trial.experimental_get_tracing_count() == 1
        assert runner._record.experimental_get_tracing_count() == 1


class TestCountsAgainstNumPy:
    def test_measure_temperature_sums_counts_over_batches(self):
        x, y = data(n=96)
        reference = mlp()
        model = kac.convert(reference)
        model.compile(optimizer=keras.optimizers.SGD(0.9), loss=LOSS)
        before = [w.numpy() for w in reference.weights]
        reference.compile(optimizer=keras.optimizers.SGD(0.9), loss=LOSS)
        reference.train_on_batch(x[:32], y[:32])  # the step batch: the first batch of the data
        after = [w.numpy() for w in reference.weights]

        def patterns(weights, xb):
            k1, b1, k2, b2 = weights[:4]
            z1 = xb @ k1 + b1
            return z1 > 0, (np.maximum(z1, 0) @ k2 + b2) > 0

        unchanged = np.zeros(2)
        for start in range(0, 96, 32):
            xb = x[start : start + 32]
            for i, (p0, p1) in enumerate(zip(patterns(before, xb), patterns(after, xb))):
                unchanged[i] += np.all(p0 == p1, axis=-1).sum()
        assert 0 < unchanged.min() and unchanged.max() < 96

        result = kac.measure_temperature(model, (x, y), batch_size=32)
        assert isinstance(result, kac.RangeAnalysis)
        assert result.examples == 96 and result.layers == result["layers"]
        assert result["examples"] == 96
        assert result["positions"] == {"d1_relu": 96.0, "d2_relu": 96.0}
        assert result["unchanged"] == {"d1_relu": unchanged[0], "d2_relu": unchanged[1]}
        expected = -np.log2(unchanged / 96)
        np.testing.assert_allclose(list(result["layers"].values()), expected, rtol=1e-12)
        np.testing.assert_allclose(result["temperature"], expected.mean(), rtol=1e-12)
        assert result["learning_rate"] == pytest.approx(0.9)

    def test_range_analysis_agrees_with_measure_temperature(self):
        x, y = data()
        model = kac.convert(mlp())
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss=LOSS)
        rates = [0.01, 0.3, 4.0]
        result = kac.lr_range_analysis(model, (x, y), learning_rates=rates, batches=3)
        for k, rate in enumerate(rates):
            single = kac.measure_temperature(model, (x, y), learning_rate=rate, batches=3)
            np.testing.assert_allclose(result.temperatures[k], single["temperature"], rtol=1e-12)
            np.testing.assert_allclose(result.layer("d2_relu")[k], single["layers"]["d2_relu"], rtol=1e-12)


class TestRangeAnalysis:
    def test_temperature_rises_with_the_learning_rate_until_saturation(self):
        x, y = data(n=256, shape=(6, 6, 2))
        model = bn_dropout_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
        result = kac.lr_range_analysis(model, (x, y), batch_size=64, batches=4)
        temperatures = result.temperatures
        peak = int(np.argmax(temperatures))
        assert peak >= len(temperatures) // 2
        assert temperatures[0] < 0.1 * temperatures[peak]
        # Non-decreasing up to the peak; a measurement is a count, so allow one flip of slack.
        steps = np.diff(temperatures[: peak + 1])
        assert np.all(steps >= -0.02), steps
        assert result.sigma is not None and result.sigma > 0
        assert result.residual < 0.1

    def test_fit_recovers_a_known_erf_model(self):
        rates = kac.temperature.RANGE_LEARNING_RATES
        sigma, mu = 1.7, np.log(0.3)
        temperatures = -np.log2(1 - stats.norm.cdf((np.log(rates) - mu) / sigma))
        fitted_sigma, fitted_mu, residual = analysis.fit_range(rates, temperatures)
        np.testing.assert_allclose([fitted_sigma, fitted_mu], [sigma, mu], rtol=1e-5)
        assert residual < 1e-6

    def test_predicted_learning_rate_inverts_the_model(self):
        result = analysis.RangeAnalysis(
            np.array([0.1, 1.0]), np.full((2, 1, 2), 8.0), layer_names=("a",), examples=1, sigma=2.0, mu=-1.0
        )
        rate = result.predicted_learning_rate(3.03)
        expected = np.exp(-1.0 + 2.0 * stats.norm.ppf(1 - 2.0**-3.03))
        np.testing.assert_allclose(rate, expected, rtol=1e-12)
        assert result.as_dict()["sigma"] == 2.0


class TestErrors:
    def test_plain_model_is_refused(self):
        model = mlp()
        model.compile(optimizer="sgd", loss=LOSS)
        with pytest.raises(ValueError, match="APTModel"):
            kac.lr_range_analysis(model, data())

    def test_uncompiled_model_is_refused(self):
        with pytest.raises(ValueError, match="compile"):
            kac.measure_temperature(kac.convert(mlp()), data())

    @pytest.mark.parametrize(
        "bad, error, match",
        [("text", TypeError, "must be a batched tf.data.Dataset"), ([], ValueError, "`learning_rates` must be finite")],
        ids=["not_data", "empty_rates"],
    )
    def test_bad_arguments_are_refused(self, bad, error, match):
        model = kac.convert(mlp())
        model.compile(optimizer="sgd", loss=LOSS)
        with pytest.raises(error, match=match):
            if error is TypeError:
                kac.lr_range_analysis(model, bad)
            else:
                kac.lr_range_analysis(model, data(), learning_rates=bad)

    def test_step_batch_needs_targets(self):
        model = kac.convert(mlp())
        model.compile(optimizer="sgd", loss=LOSS)
        with pytest.raises(ValueError, match="targets"):
            kac.measure_temperature(model, data()[0])
