"""ActCooLR, ActCooLRSchedule and TemperatureLogger in `model.fit`."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from controller_helpers import LOSS, LearningRateRecorder, converted, data, dead_from_the_start
from scipy import optimize, stats

import keras_actcoolr as kac


class RangeCounts(kac.TemperatureLogger):
    """Keeps the raw range-analysis counts of the steps the model analysed (a test observer)."""

    def __init__(self, wants=True):
        super().__init__(every_step=1)
        self.wants = wants
        self.before = None
        self.counts, self.analysed = [], []

    def wants_range_analysis(self, step):
        return ("before_step" if step == 0 and self.before is None else False) if self.wants == "before" else False

    def on_range_analysis_before_step(self, record, range_analysis):
        self.before = np.array(range_analysis["counts"])

    def on_measurement(self, record, range_analysis):
        super().on_measurement(record, range_analysis)
        if range_analysis is not None:
            self.counts.append(np.array(range_analysis["counts"]))
            self.analysed.append(record["step"])


def fit_by_hand(recorder, **kwargs):
    """`ActCooLR(initial_learning_rate=None, **kwargs)` trained 3 epochs of 12 steps on `data()`; the controller."""
    x, y = data()
    model = converted()
    controller = kac.ActCooLR(initial_learning_rate=None, **kwargs)
    model.fit(x, y, batch_size=10, epochs=3, callbacks=[controller, recorder], verbose=0, shuffle=False)
    return controller


def replay(measured, total, every, sigma, top, target, full_tracking=False):
    """The rate of every step by hand (docs/method.md#the-static-controller), from the measured temperatures.

    A measured step sets the rate of the next step to `rate + d`, then adds a drift of `d / every` per step
    (`d` with full tracking). Returns the rates, `{step: lr_target}` (clipped to the bounds before the drift is
    formed) and whether a target was clipped.
    """
    expected, targets, clipped = [], {}, False
    anchor, anchor_step, drift = 0.1, 0, 0.0
    for step in range(total):
        rate = min(max(anchor + drift * (step - anchor_step), 1e-7), top)
        expected.append(rate)
        if step in measured:
            p = np.clip(1 - 2.0 ** -measured[step], 1e-6, 1 - 1e-6)
            p_target = np.clip(1 - 2.0 ** -target(step / total), 1e-6, 1 - 1e-6)
            lr_target = rate * math.exp(sigma * (stats.norm.ppf(p_target) - stats.norm.ppf(p)))
            clipped = clipped or lr_target > top
            targets[step] = lr_target = min(max(lr_target, 1e-7), top)
            d = (lr_target - rate) / every
            anchor, anchor_step, drift = min(max(rate + d, 1e-7), top), step + 1, d if full_tracking else d / every
    return expected, targets, clipped


class TestActCooLR:
    def test_learning_rate_trajectory_follows_the_controller_by_hand(self, learning_rate_recorder):
        every, sigma, start, gamma, top = 4, 1.3, 2.5, 2.0, 1.5
        recorder = learning_rate_recorder
        controller = fit_by_hand(
            recorder,
            start_temperature=start,
            gamma=gamma,
            every_step=every,
            sigma=sigma,
            max_learning_rate=top,
            guards=False,
        )
        total = 36
        assert len(recorder.rates) == total
        assert [r["step"] for r in controller.history] == list(range(0, total, every))

        # Replay with the measured temperatures as the only input: with the guards off, the paper's update.
        measured = {r["step"]: r["temperature"] for r in controller.history}
        target = lambda progress: start * (1 - progress) ** gamma  # noqa: E731
        expected, _, clipped = replay(measured, total, every, sigma, top, target)
        assert clipped  # the bound is exercised
        np.testing.assert_allclose(recorder.rates, expected, rtol=2e-5)
        for record in controller.history:
            np.testing.assert_allclose(record["learning_rate"], recorder.rates[record["step"]], rtol=1e-6)

    def test_full_tracking_reaches_the_target_rate_at_the_next_measurement(self, learning_rate_recorder):
        # Every guard off but full tracking: the measured step sets the rate of the next step to rate + d,
        # then a drift of d per step, so that the rate is lr_target at the next measured step.
        every, sigma, start, top = 4, 1.3, 2.5, 1.5
        off = dict(layer_filter=False, collapse_guard=False, runaway_guard=False, final_anneal=False)
        recorder = learning_rate_recorder
        controller = fit_by_hand(
            recorder,
            start_temperature=start,
            every_step=every,
            sigma=sigma,
            max_learning_rate=top,
            full_tracking=True,
            **off,
        )
        total = 36
        measured = {r["step"]: r["temperature"] for r in controller.measurements}
        assert sorted(measured) == list(range(0, total, every))
        target = lambda progress: start * (1 - progress)  # noqa: E731
        expected, targets, _ = replay(measured, total, every, sigma, top, target, full_tracking=True)
        np.testing.assert_allclose(recorder.rates, expected, rtol=2e-5)
        for step, lr_target in targets.items():
            if step + every < total:
                np.testing.assert_allclose(recorder.rates[step + every], lr_target, rtol=2e-5)
        # The paper's update (full_tracking=False) moves only (2 * every - 1) / every**2 of the way.
        assert any(abs(targets[s] - expected[s]) > 0.3 * abs(expected[s]) for s in targets if s > 0)

    def test_full_tracking_is_off_by_default_and_without_guards(self):
        assert not kac.ActCooLR().guard_on("full_tracking")
        assert kac.ActCooLR(full_tracking=True).guard_on("full_tracking")
        assert not kac.ActCooLR(full_tracking=True, guards=False).guard_on("full_tracking")
        with pytest.raises(ValueError, match="full_tracking"):
            kac.ActCooLR(full_tracking="yes")

    def test_history_matches_static_lr_update(self):
        x, y = data()
        model = converted()
        controller = kac.ActCooLR(
            initial_learning_rate=None, start_temperature=3.03, every_step=3, sigma=0.8, guards=False
        )
        model.fit(x, y, batch_size=20, epochs=2, callbacks=[controller], verbose=0)
        for record in controller.history:
            target = 3.03 * (1 - record["step"] / 12)
            new_rate, _ = kac.temperature.static_lr_update(
                record["learning_rate"], 1 - 2.0 ** -record["temperature"], 1 - 2.0**-target, 0.8, 3
            )
            assert record["target_temperature"] == pytest.approx(target, rel=1e-12)
            assert record["next_learning_rate"] == pytest.approx(new_rate, rel=1e-12)

    def test_sigma_is_estimated_when_not_given(self):
        x, y = data()
        # The reference: the range analysis of the first batch from the same initial weights (a second
        # model, seeded alike), fitted here with scipy's curve_fit on P = 1 - 2**-T.
        reference = kac.lr_range_analysis(converted(), (x[:20], y[:20]), batch_size=20)
        rates = np.asarray(reference.learning_rates)
        probabilities = 1.0 - 2.0 ** -np.asarray(reference.temperatures)
        start = (1.0, float(np.log(rates[np.argmin(np.abs(probabilities - 0.5))])))
        erf_model = lambda lr, sigma, mu: stats.norm.cdf((np.log(lr) - mu) / sigma)  # noqa: E731
        (reference_sigma, _), _ = optimize.curve_fit(erf_model, rates, probabilities, p0=start)
        model = converted()
        # One batch of examples for the estimate: the first batch's analysis alone.
        controller = kac.ActCooLR(initial_learning_rate=None, every_step=5, sigma_examples=20)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=20, epochs=1, callbacks=[controller], verbose=0, shuffle=False)
        assert [str(w.message) for w in caught if "sigma" in str(w.message)] == []  # no fallback sigma
        sigmas = {r["sigma"] for r in controller.history}
        assert len(sigmas) == 1
        assert sigmas.pop() == pytest.approx(reference_sigma, rel=1e-4)  # stored as float32

    @pytest.mark.parametrize("initial_learning_rate", [None, "auto"])
    def test_sigma_is_estimated_on_the_pooled_counts_of_the_first_batches(self, initial_learning_rate):
        x, y = data()
        model = converted()
        seen = RangeCounts(wants="before" if initial_learning_rate == "auto" else False)
        # 60 examples in batches of 20: three analysed batches (the first one analysed before the
        # first step when the start rate is "auto").
        controller = kac.ActCooLR(initial_learning_rate=initial_learning_rate, every_step=5, sigma_examples=60)
        model.fit(x, y, batch_size=20, epochs=2, callbacks=[controller, seen], verbose=0, shuffle=False)
        # Reference: the counts of the first three analysed batches, added and fitted here.
        batches = ([seen.before] if initial_learning_rate == "auto" else []) + seen.counts
        total = np.sum(batches[:3], axis=0)  # [rates, layers, (unchanged, positions)]
        temperatures = np.mean(np.log2(total[..., 1] / np.maximum(total[..., 0], 0.5)), axis=1)
        probabilities = 1.0 - 2.0**-temperatures
        rates = kac.temperature.RANGE_LEARNING_RATES
        start = (1.0, float(np.log(rates[np.argmin(np.abs(probabilities - 0.5))])))
        erf_model = lambda lr, sigma, mu: stats.norm.cdf((np.log(lr) - mu) / sigma)  # noqa: E731
        (reference_sigma, _), _ = optimize.curve_fit(erf_model, rates, probabilities, p0=start)
        assert controller.history[-1]["sigma"] == pytest.approx(reference_sigma, rel=1e-4)
        # Once the pool is full, the controller measures every `every_step` steps only.
        assert [r["step"] for r in controller.history] == list(range(0, 12, 5))
        analysed_steps = [0, 1, 2] if initial_learning_rate is None else [0, 1]
        assert seen.analysed == analysed_steps

    def test_auto_start_temperature_from_the_first_range_analysis(self):
        x, y = data()
        model = converted()
        seen = RangeCounts(wants="before")
        controller = kac.ActCooLR(start_temperature="auto", every_step=5, guards=False)
        model.fit(x, y, batch_size=20, epochs=1, callbacks=[controller, seen], verbose=0, shuffle=False)
        # Reference: each layer's erf model fitted here to the analysis before the first step; the
        # network temperature (mean of the layers' models) where the median layer is at P = 1/2.
        counts = seen.before
        layer_temperatures = np.log2(counts[..., 1] / np.maximum(counts[..., 0], 0.5))
        rates = kac.temperature.RANGE_LEARNING_RATES
        erf_model = lambda lr, sigma, mu: stats.norm.cdf((np.log(lr) - mu) / sigma)  # noqa: E731
        fits = []
        for column in layer_temperatures.T:
            p = 1.0 - 2.0**-column
            start = (1.0, float(np.log(rates[np.argmin(np.abs(p - 0.5))])))
            fits.append(optimize.curve_fit(erf_model, rates, p, p0=start)[0])
        sigmas, mus = np.array(fits).T
        rate = np.exp(np.median(mus))
        expected = np.clip(np.mean(-np.log2(1.0 - stats.norm.cdf((np.log(rate) - mus) / sigmas))), 0.5, 4.0)
        assert controller.history[0]["target_temperature"] == pytest.approx(expected, rel=1e-4)
        # The start temperature is controller state: kept by the optimizer's variables.
        state = kac.state.controller_state(model.optimizer)["sigma"].read()
        assert state.start_temperature == pytest.approx(expected, rel=1e-4)
        # The first rate is the network erf model's rate for the chosen start temperature.
        p = 1.0 - 2.0 ** -layer_temperatures.mean(axis=1)
        start = (1.0, float(np.log(rates[np.argmin(np.abs(p - 0.5))])))
        sigma, mu = optimize.curve_fit(erf_model, rates, p, p0=start)[0]
        assert controller.history[0]["learning_rate"] == pytest.approx(
            np.exp(mu + sigma * stats.norm.ppf(1.0 - 2.0**-expected)), rel=1e-3
        )

    def test_auto_start_temperature_without_a_fittable_layer_warns_and_starts_at_one(self):
        x, y = data()
        model = dead_from_the_start()
        controller = kac.ActCooLR(start_temperature="auto", sigma=1.0, every_step=2, guards=False)
        with pytest.warns(UserWarning, match="no layer's range analysis could be fitted .*starts at temperature 1.0"):
            model.fit(x, y, batch_size=40, epochs=1, callbacks=[controller], verbose=0)
        assert controller.history[0]["target_temperature"] == 1.0

    @pytest.mark.parametrize("value", ["warm", "AUTO", 0.0, -1.0])
    def test_start_temperature_must_be_positive_or_auto(self, value):
        with pytest.raises(ValueError, match="start_temperature"):
            kac.ActCooLR(start_temperature=value)

    @pytest.mark.parametrize("value", [0, -5, 2.5, True])
    def test_sigma_examples_must_be_a_positive_integer(self, value):
        with pytest.raises(ValueError, match="`sigma_examples` must be an integer >= 1"):
            kac.ActCooLR(sigma_examples=value)

    def test_sigma_given_costs_no_range_analysis(self):
        x, y = data()
        model = converted()
        seen = RangeCounts(wants=False)
        controller = kac.ActCooLR(initial_learning_rate=None, every_step=5, sigma=1.0)
        model.fit(x, y, batch_size=20, epochs=1, callbacks=[controller, seen], verbose=0)
        assert seen.analysed == []
        assert [r["step"] for r in controller.history] == [0, 5]

    @pytest.mark.parametrize(
        "initial_learning_rate",
        [1e-12, 1e4],
        ids=["nothing_changes", "everything_changes"],
    )
    def test_learning_rate_stays_finite_and_bounded(self, initial_learning_rate, learning_rate_recorder):
        x, y = data()
        model = converted(initial_learning_rate, momentum=0.0)
        controller = kac.ActCooLR(
            initial_learning_rate=None,
            every_step=2,
            sigma=2.0,
            max_learning_rate=50.0,
            min_learning_rate=1e-9,
            guards=False,
        )
        recorder = learning_rate_recorder
        model.fit(x, y, batch_size=20, epochs=2, callbacks=[controller, recorder], verbose=0)
        rates = np.array(recorder.rates[1:])
        assert np.all(np.isfinite(rates))
        assert np.all((rates >= 1e-9 * (1 - 1e-6)) & (rates <= 50.0 * (1 + 1e-6)))
        first = controller.history[0]["temperature"]
        if initial_learning_rate < 1:
            assert first == 0.0
        else:
            # Every position changed: capped at -log2(0.5 / 20) = log2(40).
            assert first == pytest.approx(math.log2(40), rel=1e-12)

    def test_total_steps_from_argument_when_the_data_has_no_length(self):
        x, y = data()

        def generate():
            for i in range(0, 120, 20):
                yield x[i : i + 20], y[i : i + 20]

        signature = (tf.TensorSpec((None, 10), tf.float32), tf.TensorSpec((None,), tf.int64))
        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        model = converted()
        with pytest.raises(ValueError, match="total_steps"):
            model.fit(
                dataset,
                epochs=1,
                callbacks=[kac.ActCooLR(initial_learning_rate=None, every_step=2, sigma=1.0)],
                verbose=0,
            )
        controller = kac.ActCooLR(
            initial_learning_rate=None, every_step=2, sigma=1.0, total_steps=6, start_temperature=3.03
        )
        model.fit(dataset, epochs=1, callbacks=[controller], verbose=0)
        assert [r["target_temperature"] for r in controller.history] == pytest.approx(
            [3.03 * (1 - s / 6) for s in (0, 2, 4)]
        )

    def test_optimizer_without_actcoolr_schedule_is_refused(self):
        x, y = data()
        model = converted()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
        with pytest.raises(ValueError, match="ActCooLRSchedule"):
            model.fit(x, y, epochs=1, callbacks=[kac.ActCooLR(initial_learning_rate=None, sigma=1.0)], verbose=0)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"start_temperature": 0.0}, "start_temperature=0.0"),
            ({"start_temperature": -1.0}, "start_temperature=-1.0"),
            ({"start_temperature": float("nan")}, "start_temperature=nan"),
            ({"start_temperature": 25.0}, "rounds to 1"),
            ({"gamma": 0}, "gamma=0"),
            ({"every_step": 0}, "every_step=0"),
            ({"every_step": 2.5}, "every_step=2.5"),
            ({"sigma": -1.0}, "sigma=-1.0"),
            ({"total_steps": 0}, "total_steps=0"),
            ({"min_learning_rate": -1.0}, "min_learning_rate=-1.0"),
            ({"max_learning_rate": 0.0}, "max_learning_rate=0.0"),
            ({"min_learning_rate": 1.0, "max_learning_rate": 0.5}, "greater than"),
            ({"epsilon": 0.0}, "epsilon=0.0"),
            ({"target_temperature": 3.0}, "target_temperature=3.0"),
        ],
        ids=lambda value: str(value) if isinstance(value, dict) else "",
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            kac.ActCooLR(**kwargs)

    def test_target_temperature_callable(self):
        x, y = data()
        model = converted()
        controller = kac.ActCooLR(
            initial_learning_rate=None, every_step=3, sigma=1.0, target_temperature=lambda p: 1.0 + p, guards=False
        )
        model.fit(x, y, batch_size=20, epochs=1, callbacks=[controller], verbose=0)
        assert [r["target_temperature"] for r in controller.history] == pytest.approx([1.0, 1.5])


class TestActCooLRSchedule:
    def test_before_any_measurement_is_the_initial_rate(self):
        schedule = kac.ActCooLRSchedule(0.25)
        assert float(schedule(0)) == 0.25
        assert float(schedule(1000)) == 0.25

    @pytest.mark.parametrize("value", [0.0, -0.1, float("inf"), "0.1"], ids=["zero", "negative", "inf", "string"])
    def test_bad_initial_rate_is_refused(self, value):
        with pytest.raises(ValueError, match="initial_learning_rate"):
            kac.ActCooLRSchedule(value)

    def test_config_round_trip_and_registration(self):
        schedule = kac.ActCooLRSchedule(0.3, name="s")
        config = keras.optimizers.schedules.serialize(schedule)
        restored = keras.optimizers.schedules.deserialize(config)
        assert isinstance(restored, kac.ActCooLRSchedule)
        assert restored.get_config() == {"initial_learning_rate": 0.3, "name": "s"}

    def test_state_survives_save_and_load(self, tmp_path):
        x, y = data()
        model = converted()
        controller = kac.ActCooLR(initial_learning_rate=None, every_step=3, sigma=1.1)
        model.fit(x, y, batch_size=20, epochs=1, callbacks=[controller], verbose=0)
        path = tmp_path / "model.keras"
        model.save(path)
        restored = keras.models.load_model(path)
        assert isinstance(restored, kac.APTModel)
        schedule = kac.schedules.find_schedule(restored.optimizer)
        original = kac.schedules.find_schedule(model.optimizer).state()
        assert schedule.state() == pytest.approx(original, nan_ok=True)
        sigma_state = kac.state.controller_state(model.optimizer)["sigma"].read()
        restored_sigma = kac.state.controller_state(restored.optimizer)["sigma"].read()
        assert (restored_sigma.sigma, restored_sigma.pool_done) == (sigma_state.sigma, sigma_state.pool_done)
        assert sigma_state.sigma == pytest.approx(1.1)
        for step in (5, 6, 7):
            assert float(restored.optimizer.learning_rate if step == 6 else schedule(step)) == pytest.approx(
                kac.schedules.find_schedule(model.optimizer).value_at(step), rel=1e-6
            )


class TestTemperatureLogger:
    def test_records_under_a_constant_rate_without_changing_it(self):
        x, y = data()
        keras.utils.set_random_seed(0)
        inputs = keras.Input((10,))
        hidden = keras.layers.Dense(8, activation="relu")
        model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(hidden(inputs))))
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=LOSS)
        logger = kac.TemperatureLogger(every_step=4)
        model.fit(x, y, batch_size=20, epochs=2, callbacks=[logger], verbose=0)
        assert [r["step"] for r in logger.history] == [0, 4, 8]
        assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
        for record in logger.history:
            assert set(record) == {
                "step",
                "learning_rate",
                "temperature",
                "layers",
                "dead",
                "positions",
                "saturated",
                "loss",
                "examples",
                "group_temperature",
                "group_layers",
                "group_positions",
                "group_saturated",
            }
            assert record["examples"] == 20  # the batch size
            # 8 channels: one group, so the grouped measurement is the paper's (docs/method.md).
            assert record["group_layers"] == record["layers"]
            assert record["group_positions"] == record["positions"]
            assert record["learning_rate"] == pytest.approx(0.05)
            assert list(record["layers"]) == [f"{hidden.name}_relu"]
            assert record["temperature"] == record["layers"][f"{hidden.name}_relu"]

    def test_bad_every_step_is_refused(self):
        with pytest.raises(ValueError, match="every_step=-3"):
            kac.TemperatureLogger(every_step=-3)


class TestLearningRateFreeStart:
    @pytest.mark.slow
    def test_first_rate_does_not_depend_on_the_initial_rate(self):
        x, y = data()
        starts = {}
        for initial in (1.0, 0.1, 1e-3):
            model = converted(initial)
            controller = kac.ActCooLR(start_temperature=1.0, every_step=3, initial_learning_rate="auto")
            recorder = LearningRateRecorder()
            model.fit(x, y, batch_size=20, epochs=1, callbacks=[controller, recorder], verbose=0, shuffle=False)
            # Batch 0 is the analysed (and undone) step; the first kept step comes next, at iteration 0.
            assert recorder.rates[0] == pytest.approx(initial)
            assert controller.history[0]["step"] == 0
            analysis = controller.range_analysis
            expected = math.exp(analysis["mu"] + analysis["sigma"] * stats.norm.ppf(1 - 2.0**-1.0))
            assert controller.auto_learning_rate == pytest.approx(expected, rel=1e-9)
            assert recorder.rates[1] == pytest.approx(controller.auto_learning_rate, rel=1e-6)
            assert int(model.optimizer.iterations) == 5  # 6 batches, one used by the analysis
            starts[initial] = recorder.rates[1]
        rates = np.array(list(starts.values()))
        np.testing.assert_allclose(rates, rates[1], rtol=1e-3)
        assert not any(np.isclose(rates[0], [1.0, 0.1, 1e-3], rtol=1e-2))

    def test_bad_switch_is_refused(self):
        with pytest.raises(ValueError, match="initial_learning_rate='fast'"):
            kac.ActCooLR(initial_learning_rate="fast")


class TestRecordsUnderOtherSchedules:
    def test_records_carry_the_rate_of_their_own_step(self):
        x, y = data()
        model = converted()
        schedule = keras.optimizers.schedules.ExponentialDecay(1.0, decay_steps=1, decay_rate=0.5)
        model.compile(optimizer=keras.optimizers.SGD(schedule), loss=LOSS)
        logger = kac.TemperatureLogger(every_step=1)
        model.fit(x[:40], y[:40], batch_size=10, epochs=1, callbacks=[logger], verbose=0)
        assert [r["learning_rate"] for r in logger.history] == pytest.approx([1.0, 0.5, 0.25, 0.125])


class TestWritingAController:
    def test_the_documented_controller_runs_as_written(self):
        import re
        from pathlib import Path

        page = (Path(__file__).resolve().parents[1] / "docs/method.md").read_text()
        section = page.split("## Writing a controller", 1)[1]
        code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        namespace = {}
        exec(compile(code, "docs/method.md", "exec"), namespace)
        x, y = data()
        keras.utils.set_random_seed(0)
        inputs = keras.Input((10,))
        model = kac.convert(
            keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inputs)))
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=LOSS)
        controller = namespace["HoldTemperature"](temperature=0.5, every_step=3)
        model.fit(x, y, batch_size=20, epochs=1, callbacks=[controller], verbose=0)
        # 6 steps: measured at 0 and 3; the rate after the last one, by hand.
        assert [r["step"] for r in controller.history] == [0, 3]
        last = controller.history[-1]
        expected = last["learning_rate"] * 2.0 ** (0.5 - last["temperature"])
        assert float(model.optimizer.learning_rate) == pytest.approx(expected, rel=1e-6)
        assert controller.history[1]["learning_rate"] == pytest.approx(
            controller.history[0]["learning_rate"] * 2.0 ** (0.5 - controller.history[0]["temperature"]), rel=1e-6
        )
