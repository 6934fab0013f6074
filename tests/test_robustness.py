"""Issue 17, items 2 and 7: the rate is never NaN or infinite; bad input is refused or warned about.

The references are computed here in log space from `scipy.stats.norm` (docs/method.md#the-static-controller
with the target rate clipped to the bounds before the drift is formed), never by the code under test.
"""

import math
import re
import warnings

import keras
import numpy as np
import pytest
from controller_helpers import LOSS, converted, data
from scipy import stats
from sklearn.datasets import load_digits

import keras_actcoolr as kac
from keras_actcoolr import messages, temperature

FLOAT32_MAX = float(np.finfo(np.float32).max)


def log_space_update(lr, p, p_target, sigma, every_step, low, high, epsilon=1e-6):
    """The static update with the target rate clipped to `[low, min(high, float32 max)]`, all in log space."""
    z = stats.norm.ppf(min(max(p, epsilon), 1 - epsilon))
    z_target = stats.norm.ppf(min(max(p_target, epsilon), 1 - epsilon))
    high = min(high, FLOAT32_MAX)
    log_target = math.log(lr) + sigma * (z_target - z)  # finite: sigma * |z gap| <= 100 * 9.6
    log_target = min(max(log_target, math.log(low) if low > 0 else -math.inf), math.log(high))
    lr_target = math.exp(log_target)
    d = (lr_target - lr) / every_step
    return lr + d, d / every_step


EXTREMES = [(0.0, 0.5), (1.0, 0.5), (0.5, 0.0), (0.0, 1.0), (1.0, 0.0), (0.011, 0.5)]
EXTREME_IDS = ["P=0", "P=1", "P*=0", "P=0_P*=1", "P=1_P*=0", "quickstart"]


class TestStaticUpdateNeverOverflows:
    @pytest.mark.parametrize("sigma", [50.0, 100.0], ids=["sigma50", "sigma100"])
    @pytest.mark.parametrize("p, p_target", EXTREMES, ids=EXTREME_IDS)
    @pytest.mark.parametrize("bounds", [(1e-7, 100.0), (0.0, math.inf)], ids=["bounded", "unbounded"])
    def test_matches_the_log_space_reference(self, sigma, p, p_target, bounds):
        low, high = bounds
        lr, every_step = 1e-4, 2
        new_lr, drift = temperature.static_lr_update(
            lr, p, p_target, sigma, every_step, min_learning_rate=low, max_learning_rate=high
        )
        ref_lr, ref_drift = log_space_update(lr, p, p_target, sigma, every_step, low, high)
        np.testing.assert_allclose(new_lr, ref_lr, rtol=1e-9)
        np.testing.assert_allclose(drift, ref_drift, rtol=1e-9)
        # Finite in the float32 variables of the schedule, and between the rate and the clipped target.
        assert np.isfinite(np.float32(new_lr)) and np.isfinite(np.float32(drift))
        assert min(lr, low) <= new_lr <= min(high, FLOAT32_MAX)

    def test_quickstart_measurement_goes_half_way_to_the_ceiling(self):
        # sigma 50, P* = 1/2 and P = 0.011: the unclipped target exp(50 * 2.29) / 1e4 is far above 100, so
        # the target is the ceiling and every_step = 2 takes half the way there: (1e-4 + 100) / 2.
        new_lr, drift = temperature.static_lr_update(1e-4, 0.011, 0.5, 50.0, 2, 1e-6, 1e-7, 100.0)
        assert new_lr == pytest.approx((1e-4 + 100.0) / 2, rel=1e-12)
        assert drift == pytest.approx((100.0 - 1e-4) / 4, rel=1e-12)

    @pytest.mark.parametrize("sigma", [1e300, 1e308], ids=["1e300", "1e308"])
    def test_enormous_sigma_pins_the_rate_to_a_bound(self, sigma):
        up, _ = temperature.static_lr_update(0.1, 0.1, 0.9, sigma, 1, min_learning_rate=1e-3, max_learning_rate=5.0)
        down, _ = temperature.static_lr_update(0.1, 0.9, 0.1, sigma, 1, min_learning_rate=1e-3, max_learning_rate=5.0)
        assert up == 5.0 and down == pytest.approx(1e-3, rel=1e-12)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"probability": math.nan}, "probability=nan"),
            ({"target_probability": math.nan}, "target_probability=nan"),
            ({"sigma": math.inf}, "sigma=inf"),
            ({"sigma": 0.0}, "sigma=0.0"),
            ({"learning_rate": math.inf}, "learning_rate=inf"),
        ],
        ids=["P_nan", "P*_nan", "sigma_inf", "sigma_0", "lr_inf"],
    )
    def test_bad_input_is_refused(self, kwargs, match):
        arguments = dict(learning_rate=0.1, probability=0.5, target_probability=0.4, sigma=1.0, every_step=2)
        with pytest.raises(ValueError, match=match):
            temperature.static_lr_update(**{**arguments, **kwargs})


def built_schedule(initial=0.1):
    schedule = kac.ActCooLRSchedule(initial)
    schedule.build(keras.optimizers.SGD(schedule))
    return schedule


class TestScheduleNeverNaN:
    def test_anchor_step_ignores_the_drift(self):
        # The largest finite float32 drift: on the anchor step the rate is the anchor (no drift * 0),
        # after it the sum overflows to inf and the clip brings it back to the ceiling.
        schedule = built_schedule()
        schedule.assign(anchor_step=5, anchor_learning_rate=2.0, drift=FLOAT32_MAX, max_learning_rate=100.0)
        rates = [float(schedule(step)) for step in (4, 5, 6, 9)]
        assert rates == [2.0, 2.0, 100.0, 100.0]
        assert [schedule.value_at(step) for step in (4, 5, 6, 9)] == [2.0, 2.0, 100.0, 100.0]

    @pytest.mark.parametrize(
        "key, value",
        [("drift", math.inf), ("drift", 1e39), ("anchor_learning_rate", math.nan), ("max_learning_rate", math.nan)],
        ids=["inf_drift", "drift_overflows_float32", "nan_anchor", "nan_ceiling"],
    )
    def test_non_finite_state_is_refused(self, key, value):
        schedule = built_schedule()
        with pytest.raises(ValueError, match=re.escape(f"Received: {key}={value!r}")):
            schedule.assign(**{key: value})

    def test_infinite_ceiling_is_accepted(self):
        schedule = built_schedule()
        schedule.assign(max_learning_rate=math.inf)  # the state before a controller sets a ceiling
        assert float(schedule(0)) == pytest.approx(0.1)


def quickstart_model(initial_learning_rate):
    """The README's quick-start network, compiled with SGD(momentum 0.9) on an ActCooLRSchedule."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(10)(h)))
    schedule = kac.ActCooLRSchedule(initial_learning_rate)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss=LOSS)
    return model, schedule


class RateAndWeights(keras.callbacks.Callback):
    """The rate of every step (float64 `value_at` and the float32 schedule tensor) and the weights' finiteness."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.steps = []

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations)
        state = self.schedule.state()
        self.steps.append(
            {
                "value_at": self.schedule.value_at(step, state),
                "tensor": float(self.schedule(step)),
                "bounds": (state["min_learning_rate"], state["max_learning_rate"]),
            }
        )

    def on_train_batch_end(self, batch, logs=None):
        self.steps[-1]["weights_finite"] = all(np.isfinite(w).all() for w in self.model.get_weights())


class TestQuickstartAtHugeSigma:
    @pytest.mark.parametrize(
        "sigma, switches",
        [
            # The runaway guard would hold the first rise to a factor of 2 (tested in test_guards.py).
            (50.0, {"runaway_guard": False}),
            pytest.param(100.0, {"guards": False, "max_learning_rate": 1.0}, marks=pytest.mark.slow),
        ],
        ids=["sigma50_guards", "sigma100_no_guards"],
    )
    def test_every_rate_is_finite_and_within_bounds(self, sigma, switches):
        digits = load_digits()
        x = (digits.images[:256] / 16.0).astype("float32")[..., None]
        y = digits.target[:256]
        model, schedule = quickstart_model(1e-4)
        controller = kac.ActCooLR(sigma=sigma, initial_learning_rate=None, every_step=2, **switches)
        probe = RateAndWeights(schedule)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the guards may warn about a collapse: not the subject here
            model.fit(x, y, batch_size=64, epochs=2, callbacks=[controller, probe], verbose=0, shuffle=False)
        assert len(probe.steps) == 8
        # The quick-start measurement that overflowed: the first update goes far up (to the ceiling's half).
        first = controller.measurements[0]
        assert first["next_learning_rate"] > 100 * first["learning_rate"]
        for step, seen in enumerate(probe.steps):
            low, high = seen["bounds"]
            assert math.isfinite(high), step
            for rate in (seen["value_at"], seen["tensor"]):
                assert math.isfinite(rate) and low * (1 - 1e-6) <= rate <= high * (1 + 1e-6), (step, seen)
            assert seen["weights_finite"], step
        assert all(np.isfinite(w).all() for w in model.get_weights())


class TestScheduleArguments:
    @pytest.mark.parametrize(
        "value", [np.float32(0.1), np.float64(0.1), 1, np.int64(2)], ids=["f32", "f64", "int", "i64"]
    )
    def test_numpy_and_python_numbers_are_accepted(self, value):
        assert kac.ActCooLRSchedule(value).initial_learning_rate == float(value)

    @pytest.mark.parametrize("value", [True, math.nan, math.inf, 0.0, -1.0, "0.1", None], ids=str)
    def test_bad_initial_rate_is_refused(self, value):
        with pytest.raises(ValueError, match=f"initial_learning_rate.*Received: initial_learning_rate={value!r}"):
            kac.ActCooLRSchedule(value)


class TestActCooLRBounds:
    @pytest.mark.parametrize("value", [100.0, 200.0], ids=["100", "200"])
    def test_minimum_above_the_auto_ceiling_is_refused(self, value):
        with pytest.raises(ValueError, match=f"min_learning_rate.*Received: min_learning_rate={value!r}"):
            kac.ActCooLR(min_learning_rate=value)

    def test_minimum_above_100_with_a_given_ceiling_is_accepted(self):
        controller = kac.ActCooLR(min_learning_rate=200.0, max_learning_rate=300.0)
        assert (controller.min_learning_rate, controller.max_learning_rate) == (200.0, 300.0)

    def test_auto_ceiling_below_the_minimum_warns_and_the_minimum_wins(self, learning_rate_recorder):
        x, y = data()
        model = converted()
        controller = kac.ActCooLR(min_learning_rate=50.0, every_step=2, collapse_guard=False)
        with pytest.warns(
            UserWarning, match=r"automatic `max_learning_rate` .* is not above `min_learning_rate` \(50\)"
        ):
            model.fit(x, y, batch_size=20, epochs=1, callbacks=[controller, learning_rate_recorder], verbose=0)
        # The start analysis' erf model gives exp(mu + sigma * PhiInv(P*)) for T* = 1 (P* = 1/2): ten times
        # that is the automatic ceiling, below the minimum here.
        sigma, mu = controller.range_analysis["sigma"], controller.range_analysis["mu"]
        assert 10 * math.exp(mu + sigma * stats.norm.ppf(1 - 2.0**-1)) < 50.0
        # The minimum wins; the ceiling stays at the top of the range analysis.
        assert all(50.0 * (1 - 1e-6) <= rate <= 100.0 for rate in learning_rate_recorder.rates)
        assert all(record["max_learning_rate"] == 100.0 for record in controller.measurements)


class TestSingleBatch:
    def test_start_analysis_using_the_only_batch_is_warned_about(self):
        x, y = data(n=40)
        model = converted()
        controller = kac.ActCooLR(every_step=1)
        with pytest.warns(UserWarning, match="single batch per epoch.*initial_learning_rate=None"):
            history = model.fit(x, y, batch_size=64, epochs=1, callbacks=[controller], verbose=0)
        # The cause the warning names: the epoch took no optimizer step.
        assert int(model.optimizer.iterations) == 0
        assert history.history["loss"] == [0.0]

    def test_no_warning_without_the_start_analysis(self):
        x, y = data(n=40)
        model = converted()
        controller = kac.ActCooLR(every_step=1, sigma=1.0, initial_learning_rate=None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=64, epochs=1, callbacks=[controller], verbose=0)
        assert not [w for w in caught if "single batch" in str(w.message)]
        assert int(model.optimizer.iterations) == 1


def analysis_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(hidden)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    return model


class TestAnalysisArguments:
    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"batch_size": 0}, "`batch_size` must be an integer >= 1. Received: batch_size=0"),
            ({"batch_size": 2.5}, "Received: batch_size=2.5"),
            ({"batches": 0}, "`batches` must be an integer >= 1 or None. Received: batches=0"),
            ({"batches": 2.5}, "Received: batches=2.5"),
            ({"batches": True}, "Received: batches=True"),
            ({"learning_rates": []}, r"learning_rates.*Received: learning_rates=\[\]"),
            ({"learning_rates": [0.1, math.nan]}, r"Received: learning_rates=\[0.1, nan\]"),
            ({"learning_rates": [0.1, -1.0]}, r"Received: learning_rates=\[0.1, -1.0\]"),
            ({"learning_rates": ["a", "b"]}, r"Received: learning_rates=\['a', 'b'\]"),
        ],
        ids=[
            "batch_size0",
            "batch_size_float",
            "batches0",
            "batches_float",
            "batches_bool",
            "no_rates",
            "nan_rate",
            "negative_rate",
            "text_rates",
        ],
    )
    def test_lr_range_analysis_refuses(self, kwargs, match):
        x, y = data(n=32)
        with pytest.raises(ValueError, match=match):
            kac.lr_range_analysis(analysis_model(), (x, y), **kwargs)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"batch_size": 0}, "Received: batch_size=0"),
            ({"batches": 2.5}, "Received: batches=2.5"),
            ({"learning_rate": True}, "Received: learning_rate=True"),
            ({"learning_rate": math.inf}, "Received: learning_rate=inf"),
        ],
        ids=["batch_size0", "batches_float", "rate_bool", "rate_inf"],
    )
    def test_measure_temperature_refuses(self, kwargs, match):
        x, y = data(n=32)
        with pytest.raises(ValueError, match=match):
            kac.measure_temperature(analysis_model(), (x, y), **{"learning_rate": 0.1, **kwargs})

    @pytest.mark.slow
    def test_numpy_rate_and_single_rate(self):
        x, y = data(n=32)
        model = analysis_model()
        result = kac.measure_temperature(model, (x, y), learning_rate=np.float32(0.5))
        assert result["learning_rate"] == 0.5
        # One positive rate (0 is measured but not fitted): a warning, and no fit.
        with pytest.warns(UserWarning, match="1 distinct positive rate.*needs at least 2"):
            analysed = kac.lr_range_analysis(model, (x, y), learning_rates=[0.0, 0.5])
        assert (analysed.sigma, analysed.mu, analysed.residual) == (None, None, None)
        # The same step measured alike by both tools.
        assert analysed.temperatures[1] == pytest.approx(result["temperature"], rel=1e-12)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"batch_size": 0}, "Received: batch_size=0"),
            ({"batches": 0}, "Received: batches=0"),
            ({"learning_rates": [math.inf]}, r"Received: learning_rates=\[inf\]"),
            ({"at_train_begin": "yes"}, "Received: at_train_begin='yes'"),
        ],
        ids=["batch_size0", "batches0", "inf_rate", "switch"],
    )
    def test_range_logger_refuses_at_construction(self, kwargs, match):
        x, y = data(n=32)
        with pytest.raises(ValueError, match=match):
            kac.RangeAnalysisLogger((x, y), **kwargs)

    def test_range_logger_warns_about_a_single_rate_at_construction(self):
        x, y = data(n=32)
        with pytest.warns(UserWarning, match="needs at least 2"):
            kac.RangeAnalysisLogger((x, y), learning_rates=[0.3])


class TestWarningsAndTheProgressBar:
    @pytest.fixture(autouse=True)
    def closed_line(self):
        messages.progress_line(False)
        yield
        messages.progress_line(False)
        keras.config.enable_interactive_logging()

    def test_an_open_bar_line_is_ended_before_the_warning(self, capsys):
        messages.progress_line(True)
        with pytest.warns(UserWarning, match="the message"):
            messages.warn("the message")
        assert capsys.readouterr().out == "\n"
        # The line is closed now: a second warning of the same step writes no blank line.
        with pytest.warns(UserWarning, match="again"):
            messages.warn("again")
        assert capsys.readouterr().out == ""

    def test_nothing_is_written_without_an_open_line_or_with_logging(self, capsys):
        with pytest.warns(UserWarning):
            messages.warn("no bar")
        keras.config.disable_interactive_logging()
        messages.progress_line(True)
        with pytest.warns(UserWarning):
            messages.warn("absl logging")
        assert capsys.readouterr().out == ""

    def test_the_category_is_kept(self):
        with pytest.warns(DeprecationWarning, match="old"):
            messages.warn("old", DeprecationWarning)

    @pytest.mark.parametrize(
        "verbose, batch, is_open",
        [(1, 0, False), (1, 3, True), ("auto", 2, True), (2, 3, False), (0, 3, False)],
        ids=["first_batch", "verbose1", "auto", "verbose2", "silent"],
    )
    def test_measuring_callbacks_track_the_bar(self, verbose, batch, is_open):
        logger = kac.TemperatureLogger()
        logger.set_params({"verbose": verbose, "epochs": 1, "steps": 4})
        logger.on_train_batch_begin(batch)
        assert messages._line_open is is_open

    @pytest.mark.slow  # a real fit with a progress bar; the line state itself is tested just above
    def test_a_warning_in_the_middle_of_an_epoch_ends_the_bar_line(self, capsys):
        # One epoch of 4 batches with a progress bar: Keras ends its line once, at the end of the epoch
        # (the first fit). A library warning issued during the third step (the second fit) adds
        # exactly one line break before it.
        class WarnsOnce(kac.TemperatureLogger):
            warn_at = None

            def on_measurement(self, record, range_analysis):
                super().on_measurement(record, range_analysis)
                if record["step"] == self.warn_at:
                    messages.warn("mid-epoch warning")

        x, y = data(n=64)
        model = converted()
        logger = WarnsOnce(every_step=1)
        for warn_at, breaks in ((None, 1), (6, 2)):  # the second fit's steps are 4 to 7
            logger.warn_at = warn_at
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.fit(x, y, batch_size=16, epochs=1, callbacks=[logger], verbose=1)
            out = capsys.readouterr().out
            assert len([w for w in caught if "mid-epoch" in str(w.message)]) == breaks - 1
            assert out.count("\n") == breaks and out.endswith("\n")
