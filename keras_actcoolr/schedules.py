"""`ActCooLRSchedule`: the learning rate that the ActCooLR controllers drive."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

__all__ = ["ActCooLRSchedule", "find_schedule"]


def find_schedule(optimizer: Any) -> Any:
    """The `LearningRateSchedule` of an optimizer (or of the one it wraps), or None."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    # Keras optimizers expose the schedule only through this attribute.
    schedule = getattr(optimizer, "_learning_rate", None)
    return schedule if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) else None


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class ActCooLRSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate set by the ActCooLR controllers.

    Between two measurements the rate moves linearly: after the measurement
    at step `s` the controller sets an anchor (step `s + 1`, rate `lr_a`) and
    a drift `d` per step, and

    ```python
    lr(step) = clip(lr_a + d * max(step - (s + 1), 0), min_learning_rate, max_learning_rate)
    ```

    Before the first measurement, `lr(step) = initial_learning_rate`. The
    anchor, drift, bounds and the controller's `sigma` are variables of the
    optimizer (created when an `APTModel` is compiled with this schedule), so
    checkpoints, `BackupAndRestore` and `.keras` files keep them.

    Example:

    ```python
    schedule = keras_actcoolr.ActCooLRSchedule(initial_learning_rate=0.1)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    ```

    Args:
        initial_learning_rate: Positive float, the rate before the first
            measurement. Defaults to `0.1`.
        name: String, name of the schedule. Defaults to `"ActCooLRSchedule"`.
    """

    def __init__(self, initial_learning_rate: float = 0.1, name: str = "ActCooLRSchedule") -> None:
        super().__init__()
        if not isinstance(initial_learning_rate, (int, float)) or not (
            math.isfinite(initial_learning_rate) and initial_learning_rate > 0
        ):
            raise ValueError(
                "`initial_learning_rate` must be a positive finite number. "
                f"Received: initial_learning_rate={initial_learning_rate}"
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.name = name
        self._variables: dict[str, Any] | None = None
        self._cache: dict[str, float] | None = None

    @property
    def built(self) -> bool:
        return self._variables is not None

    def build(self, optimizer: keras.optimizers.Optimizer) -> None:
        """Create the controller state as variables of `optimizer` (once)."""
        if self._variables is not None:
            return
        specs = {
            "anchor_step": ("int64", 0),
            "anchor_learning_rate": ("float32", self.initial_learning_rate),
            "drift": ("float32", 0.0),
            "min_learning_rate": ("float32", 0.0),
            "max_learning_rate": ("float32", np.inf),
            "sigma": ("float32", 0.0),
        }
        self._variables = {
            key: optimizer.add_variable(
                shape=(),
                dtype=dtype,
                initializer=keras.initializers.Constant(value),
                aggregation="only_first_replica",
                name=f"actcoolr_{key}",
            )
            for key, (dtype, value) in specs.items()
        }

    def __call__(self, step: Any) -> Any:
        if self._variables is None:
            return keras.ops.convert_to_tensor(self.initial_learning_rate, "float32")
        v = self._variables
        elapsed = keras.ops.maximum(keras.ops.cast(step, "int64") - v["anchor_step"], 0)
        rate = v["anchor_learning_rate"] + v["drift"] * keras.ops.cast(elapsed, "float32")
        return keras.ops.clip(rate, v["min_learning_rate"], v["max_learning_rate"])

    # ----------------------------------------------- controller side (eager)

    def state(self) -> dict[str, float]:
        """The controller state as Python numbers (read from the variables)."""
        if self._variables is None:
            return {
                "anchor_step": 0,
                "anchor_learning_rate": self.initial_learning_rate,
                "drift": 0.0,
                "min_learning_rate": 0.0,
                "max_learning_rate": math.inf,
                "sigma": 0.0,
            }
        if self._cache is None:
            self._cache = {
                key: (int if key == "anchor_step" else float)(keras.ops.convert_to_numpy(variable))
                for key, variable in self._variables.items()
            }
        return dict(self._cache)

    def assign(self, **values: float) -> None:
        """Set parts of the controller state (eagerly, in cross-replica context)."""
        self._require_built()
        for key, value in values.items():
            self._variables[key].assign(value)
        self._cache = None

    def refresh(self) -> None:
        """Forget the Python copy of the state (after the variables were loaded from a checkpoint)."""
        self._cache = None

    def value_at(self, step: int) -> float:
        """The learning rate at `step` as a Python float (the formula above, in float64)."""
        s = self.state()
        rate = s["anchor_learning_rate"] + s["drift"] * max(step - s["anchor_step"], 0)
        return float(min(max(rate, s["min_learning_rate"]), s["max_learning_rate"]))

    def _require_built(self) -> None:
        if self._variables is None:
            raise ValueError(
                "This ActCooLRSchedule has no state yet: compile a `keras_actcoolr.APTModel` with an "
                "optimizer that uses it (for example `keras_actcoolr.convert(model)` then `compile`)."
            )

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "name": self.name}
