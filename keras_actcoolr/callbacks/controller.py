"""`ControllerCallback`: what the ActCooLR controllers share (steps, bounds, schedule binding, history)."""

from __future__ import annotations

from typing import Any

from keras_actcoolr import messages, validation
from keras_actcoolr import temperature as T
from keras_actcoolr.callbacks.base import MeasuringCallback, bind_controller
from keras_actcoolr.measurement import check_measure
from keras_actcoolr.schedules import ActCooLRSchedule

__all__ = ["ControllerCallback"]


class ControllerCallback(MeasuringCallback):
    """Base of the callbacks that drive an `ActCooLRSchedule` from measurements.

    It validates and keeps what every controller has (the number of steps
    of the target curve, the bounds of the rate, the measure), binds the
    optimizer's `ActCooLRSchedule` at `on_train_begin` (`schedule`,
    `curve_steps`), declares that it drives the learning rate
    (`APTModel.fit` refuses other callbacks that set it), and keeps two
    lists: `measurements` (one record per measurement) and `events` (one
    record per event, each with an `"event"` key). A subclass implements
    `target(progress)` and `on_measurement`.

    Args:
        every_step: Integer >= 1, steps between measurements.
        total_steps: Integer >= 1 or `None` (take `epochs * steps` from `fit`).
        min_learning_rate: Float >= 0, lower bound of the rate.
        max_learning_rate: Float > `min_learning_rate`, upper bound of the
            rate, or `"auto"` where `allow_auto`.
        measure: `"vector"` or `"grouped"`, the layer temperatures followed.
        allow_auto: Whether `max_learning_rate="auto"` is accepted.

    Raises:
        ValueError: for an argument out of its range, naming it and the
            received value.
    """

    #: `APTModel.fit` refuses other callbacks that set the rate next to a callback that says True here.
    drives_learning_rate = True

    def __init__(
        self,
        every_step: int,
        total_steps: int | None,
        min_learning_rate: float,
        max_learning_rate: float | str,
        measure: str,
        allow_auto: bool = False,
    ) -> None:
        super().__init__(every_step)
        self.measure = check_measure(measure)
        self.total_steps = validation.integer_at_least_one("total_steps", total_steps, allow_none=True)
        self.min_learning_rate = validation.non_negative("min_learning_rate", min_learning_rate)
        top = float(T.RANGE_LEARNING_RATES[-1])
        if allow_auto and max_learning_rate == "auto":
            if self.min_learning_rate >= top:
                raise ValueError(
                    f"`min_learning_rate` must be below {top:g}, the highest rate of the range analysis and the "
                    'largest ceiling that `max_learning_rate="auto"` can set; pass a number greater than '
                    f"`min_learning_rate` as `max_learning_rate`. Received: min_learning_rate={min_learning_rate!r}"
                )
            self.max_learning_rate: float | str = "auto"
        else:
            self.max_learning_rate = validation.positive("max_learning_rate", max_learning_rate)
            if self.max_learning_rate <= self.min_learning_rate:
                raise ValueError(
                    "`max_learning_rate` must be greater than `min_learning_rate`. "
                    f"Received: min_learning_rate={min_learning_rate!r}, max_learning_rate={max_learning_rate!r}"
                )
        self.schedule: ActCooLRSchedule | None = None
        self.curve_steps: int | None = None
        self.measurements: list[dict] = []
        self.events: list[dict] = []

    @property
    def history(self) -> list[dict]:
        """Deprecated: the measurements and the events in the order they came (use `measurements` and `events`).

        Kept for a release: a list built on each read, so appending to it changes nothing.
        """
        return list(self._order)

    @history.setter
    def history(self, records: list[dict]) -> None:
        self._order: list[dict] = list(records)
        self.measurements = [r for r in records if "event" not in r]
        self.events = [r for r in records if "event" in r]

    def on_measurement(self, record: dict, range_analysis: dict | None) -> None:
        """Keep the record in `measurements` (a subclass computes its update here)."""
        self.record_measurement(dict(record))

    def record_measurement(self, record: dict) -> None:
        """Append a measurement record."""
        self.measurements.append(record)
        self._order.append(record)

    def record_event(self, event: dict) -> None:
        """Append an event record (a dict with an `"event"` key)."""
        self.events.append(event)
        self._order.append(event)

    def bind(self) -> ActCooLRSchedule:
        """Bind the optimizer's `ActCooLRSchedule` and the curve's length (`on_train_begin`)."""
        self.schedule, self.curve_steps = bind_controller(self)
        return self.schedule

    def progress(self, step: int, origin: int = 0) -> float:
        """Position of `step` on the target curve (from `origin`), in [0, 1]."""
        return min(max(step - origin, 0) / self.curve_steps, 1.0)

    def target(self, progress: float) -> Any:
        """The target at `progress` in [0, 1] (a temperature or a probability)."""
        raise NotImplementedError

    def place_curve(self, start: int, epoch: int) -> int:
        """Place the target curve at the fit's first epoch: its origin (0: the curve goes on from step 0).

        The curve spans `total_steps` (given, or `epochs * steps` of `fit`)
        counted from step 0 of the optimizer. A fit that starts at or past its
        end (or, without `total_steps`, would run at least an epoch past it: a
        second `fit` without `initial_epoch`) gets a new curve from its first
        step, over its own steps (`total_steps` when given), with a warning
        and a `"new_curve"` event.
        """
        length = self.curve_steps
        steps, epochs = (self.params or {}).get("steps"), (self.params or {}).get("epochs")
        fit_steps = int(steps) * (int(epochs) - int(epoch)) if steps and epochs else None
        if start >= length:
            where = f"which is at or past the end of its target curve (step {length})"
        elif self.total_steps is None and fit_steps is not None and start + fit_steps - length >= steps:
            where = (
                f"and runs {fit_steps} steps, to step {start + fit_steps}, past the end of its target "
                f"curve (step {length})"
            )
        else:
            return 0
        source = "`total_steps`" if self.total_steps is not None else "`epochs` times the steps per epoch"
        self.curve_steps = int(self.total_steps if self.total_steps is not None else (fit_steps or length))
        reason = (
            f"this fit starts at optimizer step {start} {where}; the curve's length comes from {source} and "
            "its steps are counted by the optimizer, whose step count goes on across fits"
        )
        self.record_event(
            {"step": start, "event": "new_curve", "reason": reason, "origin": start, "total_steps": self.curve_steps}
        )
        messages.warn(
            f"{type(self).__name__}: {reason}. {type(self).__name__} follows a new target curve of "
            f"{self.curve_steps} steps from step {start} (from the start temperature down to 0 at step "
            f"{start + self.curve_steps}). To continue the earlier curve instead, pass `initial_epoch` to `fit` "
            "(e.g. `fit(epochs=4, initial_epoch=2)` after `fit(epochs=2)`); to set the curve's length across "
            "fits, pass `ActCooLR(total_steps=...)`.",
            stacklevel=3,
        )
        return start
