"""`DynamicActCooLR`: the controller of supplementary section D, which needs no sigma."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_actcoolr import temperature as T
from keras_actcoolr import validation
from keras_actcoolr.callbacks.controller import ControllerCallback
from keras_actcoolr.measurement import DEFAULT_MEASURE, record_measure

__all__ = ["DynamicActCooLR"]

#: Default start of `DynamicActCooLR`'s target: the change probability of the paper's `T0 = 3.03`.
DYNAMIC_START_PROBABILITY = float(T.temperature_to_probability(3.03))


class DynamicActCooLR(ControllerCallback):
    """Dynamic ActCooLR: plain SGD on the learning rate towards a target change probability.

    The controller of the supplementary material's section D, which needs no
    `sigma`. The optimizer's learning rate must be a
    `keras_actcoolr.ActCooLRSchedule` and the model a
    `keras_actcoolr.APTModel`. Every `every_step` steps the model measures the
    network temperature `T` of the step taken at rate `lr`; with its change
    probability `P = 1 - 2**(-T)`, the target `C(progress)`,
    `progress = step / total_steps`, and `dP/dlr := 1`, the error
    `(P - C)**2` gives

    ```python
    step = -rate * 2 * (P - C)      # keras_actcoolr.temperature.dynamic_lr_update
    lr <- lr + step                 # the step after the measurement
    lr <- lr + step                 # again on each following step until the next one
    ```

    on a linear scale, with the rate clamped to
    `[min_learning_rate, max_learning_rate]` (so never negative, NaN or
    infinite). The default target falls linearly from `start_probability` to 0
    (`keras_actcoolr.temperature.linear_probability_curve`).

    Since the step is applied `every_step` times per measurement, the rate
    moves by `2 * rate * every_step * (C - P)` between two measurements: with
    the defaults, by `C - P`. The loop settles where `P = C` when that product
    times `dP/dlr` stays below 2; lower `rate` if the learning rate oscillates.

    `P` is the mean of the layers' change probabilities of `measure`:
    `"vector"`, the paper's whole-vector temperatures, or `"grouped"`, those
    of groups of 8 channels (see `keras_actcoolr.APTReLU`), which do not
    saturate on wide layers.

    It allocates no state of its own: the rate's anchor, drift and bounds
    are the schedule's (`keras_actcoolr.schedules.RateState`).

    `measurements` holds one record per measurement (see `TemperatureLogger`),
    extended by `probability`, `target_probability`, `learning_rate_step`,
    `next_learning_rate` and `measure`.

    Example:

    ```python
    model = keras_actcoolr.convert(model)
    model.compile(
        optimizer=keras.optimizers.SGD(keras_actcoolr.ActCooLRSchedule(0.1), momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=10, callbacks=[keras_actcoolr.DynamicActCooLR(start_probability=0.6)])
    ```

    Args:
        start_probability: Float in (0, 1), the target change probability at
            the start of the default linear curve. Defaults to
            `1 - 2**-3.03` (about 0.878), the probability of the paper's
            start temperature 3.03.
        rate: Positive float, the learning rate `lambda_T` of the SGD on the
            learning rate. Defaults to `0.05`.
        every_step: Integer >= 1, steps between measurements. Defaults to `10`.
        target_probability: Callable `progress -> probability in [0, 1]`
            replacing the linear curve, or `None`. Defaults to `None`.
        total_steps: Integer >= 1 or `None` (take `epochs * steps` from
            `fit`). Needed when the data has no known length.
            Defaults to `None`.
        min_learning_rate: Float >= 0, lower bound of the rate.
            Defaults to `1e-7`.
        max_learning_rate: Float > `min_learning_rate`, upper bound of the
            rate. Defaults to `100.0`.
        measure: `"vector"` or `"grouped"`, the layer temperatures followed
            (see above). Defaults to `"vector"`.

    Raises:
        ValueError: for an argument out of its range, naming it and the
            received value.
    """

    def __init__(
        self,
        start_probability: float = DYNAMIC_START_PROBABILITY,
        rate: float = 0.05,
        every_step: int = 10,
        target_probability: Callable[[float], float] | None = None,
        total_steps: int | None = None,
        min_learning_rate: float = 1e-7,
        max_learning_rate: float = 100.0,
        measure: str = DEFAULT_MEASURE,
    ) -> None:
        super().__init__(every_step, total_steps, min_learning_rate, max_learning_rate, measure)
        self.start_probability = validation.real_in("start_probability", start_probability, 0.0, 1.0)
        self.rate = validation.positive("rate", rate)
        self.target_probability = validation.callable_or_none(
            "target_probability", target_probability, "progress -> probability"
        )
        self._curve = target_probability or T.linear_probability_curve(self.start_probability)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.bind().assign(min_learning_rate=self.min_learning_rate, max_learning_rate=self.max_learning_rate)
        super().on_train_begin(logs)

    def target(self, progress: float) -> float:
        """Target change probability at `progress` in [0, 1]."""
        value = float(self._curve(progress))
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"The target probability must be in [0, 1]. Received: {value} at progress={progress}")
        return value

    def on_measurement(self, record: dict, range_analysis: dict | None) -> None:
        step = record["step"]
        target = self.target(self.progress(step))
        # Section D of the supplementary material follows the mean of the layer probabilities.
        layers = record_measure(record, self.measure)[0]
        probability = T.control_probability(list(layers.values()), mean_of_probabilities=True)
        if probability is None:  # a model without layers to measure cannot get here; be safe
            probability = float(T.temperature_to_probability(record["temperature"]))
        new_rate, rate_step = T.dynamic_lr_update(record["learning_rate"], probability, target, self.rate)
        new_rate = float(np.clip(new_rate, self.min_learning_rate, self.max_learning_rate))
        # A step longer than the whole range only pins the rate to a bound; kept finite in float32.
        reach = min(self.max_learning_rate, T.FLOAT32_MAX) - self.min_learning_rate
        rate_step = float(np.clip(rate_step, -reach, reach))
        self.schedule.assign(anchor_step=step + 1, anchor_learning_rate=new_rate, drift=rate_step)
        self.record_measurement(
            dict(
                record,
                probability=probability,
                target_probability=target,
                learning_rate_step=rate_step,
                next_learning_rate=new_rate,
                measure=self.measure,
            )
        )
