"""Keras callbacks: the `ActCooLR` controller and the `TemperatureLogger`."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable

import keras
import numpy as np

from keras_actcoolr import temperature as T
from keras_actcoolr.models import APTModel
from keras_actcoolr.schedules import ActCooLRSchedule, find_schedule

__all__ = ["ActCooLR", "TemperatureLogger"]

#: sigma used when the range analysis at the start cannot be fitted (see the README).
FALLBACK_SIGMA = 1.0


def _check_every_step(every_step: Any) -> int:
    if isinstance(every_step, bool) or not isinstance(every_step, numbers.Integral) or every_step < 1:
        raise ValueError(f"`every_step` must be an integer >= 1. Received: every_step={every_step}")
    return int(every_step)


def _require_apt_model(model: Any, callback: str) -> APTModel:
    if not isinstance(model, APTModel):
        raise ValueError(
            f"{callback} needs a `keras_actcoolr.APTModel` (build one with `keras_actcoolr.convert(model)`). "
            f"Received: model of type {type(model).__name__}"
        )
    return model


class _MeasuringCallback(keras.callbacks.Callback):
    """Registers with the `APTModel` for the length of `fit` and keeps the measurement records."""

    def __init__(self, every_step: int) -> None:
        super().__init__()
        self.every_step = _check_every_step(every_step)
        self.history: list[dict] = []

    def wants_range_analysis(self, step: int) -> bool:
        return False

    def on_train_begin(self, logs: dict | None = None) -> None:
        _require_apt_model(self.model, type(self).__name__)._apt_add_observer(self)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        steps = self.params.get("steps") if self.params else None
        self.model._apt_remaining = steps - batch if steps else None

    def on_train_end(self, logs: dict | None = None) -> None:
        self.model._apt_remove_observer(self)

    def on_measurement(self, record: dict, range_analysis: dict | None) -> None:
        self.history.append(record)


class TemperatureLogger(_MeasuringCallback):
    """Measures activation pattern temperatures under any learning-rate schedule.

    It does not change the learning rate. Every `every_step` optimizer steps
    the `APTModel` measures, and `history` gets a record:

    ```python
    {"step": int, "learning_rate": float, "temperature": float,
     "layers": {layer name: float}}
    ```

    Example:

    ```python
    logger = keras_actcoolr.TemperatureLogger(every_step=10)
    model.fit(x, y, epochs=2, callbacks=[logger])
    logger.history[-1]["layers"]
    ```

    Args:
        every_step: Integer >= 1, measure on optimizer steps that are
            multiples of it. Defaults to `10`.
    """

    def __init__(self, every_step: int = 10) -> None:
        super().__init__(every_step)


class ActCooLR(_MeasuringCallback):
    """Static ActCooLR: sets the learning rate so that the temperature follows a cooling curve.

    The optimizer's learning rate must be a `keras_actcoolr.ActCooLRSchedule`
    and the model a `keras_actcoolr.APTModel`. Every `every_step` steps the
    model measures the network temperature `T` (probability
    `P = 1 - 2**(-T)`) of the step taken at rate `lr`, and, with the target
    `T* = start_temperature * (1 - progress) ** gamma`, `P* = 1 - 2**(-T*)`
    and `progress = step / total_steps`:

    ```python
    lr_target = lr * exp(sigma * (PhiInv(P*) - PhiInv(P)))
    d = (lr_target - lr) / every_step
    lr <- lr + d                    # the step after the measurement
    lr <- lr + d / every_step       # each following step until the next one
    ```

    `P` and `P*` are clamped to `[epsilon, 1 - epsilon]`, and the rate to
    `[min_learning_rate, max_learning_rate]`. When `sigma` is not given, it
    is estimated on the first measured step by a learning-rate range analysis
    of that batch (the Table-1 rates, fitted with the erf model); a run
    resumed from a checkpoint keeps the estimated value.

    `history` holds one record per measurement (see `TemperatureLogger`),
    extended by the controller's `target_temperature`, `sigma` and
    `next_learning_rate`.

    Example:

    ```python
    model = keras_actcoolr.convert(model)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras_actcoolr.ActCooLRSchedule(initial_learning_rate=0.1), momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=10, callbacks=[
        keras_actcoolr.ActCooLR(start_temperature=3.03, gamma=1.0, every_step=10)])
    ```

    Args:
        start_temperature: Float > 0, the target temperature at the start
            of training. Defaults to `3.03`.
        gamma: Float > 0, speed of cooling (1 is linear). Defaults to `1.0`.
        every_step: Integer >= 1, steps between measurements. Defaults to `10`.
        sigma: Float > 0 or `None` (estimate at the start). Defaults to `None`.
        total_steps: Integer >= 1 or `None` (take `epochs * steps` from
            `fit`). Needed when the data has no known length. Defaults to `None`.
        target_temperature: Callable `progress -> temperature` replacing the
            power curve, or `None`. Defaults to `None`.
        min_learning_rate: Float >= 0, lower bound of the rate.
            Defaults to `1e-7`.
        max_learning_rate: Float > `min_learning_rate`, upper bound of the
            rate (the top of the range analysis). Defaults to `100.0`.
        epsilon: Float in (0, 0.5), clamp of the probabilities.
            Defaults to `1e-6`.
    """

    def __init__(
        self,
        start_temperature: float = 3.03,
        gamma: float = 1.0,
        every_step: int = 10,
        sigma: float | None = None,
        total_steps: int | None = None,
        target_temperature: Callable[[float], float] | None = None,
        min_learning_rate: float = 1e-7,
        max_learning_rate: float = 100.0,
        epsilon: float = T.EPSILON,
    ) -> None:
        super().__init__(every_step)

        def positive(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value) and value > 0
            ):
                raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value}")
            return float(value)

        self.epsilon = float(epsilon) if isinstance(epsilon, numbers.Real) else epsilon
        if not isinstance(self.epsilon, float) or not 0.0 < self.epsilon < 0.5:
            raise ValueError(f"`epsilon` must be in (0, 0.5). Received: epsilon={epsilon}")
        self.start_temperature = positive("start_temperature", start_temperature)
        if T.temperature_to_probability(self.start_temperature) >= 1.0 - self.epsilon:
            limit = float(T.probability_to_temperature(1.0 - self.epsilon))
            raise ValueError(
                "`start_temperature` is so high that its change probability rounds to 1 "
                f"(the limit for epsilon={self.epsilon} is {limit:.3f}). "
                f"Received: start_temperature={start_temperature}"
            )
        self.gamma = positive("gamma", gamma)
        self.sigma = None if sigma is None else positive("sigma", sigma)
        if total_steps is not None and (
            isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps < 1
        ):
            raise ValueError(f"`total_steps` must be an integer >= 1 or None. Received: total_steps={total_steps}")
        self.total_steps = None if total_steps is None else int(total_steps)
        if target_temperature is not None and not callable(target_temperature):
            raise ValueError(
                "`target_temperature` must be a callable `progress -> temperature` or None. "
                f"Received: target_temperature={target_temperature}"
            )
        self.target_temperature = target_temperature
        if isinstance(min_learning_rate, bool) or not isinstance(min_learning_rate, numbers.Real) or not (
            math.isfinite(min_learning_rate) and min_learning_rate >= 0
        ):
            raise ValueError(
                f"`min_learning_rate` must be a finite number >= 0. Received: min_learning_rate={min_learning_rate}"
            )
        self.min_learning_rate = float(min_learning_rate)
        self.max_learning_rate = positive("max_learning_rate", max_learning_rate)
        if self.max_learning_rate <= self.min_learning_rate:
            raise ValueError(
                "`max_learning_rate` must be greater than `min_learning_rate`. "
                f"Received: min_learning_rate={min_learning_rate}, max_learning_rate={max_learning_rate}"
            )
        self._schedule: ActCooLRSchedule | None = None
        self._steps: int | None = None
        self._sigma: float | None = None

    # ---------------------------------------------------------------- fit

    def on_train_begin(self, logs: dict | None = None) -> None:
        model = _require_apt_model(self.model, "ActCooLR")
        schedule = find_schedule(model.optimizer)
        if not isinstance(schedule, ActCooLRSchedule):
            raise ValueError(
                "ActCooLR drives an `keras_actcoolr.ActCooLRSchedule`: create the optimizer with one, for "
                "example `keras.optimizers.SGD(keras_actcoolr.ActCooLRSchedule(0.1))`. "
                f"Received: learning_rate of type {type(schedule or model.optimizer.learning_rate).__name__}"
            )
        schedule.build(getattr(model.optimizer, "inner_optimizer", model.optimizer))
        schedule.refresh()
        self._steps = self.total_steps
        if self._steps is None:
            steps, epochs = self.params.get("steps"), self.params.get("epochs")
            if not steps or not epochs:
                raise ValueError(
                    "ActCooLR needs the total number of training steps, and `fit` does not know it (the "
                    "data has no known length). Pass `ActCooLR(total_steps=...)` or `steps_per_epoch` to fit."
                )
            self._steps = int(steps) * int(epochs)
        updates: dict[str, float] = {
            "min_learning_rate": self.min_learning_rate,
            "max_learning_rate": self.max_learning_rate,
        }
        if self.sigma is not None:
            updates["sigma"] = self.sigma
        schedule.assign(**updates)
        self._sigma = self.sigma
        self._schedule = schedule
        super().on_train_begin(logs)

    def wants_range_analysis(self, step: int) -> bool:
        return self._schedule is not None and self._schedule.state()["sigma"] <= 0.0

    def target(self, progress: float) -> float:
        """Target temperature at `progress` in [0, 1]."""
        if self.target_temperature is not None:
            return float(self.target_temperature(progress))
        return float(T.target_temperature(progress, self.start_temperature, self.gamma))

    def on_measurement(self, record: dict, range_analysis: dict | None) -> None:
        schedule = self._schedule
        if self._sigma is None:
            # Given, estimated earlier in this fit, or restored from a checkpoint.
            self._sigma = schedule.state()["sigma"]
        if self._sigma <= 0.0:
            self._sigma = self._estimate_sigma(range_analysis)
            schedule.assign(sigma=self._sigma)
        sigma = self._sigma
        step = record["step"]
        progress = min(step / self._steps, 1.0)
        target = self.target(progress)
        new_rate, drift = T.static_lr_update(
            record["learning_rate"],
            T.temperature_to_probability(record["temperature"]),
            T.temperature_to_probability(target),
            sigma,
            self.every_step,
            self.epsilon,
        )
        new_rate = float(np.clip(new_rate, self.min_learning_rate, self.max_learning_rate))
        schedule.assign(anchor_step=step + 1, anchor_learning_rate=new_rate, drift=drift)
        self.history.append(
            dict(record, target_temperature=target, sigma=sigma, next_learning_rate=new_rate)
        )

    @staticmethod
    def _estimate_sigma(range_analysis: dict | None) -> float:
        if range_analysis is None:
            warnings.warn(f"No range analysis for sigma; using sigma={FALLBACK_SIGMA}.", stacklevel=2)
            return FALLBACK_SIGMA
        try:
            sigma, _ = T.fit_erf_model(range_analysis["learning_rates"], range_analysis["temperatures"])
        except ValueError as error:
            warnings.warn(f"{error} ActCooLR uses sigma={FALLBACK_SIGMA}.", stacklevel=2)
            return FALLBACK_SIGMA
        return sigma
