"""The base of the callbacks that ask an `APTModel` for measurements, and the controller binding."""

from __future__ import annotations

from typing import Any

import keras

from keras_actcoolr import messages, validation
from keras_actcoolr.models import AnalysisMode, MeasurementObserver, require_apt_model
from keras_actcoolr.schedules import ActCooLRSchedule, bind_schedule, find_schedule

__all__ = ["MeasuringCallback", "bind_controller", "require_apt_model"]


def bind_controller(callback: Any) -> tuple[ActCooLRSchedule, int]:
    """The `ActCooLRSchedule` a controller callback drives, and the number of training steps."""
    name = type(callback).__name__
    model = require_apt_model(callback.model, name)
    schedule = bind_schedule(model.optimizer)
    if schedule is None:
        other = find_schedule(model.optimizer)
        raise ValueError(
            f"{name} drives an `keras_actcoolr.ActCooLRSchedule`: create the optimizer with one, for "
            "example `keras.optimizers.SGD(keras_actcoolr.ActCooLRSchedule(0.1))`. "
            f"Received: learning_rate of type {type(other or model.optimizer.learning_rate).__name__}"
        )
    steps = callback.total_steps
    if steps is None:
        steps_per_epoch, epochs = callback.params.get("steps"), callback.params.get("epochs")
        if not steps_per_epoch or not epochs:
            raise ValueError(
                f"{name} needs the total number of training steps, and `fit` does not know it (the data "
                f"has no known length). Pass `{name}(total_steps=...)` or `steps_per_epoch` to fit."
            )
        steps = int(steps_per_epoch) * int(epochs)
    return schedule, steps


class MeasuringCallback(keras.callbacks.Callback, MeasurementObserver):
    """Base of the callbacks that ask an `APTModel` for measurements (a `keras_actcoolr.models.MeasurementObserver`).

    It registers with the model for the length of `fit` and keeps the records
    in `history`. A subclass overrides what it needs of the observer protocol:
    `steps_to_measurement` (default: every `every_step` steps),
    `wants_range_analysis` (default: `AnalysisMode.NONE`), `on_measurement`
    (default: append the record to `history`), `on_range_analysis_before_step`
    and `on_divergence` (default: not handled).

    Args:
        every_step: Integer >= 1, measure on optimizer steps that are
            multiples of it.

    Raises:
        ValueError: at the start of `fit`, if the model is no `APTModel` with
            an `APTReLU` layer.

    Example:

    ```python
    class FirstTemperature(keras_actcoolr.callbacks.MeasuringCallback):
        def on_measurement(self, record, range_analysis):
            super().on_measurement(record, range_analysis)
            print(record.step, record.temperature)
    ```
    """

    def __init__(self, every_step: int) -> None:
        super().__init__()
        self.every_step = validation.integer_at_least_one("every_step", every_step)
        self.history: list[dict] = []
        self.remaining_steps: int | None = None

    def wants_range_analysis(self, step: int) -> AnalysisMode:
        """`AnalysisMode.NONE`: no range analysis with the measurements."""
        return AnalysisMode.NONE

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.remaining_steps = None
        require_apt_model(self.model, type(self).__name__).add_measurement_observer(self)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        steps = self.params.get("steps") if self.params else None
        self.remaining_steps = steps - batch if steps else None
        # After the epoch's first batch, Keras' progress bar (verbose=1) holds an open line of stdout.
        verbose = self.params.get("verbose") if self.params else None
        messages.progress_line(batch > 0 and verbose in (1, "auto"))

    def on_train_end(self, logs: dict | None = None) -> None:
        messages.progress_line(False)
        self.model.remove_measurement_observer(self)

    def on_measurement(self, record: dict, range_analysis: dict | None) -> None:
        self.history.append(dict(record))
