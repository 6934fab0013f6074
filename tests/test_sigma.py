"""The sigma estimator: range analyses pooled by adding their counts, stopped at the examples asked for."""

import keras
import numpy as np
import pytest
from controller_helpers import LOSS, converted, data
from scipy import optimize, stats

import keras_actcoolr as kac
from keras_actcoolr.callbacks.sigma import (
    FALLBACK_SIGMA,
    SigmaEstimator,
    SigmaState,
    default_start_temperature,
    momentum_start_temperature,
)
from keras_actcoolr.state import StateVariables

RATES = kac.temperature.RANGE_LEARNING_RATES


def estimator(examples=100, sigma=None, layers=2):
    part = StateVariables(keras.optimizers.SGD(0.1), "sigma", SigmaState, layers=layers)
    return SigmaEstimator(part, sigma, "auto", examples, kac.temperature.EPSILON)


def analysis(unchanged_of, positions=200.0, layers=2):
    """Counts `[rates, layers, (unchanged, positions)]` with `unchanged_of(rate)` unchanged positions."""
    unchanged = np.array([[unchanged_of(lr)] * layers for lr in RATES])
    counts = np.stack([unchanged, np.full_like(unchanged, positions)], axis=-1)
    return {"learning_rates": RATES, "counts": counts}


def erf_unchanged(sigma, mu, positions=200.0):
    return lambda lr: positions * (1.0 - stats.norm.cdf((np.log(lr) - mu) / sigma))


class TestPool:
    def test_counts_add_up_and_temperatures_come_from_the_sums(self):
        part = estimator()
        first = analysis(lambda lr: 150.0)
        second = analysis(lambda lr: 50.0)
        part.pool_add({"examples": 16}, first)
        pooled = part.pool_add({"examples": 16}, second)
        assert (pooled["examples"], pooled["batches"]) == (32, 2)
        np.testing.assert_array_equal(part.read().pool_counts, first["counts"] + second["counts"])
        # 200 unchanged of 400 positions: T = log2(400 / 200) = 1 on every layer and rate.
        np.testing.assert_allclose(pooled["layer_temperatures"], 1.0)

    def test_the_fit_is_the_erf_model_of_the_pool_and_pooling_stops_at_the_examples(self):
        part = estimator(examples=32)
        part.sync()
        assert part.pooling
        pooled = part.pool_add({"examples": 16}, analysis(erf_unchanged(0.8, np.log(0.05))))
        assert part.estimate(pooled, steps_per_epoch=None) is not None and part.pooling
        pooled = part.pool_add({"examples": 16}, analysis(erf_unchanged(0.8, np.log(0.05))))
        sigma, mu = part.estimate(pooled, steps_per_epoch=None)
        assert not part.pooling and part.read().pool_done
        # Reference: the erf model fitted here to the network temperatures of the pooled counts.
        counts = 2 * np.array([erf_unchanged(0.8, np.log(0.05))(lr) for lr in RATES])
        with np.errstate(divide="ignore"):  # no unchanged position at the top rates: T = inf, P = 1
            p = 1.0 - 2.0 ** -np.log2(400.0 / counts)
        model = lambda lr, s, m: stats.norm.cdf((np.log(lr) - m) / s)  # noqa: E731
        reference = optimize.curve_fit(model, RATES, p, p0=(1.0, np.log(0.05)))[0]
        assert (sigma, mu) == pytest.approx(tuple(reference), rel=1e-3)
        assert part.adopt(sigma) == pytest.approx(sigma, rel=1e-7)  # stored as float32
        assert part.sigma == np.float32(sigma)

    def test_an_unfittable_pool_falls_back_once_complete(self):
        part = estimator(examples=16)
        part.sync()
        pooled = part.pool_add({"examples": 16}, analysis(lambda lr: 200.0))  # nothing ever changes
        with pytest.warns(UserWarning, match=f"sigma={FALLBACK_SIGMA}"):
            assert part.estimate(pooled, steps_per_epoch=None) == (FALLBACK_SIGMA, None)

    def test_a_given_sigma_or_a_complete_pool_means_no_pooling(self):
        given = estimator(sigma=1.3)
        given.begin_fit()
        assert not given.pools() and given.sigma == np.float32(1.3)
        done = estimator()
        done.state.write(sigma=0.9, pool_done=True)
        assert not done.pools()
        resumed = estimator()
        resumed.state.write(sigma=0.9, pool_batches=2)  # an unfinished pool of a resumed run goes on
        assert resumed.pools()
        estimated = estimator()
        estimated.state.write(sigma=0.9)  # estimated by a range analysis before the first step, no pool
        assert not estimated.pools()


class TestCeiling:
    def test_ten_times_the_start_rate_at_most_the_top(self):
        part = estimator()
        assert part.set_ceiling(0.02, in_force=100.0, minimum=1e-7) == pytest.approx(0.2)
        assert part.read().ceiling == pytest.approx(0.2)
        assert part.set_ceiling(30.0, in_force=1000.0, minimum=1e-7) == 100.0

    def test_a_ceiling_not_above_the_minimum_is_not_set(self):
        part = estimator()
        with pytest.warns(UserWarning, match="`min_learning_rate` wins"):
            assert part.set_ceiling(0.001, in_force=100.0, minimum=0.5) is None
        assert part.read().ceiling is None


class TestDefaultStartTemperature:
    """`ActCooLR(start_temperature=None)`: `2 - 0.5 log10(min(1 / (1 - momentum), 10))` for SGD, 1.5 for Adam, else 1."""

    @pytest.mark.parametrize(
        "momentum, expected",
        # By hand: 1 / (1 - m) is 1, 2, 5, 10 and 100 (capped at 10); log10 of them 0, 0.30103, 0.69897, 1, 1;
        # 2 minus half of those.
        [(0.0, 2.0), (0.5, 1.849485), (0.8, 1.650515), (0.9, 1.5), (0.99, 1.5)],
    )
    def test_momentum_start_temperature(self, momentum, expected):
        assert momentum_start_temperature(momentum) == pytest.approx(expected, abs=1e-5)

    @pytest.mark.parametrize(
        "optimizer, expected",
        [
            (lambda: keras.optimizers.SGD(0.1), 2.0),
            (lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), 1.5),
            (lambda: keras.optimizers.SGD(0.1, momentum=0.5), 2.0 - 0.5 * np.log10(2.0)),
            (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), 2.0),
            (lambda: keras.optimizers.Adam(), 1.5),
            (lambda: keras.optimizers.AdamW(), 1.5),
            (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()), 1.5),
            (lambda: keras.optimizers.RMSprop(momentum=0.0), 1.0),  # neither SGD nor Adam
            (lambda: keras.optimizers.Nadam(), 1.0),
        ],
    )
    def test_default_start_temperature_of_an_optimizer(self, optimizer, expected):
        assert default_start_temperature(optimizer()) == pytest.approx(expected, rel=1e-12)

    @pytest.mark.parametrize(
        "optimizer, given, expected",
        [
            (lambda rate: keras.optimizers.SGD(rate), None, 2.0),
            (lambda rate: keras.optimizers.SGD(rate, momentum=0.9), None, 1.5),
            (lambda rate: keras.optimizers.RMSprop(rate), None, 1.0),
            (lambda rate: keras.optimizers.Adam(rate), None, 1.5),
            (lambda rate: keras.optimizers.SGD(rate), 1.25, 1.25),
        ],
    )
    def test_the_target_curve_starts_there(self, optimizer, given, expected):
        x, y = data()
        model = converted()
        model.compile(optimizer=optimizer(kac.ActCooLRSchedule(0.01)), loss=LOSS)
        controller = kac.ActCooLR(start_temperature=given, every_step=2, sigma=1.0)
        assert controller.start_in_force() == (1.0 if given is None else given)  # before a fit: no optimizer yet
        model.fit(x, y, batch_size=40, epochs=1, callbacks=[controller], verbose=0)
        assert controller.measurements[0]["target_temperature"] == pytest.approx(expected, rel=1e-12)
        assert controller.start_in_force() == pytest.approx(expected, rel=1e-12)

    def test_a_bad_start_temperature_names_the_choices(self):
        with pytest.raises(ValueError, match='"auto" or None'):
            kac.ActCooLR(start_temperature="hot")
