"""`ControllerCallback`: measurements and events kept apart, and docs/method.md's guard example."""

import re
from pathlib import Path

import numpy as np
import pytest
from controller_helpers import converted, data

import keras_actcoolr as kac

METHOD = Path(__file__).resolve().parents[1] / "docs/method.md"


def guard_example() -> dict:
    """The namespace of the code block of docs/method.md's "Adding a guard"."""
    section = METHOD.read_text().split("### Adding a guard", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, str(METHOD), "exec"), namespace)
    return namespace


class TestHistory:
    def controller(self):
        return kac.callbacks.ControllerCallback(
            every_step=2, total_steps=None, min_learning_rate=0.0, max_learning_rate=1.0, measure="vector"
        )

    def test_measurements_and_events_are_kept_apart_and_history_interleaves_them(self):
        controller = self.controller()
        first, event, second = {"step": 0}, {"step": 1, "event": "retry"}, {"step": 2}
        controller.record_measurement(first)
        controller.record_event(event)
        controller.record_measurement(second)
        assert controller.measurements == [first, second]
        assert controller.events == [event]
        assert controller.history == [first, event, second]  # deprecated: both, in the order they came

    def test_assigning_history_splits_it(self):
        controller = self.controller()
        controller.history = [{"step": 0}, {"step": 3, "event": "collapse"}]
        assert controller.measurements == [{"step": 0}]
        assert controller.events == [{"step": 3, "event": "collapse"}]

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"max_learning_rate": "auto"}, "max_learning_rate='auto'"),
            ({"total_steps": 0}, "total_steps=0"),
            ({"min_learning_rate": -1.0}, "min_learning_rate=-1.0"),
            ({"min_learning_rate": 2.0}, "greater than"),
        ],
        ids=["auto_not_allowed", "steps", "minimum", "bounds"],
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        arguments = dict(every_step=2, total_steps=None, min_learning_rate=0.0, max_learning_rate=1.0, measure="vector")
        with pytest.raises(ValueError, match=match):
            kac.callbacks.ControllerCallback(**{**arguments, **kwargs})

    def test_both_controllers_share_it(self):
        assert issubclass(kac.ActCooLR, kac.callbacks.ControllerCallback)
        assert issubclass(kac.DynamicActCooLR, kac.callbacks.ControllerCallback)
        assert kac.ActCooLR.drives_learning_rate and kac.DynamicActCooLR.drives_learning_rate


class TestGuardExample:
    def test_the_guard_limits_a_rise_by_hand(self):
        guard = guard_example()["GentleRise"](1.1)
        update = kac.callbacks.guards.RateUpdate(
            step=10, rate=0.2, new_rate=0.5, drift=0.03, probability=0.4, sigma=1.0, every_step=5, total_steps=100
        )
        limited = guard.limit(update)
        assert limited.new_rate == pytest.approx(0.22) and limited.drift == 0.0
        falling = update.replace(new_rate=0.1, drift=-0.01)
        assert guard.limit(falling) == falling

    def test_the_documented_guard_runs_in_a_fit(self):
        namespace = guard_example()
        controller = namespace["controller"]
        model = converted(initial_learning_rate=0.01)
        x, y = data()
        # sigma given and no range analysis: the controller starts at 0.01 and wants to rise.
        controller.sigma, controller.initial_learning_rate = 2.0, None
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[controller])
        records = controller.measurements
        assert len(records) == 6  # 30 steps, every 5th measured
        rising = [r for r in records if r["next_learning_rate"] > r["learning_rate"]]
        assert rising, "the controller never raised the rate"
        for record in records:
            assert record["next_learning_rate"] <= 1.1 * record["learning_rate"] * (1 + 1e-6)
        # The guard acted: some updates stop exactly at its cap.
        assert any(r["next_learning_rate"] == pytest.approx(1.1 * r["learning_rate"], rel=1e-6) for r in rising)
        rates = np.array([r["learning_rate"] for r in records])
        assert np.all(rates[1:] <= 1.1 * rates[:-1] * (1 + 1e-6))
