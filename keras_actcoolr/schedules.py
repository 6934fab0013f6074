"""Learning-rate schedules: `ActCooLRSchedule` (the rate the ActCooLR controllers drive) and the baselines."""

from __future__ import annotations

from typing import Any

import keras

from keras_actcoolr import validation
from keras_actcoolr.rate import ActCooLRSchedule, RateState, bind_schedule, find_schedule, unwrapped_optimizer

__all__ = [
    "ActCooLRSchedule",
    "OneCycle",
    "RateState",
    "StepDecay",
    "TriangularCyclic",
    "bind_schedule",
    "find_schedule",
    "unwrapped_optimizer",
]


# ------------------------------------------------------- baseline schedules
# The hand-designed schedules that the paper compares ActCooLR with. Each is a
# pure function of the step, written with `keras.ops`.


def _rising_rates(initial_learning_rate: Any, maximal_learning_rate: Any) -> tuple[float, float]:
    """Validated `(initial, maximal)` learning rates of a cycle, `0 < initial < maximal`."""
    initial = validation.positive("initial_learning_rate", initial_learning_rate)
    maximal = validation.positive("maximal_learning_rate", maximal_learning_rate)
    if maximal <= initial:
        raise ValueError(
            "`maximal_learning_rate` must be greater than `initial_learning_rate`. Received: "
            f"initial_learning_rate={initial_learning_rate!r}, maximal_learning_rate={maximal_learning_rate!r}"
        )
    return initial, maximal


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Step decay: the rate is multiplied by `factor` every `step_size` steps.

    ```python
    def step_decay(step):
        return initial_learning_rate * factor ** floor(step / step_size)
    ```

    With `boundaries=[b_1, b_2, ...]` (increasing steps) instead of
    `step_size`, the exponent is the number of boundaries reached,
    `sum(step >= b_i)`: the rate is multiplied by `factor` on step `b_1`,
    again on step `b_2`, and so on.

    Example: divide the rate by 10 after 100 and after 150 epochs of 390 steps
    (the classic ResNet recipe the paper compares with):

    ```python
    schedule = keras_actcoolr.StepDecay(0.1, factor=0.1, boundaries=[100 * 390, 150 * 390])
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    ```

    Args:
        initial_learning_rate: Positive float, the rate of the first step.
        step_size: Integer >= 1, steps between two decays, or `None` when
            `boundaries` is given. Defaults to `None`.
        factor: Positive float, the multiplier of each decay.
            Defaults to `0.1`.
        boundaries: Increasing list of integers >= 1, the steps on which the
            rate decays, or `None` when `step_size` is given.
            Defaults to `None`.
        name: String, name of the schedule. Defaults to `"StepDecay"`.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        step_size: int | None = None,
        factor: float = 0.1,
        boundaries: list[int] | None = None,
        name: str = "StepDecay",
    ) -> None:
        super().__init__()
        self.initial_learning_rate = validation.positive("initial_learning_rate", initial_learning_rate)
        self.factor = validation.positive("factor", factor)
        if (step_size is None) == (boundaries is None):
            raise ValueError(
                "Give exactly one of `step_size` and `boundaries`. "
                f"Received: step_size={step_size!r}, boundaries={boundaries!r}"
            )
        self.step_size = None if step_size is None else validation.integer_at_least_one("step_size", step_size)
        if boundaries is not None:
            try:
                values = [validation.integer("boundaries", b) for b in boundaries]
            except ValueError:
                values = []  # one message for the whole list, below
            if not values or any(a >= b for a, b in zip(values, values[1:])):
                raise ValueError(
                    "`boundaries` must be a non-empty increasing list of integers >= 1. "
                    f"Received: boundaries={boundaries!r}"
                )
            boundaries = values
        self.boundaries = boundaries
        self.name = name

    def __call__(self, step: Any) -> Any:
        step = keras.ops.cast(step, "int64")
        if self.boundaries is not None:
            reached = keras.ops.greater_equal(step, keras.ops.convert_to_tensor(self.boundaries, "int64"))
            exponent = keras.ops.sum(keras.ops.cast(reached, "float32"))
        else:
            exponent = keras.ops.cast(keras.ops.floor_divide(step, self.step_size), "float32")
        return self.initial_learning_rate * keras.ops.power(self.factor, exponent)

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "step_size": self.step_size,
            "factor": self.factor,
            "boundaries": self.boundaries,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class TriangularCyclic(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's triangular cyclical learning rate (CLR).

    The rate goes linearly from `initial_learning_rate` up to
    `maximal_learning_rate` in `step_size` steps, back down in `step_size`
    steps, and repeats:

    ```python
    def triangular(step):
        cycle = floor(1 + step / (2 * step_size))
        x = abs(step / step_size - 2 * cycle + 1)
        return initial_learning_rate + (maximal_learning_rate - initial_learning_rate) * max(0, 1 - x)
    ```

    Reference: L. N. Smith, "Cyclical Learning Rates for Training Neural
    Networks", WACV 2017.

    Example:

    ```python
    schedule = keras_actcoolr.TriangularCyclic(0.01, 0.3, step_size=4 * steps_per_epoch)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    ```

    Args:
        initial_learning_rate: Positive float, the lowest rate (Smith's
            `base_lr`), taken on step 0 and every `2 * step_size` steps.
        maximal_learning_rate: Float greater than `initial_learning_rate`,
            the highest rate, taken on steps `step_size`, `3 * step_size`, ...
        step_size: Integer >= 1, half the length of a cycle, in steps.
        name: String, name of the schedule. Defaults to `"TriangularCyclic"`.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        maximal_learning_rate: float,
        step_size: int,
        name: str = "TriangularCyclic",
    ) -> None:
        super().__init__()
        self.initial_learning_rate, self.maximal_learning_rate = _rising_rates(
            initial_learning_rate, maximal_learning_rate
        )
        self.step_size = validation.integer_at_least_one("step_size", step_size)
        self.name = name

    def __call__(self, step: Any) -> Any:
        # `step / step_size - 2 * cycle + 1` equals `(step mod 2 * step_size) / step_size - 1`,
        # which stays exact in float32 however long the training.
        phase = keras.ops.mod(keras.ops.cast(step, "int64"), 2 * self.step_size)
        x = keras.ops.abs(keras.ops.cast(phase, "float32") / self.step_size - 1.0)
        height = self.maximal_learning_rate - self.initial_learning_rate
        return self.initial_learning_rate + height * keras.ops.maximum(1.0 - x, 0.0)

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "maximal_learning_rate": self.maximal_learning_rate,
            "step_size": self.step_size,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's 1-cycle learning rate: one linear rise to a peak, then a linear fall.

    With `L = total_steps - 1` (the last step) and the peak at step
    `p = t_max * L`:

    ```python
    def one_cycle(step):
        s = clip(step, 0, L)
        if s <= p:
            return initial_learning_rate + (maximal_learning_rate - initial_learning_rate) * s / p
        return maximal_learning_rate + (final_learning_rate - maximal_learning_rate) * (s - p) / (L - p)
    ```

    so step 0 trains at `initial_learning_rate`, the step nearest `p` close to
    `maximal_learning_rate` (`lambda_max` in the paper's Tables 2 and 3), and
    the last step at `final_learning_rate`; later steps stay there. Use it with
    `keras_actcoolr.OneCycleMomentum`, which cycles the momentum the other way.

    Reference: L. N. Smith, "A disciplined approach to neural network
    hyper-parameters: Part 1", arXiv:1803.09820, 2018; the paper's Table 2
    tunes `lambda_max` and `t_max` for CIFAR-10.

    Example (ResNet-18, 25 epochs of 196 steps, Table 2 of the ActCooLR
    supplementary material):

    ```python
    schedule = keras_actcoolr.OneCycle(0.1, 1.7, total_steps=25 * 196, t_max=0.7)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    model.fit(x, y, epochs=25, callbacks=[keras_actcoolr.OneCycleMomentum()])
    ```

    Args:
        initial_learning_rate: Positive float, the rate of step 0.
        maximal_learning_rate: Float greater than `initial_learning_rate`,
            the rate at the peak.
        total_steps: Integer >= 2, the number of training steps.
        t_max: Float in (0, 1), the position of the peak as a fraction of
            training. Defaults to `0.3`.
        final_learning_rate: Float in `[0, maximal_learning_rate)`, the rate of
            the last step. Defaults to `0.0`.
        name: String, name of the schedule. Defaults to `"OneCycle"`.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        maximal_learning_rate: float,
        total_steps: int,
        t_max: float = 0.3,
        final_learning_rate: float = 0.0,
        name: str = "OneCycle",
    ) -> None:
        super().__init__()
        self.initial_learning_rate, self.maximal_learning_rate = _rising_rates(
            initial_learning_rate, maximal_learning_rate
        )
        self.total_steps = validation.integer("total_steps", total_steps, minimum=2)
        self.t_max = validation.real_in("t_max", t_max, 0.0, 1.0)
        self.final_learning_rate = validation.real_in(
            "final_learning_rate", final_learning_rate, 0.0, self.maximal_learning_rate, low_open=False
        )
        self.name = name

    def __call__(self, step: Any) -> Any:
        last = float(self.total_steps - 1)
        peak = self.t_max * last
        s = keras.ops.clip(keras.ops.cast(step, "float32"), 0.0, last)
        rising = self.initial_learning_rate + (self.maximal_learning_rate - self.initial_learning_rate) * (s / peak)
        # Written from the end, so that the last step is `final_learning_rate` to the last bit.
        falling = self.final_learning_rate + (self.maximal_learning_rate - self.final_learning_rate) * (
            (last - s) / (last - peak)
        )
        return keras.ops.where(s <= peak, rising, falling)

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "maximal_learning_rate": self.maximal_learning_rate,
            "total_steps": self.total_steps,
            "t_max": self.t_max,
            "final_learning_rate": self.final_learning_rate,
            "name": self.name,
        }
