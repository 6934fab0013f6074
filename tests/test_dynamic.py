"""DynamicActCooLR: the learning-rate trajectory of a fit, replayed by hand, and holding a constant target."""

import keras
import numpy as np
import pytest
from controller_helpers import LOSS, converted, data

import keras_actcoolr as kac


class TestDynamicActCooLR:
    def test_learning_rate_trajectory_follows_the_controller_by_hand(self, learning_rate_recorder):
        x, y = data()
        model = converted()
        every, rate, start, low, high = 4, 0.1, 0.6, 0.01, 0.4
        controller = kac.DynamicActCooLR(
            start_probability=start, rate=rate, every_step=every, min_learning_rate=low, max_learning_rate=high
        )
        recorder = learning_rate_recorder
        model.fit(x, y, batch_size=10, epochs=4, callbacks=[controller, recorder], verbose=0, shuffle=False)
        total = 48
        assert len(recorder.rates) == total
        assert [r["step"] for r in controller.history] == list(range(0, total, every))

        # docs/method.md#the-dynamic-controller with the measured temperatures as the only input: the
        # gradient of (P - C)**2 with dP/dlr = 1 is 2 (P - C); an SGD step of
        # rate `rate` on the learning rate, applied on the step after the
        # measurement and again on every step until the next one.
        measured = {r["step"]: list(r["layers"].values()) for r in controller.history}
        expected = []
        anchor, anchor_step, step_size = 0.1, 0, 0.0
        for step in range(total):
            lr = min(max(anchor + step_size * (step - anchor_step), low), high)
            expected.append(lr)
            if step in measured:
                p = np.mean([1 - 2.0**-t for t in measured[step]])  # the mean of the layer probabilities
                c = start * (1 - step / total)
                step_size = -rate * 2 * (p - c)
                anchor, anchor_step = min(max(lr + step_size, low), high), step + 1
        # The top bound is exercised: the rate climbs to it while P < C, then falls as C goes to 0.
        assert max(expected) == high and expected[-1] < high
        np.testing.assert_allclose(recorder.rates, expected, rtol=1e-5, atol=1e-7)

        for record in controller.history:
            assert record["learning_rate"] == pytest.approx(recorder.rates[record["step"]], rel=1e-6)
            # Supplementary section D: the mean over layers of the layer probabilities.
            layer_probabilities = [1 - 2.0**-t for t in record["layers"].values()]
            assert len(layer_probabilities) > 1
            assert record["probability"] == pytest.approx(np.mean(layer_probabilities), rel=1e-12)
            assert record["target_probability"] == pytest.approx(start * (1 - record["step"] / total), rel=1e-12)
            new_rate, step_size = kac.temperature.dynamic_lr_update(
                record["learning_rate"], record["probability"], record["target_probability"], rate
            )
            assert record["learning_rate_step"] == pytest.approx(step_size, rel=1e-12)
            assert record["next_learning_rate"] == pytest.approx(min(max(new_rate, low), high), rel=1e-12)

    @pytest.mark.parametrize("target", [0.25, 0.5])
    def test_settles_at_a_constant_target(self, target):
        """From a rate that changes almost no pattern, the measured probability settles at the target.

        Tolerance: over the second half of training the mean measured
        probability is within 0.075 of the target. Two effects separate it
        from the target:
        - sampling noise: each measurement is one batch of 128 positions per
          layer, a binomial proportion with standard deviation up to
          0.5 / sqrt(128) = 0.044; the mean of 20 measurements has a standard
          error near 0.01, so 3 standard errors are 0.03;
        - tracking lag: the model grows more sensitive as it trains, so the
          rate that holds the target keeps falling (by about 0.01 per
          measurement on this model), and an integrating controller trails a
          ramp by (ramp per measurement) / (2 * rate * every_step * dP/dlr),
          about 0.01 / 0.4 = 0.025 here with dP/dlr near 1.
        Together about 0.055; 0.075 leaves a margin, and is far below the
        start's distance to the target (at least 0.2).
        """
        rng = np.random.default_rng(0)
        x = rng.normal(size=(512, 10)).astype("float32")
        y = rng.integers(0, 3, 512)
        model = converted(initial_learning_rate=1e-3, momentum=0.0, width=32)
        controller = kac.DynamicActCooLR(every_step=4, target_probability=lambda progress: target)
        model.fit(x, y, batch_size=128, epochs=40, callbacks=[controller], verbose=0)
        probabilities = np.array([r["probability"] for r in controller.history])
        assert len(probabilities) == 40
        assert abs(probabilities[0] - target) > 0.2
        assert abs(probabilities[20:].mean() - target) < 0.075
        rates = np.array([r["learning_rate"] for r in controller.history])
        assert np.all(np.isfinite(rates)) and np.all(rates > 0)

    def test_rate_never_goes_negative(self, learning_rate_recorder):
        x, y = data()
        model = converted(momentum=0.0)
        controller = kac.DynamicActCooLR(
            rate=10.0, every_step=2, target_probability=lambda p: 0.0, min_learning_rate=0.0
        )
        recorder = learning_rate_recorder
        model.fit(x, y, batch_size=20, epochs=2, callbacks=[controller, recorder], verbose=0)
        rates = np.array(recorder.rates)
        assert np.all(np.isfinite(rates)) and np.all(rates >= 0.0)
        assert rates[0] == pytest.approx(0.1) and np.all(rates[1:] == 0.0)

    def test_default_target_is_linear_from_the_start_probability(self):
        x, y = data()
        model = converted()
        controller = kac.DynamicActCooLR(every_step=3)
        model.fit(x, y, batch_size=20, epochs=2, callbacks=[controller], verbose=0)
        start = 1 - 2.0**-3.03  # the change probability of the paper's start temperature
        assert [r["target_probability"] for r in controller.history] == pytest.approx(
            [start * (1 - s / 12) for s in (0, 3, 6, 9)], rel=1e-12
        )

    def test_optimizer_without_actcoolr_schedule_is_refused(self):
        x, y = data()
        model = converted()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
        with pytest.raises(ValueError, match="ActCooLRSchedule"):
            model.fit(x, y, epochs=1, callbacks=[kac.DynamicActCooLR()], verbose=0)

    def test_target_outside_zero_one_is_refused(self):
        x, y = data()
        model = converted()
        with pytest.raises(ValueError, match="target probability must be in"):
            model.fit(x, y, epochs=1, callbacks=[kac.DynamicActCooLR(target_probability=lambda p: 1.5)], verbose=0)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"start_probability": 0.0}, "start_probability=0.0"),
            ({"start_probability": 1.0}, "start_probability=1.0"),
            ({"rate": 0.0}, "rate=0.0"),
            ({"rate": float("inf")}, "rate=inf"),
            ({"every_step": 0}, "every_step=0"),
            ({"target_probability": 0.5}, "target_probability=0.5"),
            ({"total_steps": 0}, "total_steps=0"),
            ({"min_learning_rate": -1.0}, "min_learning_rate=-1.0"),
            ({"min_learning_rate": 1.0, "max_learning_rate": 1.0}, "max_learning_rate=1.0"),
        ],
        ids=lambda value: str(value) if isinstance(value, dict) else "",
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            kac.DynamicActCooLR(**kwargs)
