"""`ActCooLRSchedule`: the learning rate that the ActCooLR controllers drive, and its binding to an optimizer.

The schedule holds the rate only (`RateState`: anchor step and rate, drift,
bounds); the controllers' own state is theirs (`keras_actcoolr.state`).
`keras_actcoolr.schedules` re-exports every name of this module.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
import weakref
from typing import Any

import keras
import numpy as np

from keras_actcoolr import validation
from keras_actcoolr.state import StateVariables, controller_state, load_optimizer_variables, state_field

__all__ = ["ActCooLRSchedule", "RateState", "bind_schedule", "find_schedule", "rate_at", "unwrapped_optimizer"]


def unwrapped_optimizer(optimizer: Any) -> Any:
    """The optimizer that applies the updates: the one a `LossScaleOptimizer` wraps, or `optimizer`."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def find_schedule(optimizer: Any) -> Any:
    """The `LearningRateSchedule` of an optimizer (or of the one it wraps), or None."""
    # Keras has no public accessor for the schedule object (`learning_rate` evaluates it).
    schedule = getattr(unwrapped_optimizer(optimizer), "_learning_rate", None)
    return schedule if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) else None


def bind_schedule(optimizer: Any, layers: int | None = None) -> ActCooLRSchedule | None:
    """The `ActCooLRSchedule` of an optimizer, its state built; None for any other learning rate.

    The one place that binds a schedule to its optimizer: it looks through a
    `keras.optimizers.LossScaleOptimizer` to the optimizer it wraps and
    creates, as variables of that optimizer (once; later calls return the
    same schedule and variables), the rate's state (`ActCooLRSchedule.build`)
    and the typed state of every registered controller part
    (`keras_actcoolr.state.controller_state`), in a fixed order, so that a
    saved file loads by position. `APTModel.compile` and the controllers call
    it. Files written by release 0.2.0 load too
    (`keras_actcoolr.state.load_optimizer_variables`).

    Args:
        optimizer: A Keras optimizer, or `None`.
        layers: The number of `APTReLU` layers of the model, or `None`: with
            it, the state also holds the range-analysis counts that
            `ActCooLR` pools to estimate sigma, so that a resumed run goes on
            pooling (`APTModel.compile` passes it).

    Returns:
        The `ActCooLRSchedule`, built, or `None`.
    """
    schedule = find_schedule(optimizer) if optimizer is not None else None
    if not isinstance(schedule, ActCooLRSchedule):
        return None
    inner = unwrapped_optimizer(optimizer)
    if not schedule.built:
        schedule.build(inner)
        controller_state(inner, layers=layers, create=True)
        # Keras loads optimizer variables by position, all or nothing: read files of 0.2.0 too.
        inner.load_own_variables = functools.partial(
            load_optimizer_variables, inner, rate=schedule.rate_variables, load=inner.load_own_variables
        )
    return schedule


@dataclasses.dataclass(frozen=True)
class RateState:
    """The state of an `ActCooLRSchedule`: the rate between two measurements.

    Attributes:
        anchor_step: The step from which the rate drifts.
        anchor_learning_rate: The rate of `anchor_step`.
        drift: The change of the rate per step after `anchor_step`.
        min_learning_rate: The lower bound in force.
        max_learning_rate: The upper bound in force (the user's bound, or a
            guard's lower ceiling; `inf` before a controller sets one).
    """

    anchor_step: int = state_field("int64", 0)
    anchor_learning_rate: float = state_field("float32", 0.1)
    drift: float = state_field("float32", 0.0)
    min_learning_rate: float = state_field("float32", 0.0)
    max_learning_rate: float = state_field("float32", math.inf)


def rate_at(
    step: Any,
    anchor_step: Any,
    anchor_learning_rate: Any,
    drift: Any,
    min_learning_rate: Any,
    max_learning_rate: Any,
    xp: Any = keras.ops,
) -> Any:
    """The rate of `ActCooLRSchedule` at `step`: the one formula of the traced rate and of `value_at`.

    ```python
    rate = clip(anchor_learning_rate + drift * max(step - anchor_step, 0), min_learning_rate, max_learning_rate)
    ```

    with no drift on the anchor step itself (no `drift * 0`, NaN for an
    infinite drift). `xp` is `keras.ops` (float32 tensors, in the optimizer's
    step) or `numpy` (float64, for the controller between steps).
    """
    if xp is keras.ops:
        elapsed = keras.ops.maximum(keras.ops.cast(step, "int64") - anchor_step, 0)
        elapsed_steps = keras.ops.cast(elapsed, "float32")
    else:
        elapsed = elapsed_steps = float(max(int(step) - int(anchor_step), 0))
    offset = xp.where(elapsed > 0, drift * elapsed_steps, 0.0)
    return xp.clip(anchor_learning_rate + offset, min_learning_rate, max_learning_rate)


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
    anchor, drift and bounds (`RateState`) are variables of the optimizer,
    named `actcoolr_rate_<field>` (created when an `APTModel` is compiled
    with this schedule), so checkpoints, `BackupAndRestore` and `.keras`
    files keep them. The controllers' own state (sigma, the guards) is not
    the schedule's: see `keras_actcoolr.state`.

    Example:

    ```python
    schedule = keras_actcoolr.ActCooLRSchedule(initial_learning_rate=0.1)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    ```

    Args:
        initial_learning_rate: Positive finite number (a Python or NumPy
            scalar, not a boolean), the rate before the first measurement.
            Defaults to `0.1`.
        name: String, name of the schedule. Defaults to `"ActCooLRSchedule"`.

    Raises:
        ValueError: if `initial_learning_rate` is not a positive finite number.
    """

    def __init__(self, initial_learning_rate: float = 0.1, name: str = "ActCooLRSchedule") -> None:
        super().__init__()
        self.initial_learning_rate = validation.positive("initial_learning_rate", initial_learning_rate)
        self.name = name
        self._rate: StateVariables | None = None
        self._optimizer: weakref.ref | None = None

    @property
    def built(self) -> bool:
        return self._rate is not None

    @property
    def variables(self) -> list:
        """The rate's variables (empty before `build`)."""
        return [] if self._rate is None else self._rate.variables

    @property
    def rate_variables(self) -> StateVariables | None:
        """The `StateVariables` of the rate (`None` before `build`)."""
        return self._rate

    def build(self, optimizer: keras.optimizers.Optimizer) -> None:
        """Create the rate's state as variables of `optimizer` (once).

        Prefer `keras_actcoolr.schedules.bind_schedule(optimizer)`, which also
        finds the schedule behind a `LossScaleOptimizer` and creates the
        controllers' state.
        """
        if self._rate is None:
            self._optimizer = weakref.ref(optimizer)
            defaults = {"anchor_learning_rate": self.initial_learning_rate}
            self._rate = StateVariables(optimizer, "rate", RateState, defaults=defaults)

    def __call__(self, step: Any) -> Any:
        if self._rate is None:
            return keras.ops.convert_to_tensor(self.initial_learning_rate, "float32")
        return rate_at(step, *self._rate.variables)

    # ----------------------------------------------- controller side (eager)

    def read(self) -> RateState:
        """The rate's state (`RateState`), read from the variables on every call."""
        if self._rate is None:
            return RateState(anchor_learning_rate=self.initial_learning_rate)
        return self._rate.read()

    def state(self) -> dict[str, float]:
        """The rate's state as a dict of Python numbers (`read()` as a dict)."""
        return dataclasses.asdict(self.read())

    def assign(self, **values: float) -> None:
        """Set fields of the rate's state (eagerly, in cross-replica context).

        Raises:
            ValueError: if `anchor_learning_rate` or `drift` is not finite in
                float32, or a bound is NaN: the rate would be NaN or infinite.
        """
        self._require_built()
        for key in ("anchor_learning_rate", "drift", "min_learning_rate", "max_learning_rate"):
            if key in values:
                with np.errstate(over="ignore"):
                    value = np.float32(values[key])
                bound = key.endswith("_learning_rate") and key != "anchor_learning_rate"
                if np.isnan(value) or not (bound or np.isfinite(value)):
                    raise ValueError(
                        f"`{key}` of the ActCooLR state must be {'a number' if bound else 'finite in float32'}. "
                        f"Received: {key}={values[key]!r}"
                    )
        self._rate.write(**values)

    def pool_counts(self) -> np.ndarray | None:
        """Deprecated: `keras_actcoolr.state.controller_state(optimizer)["sigma"].read().pool_counts`."""
        _deprecated("pool_counts()", '["sigma"].read().pool_counts')
        sigma = self._sigma_state()
        return None if sigma is None else sigma.get("pool_counts")

    def assign_pool_counts(self, counts: np.ndarray) -> None:
        """Deprecated: `keras_actcoolr.state.controller_state(optimizer)["sigma"].write(pool_counts=...)`."""
        _deprecated("assign_pool_counts(counts)", '["sigma"].write(pool_counts=counts)')
        sigma = self._sigma_state()
        if sigma is not None:
            sigma.write(pool_counts=counts)

    def _sigma_state(self) -> StateVariables | None:
        optimizer = None if self._optimizer is None else self._optimizer()
        state = None if optimizer is None else controller_state(optimizer)
        return None if state is None else state["sigma"]

    def refresh(self) -> None:
        """Deprecated: does nothing. `state()` reads the variables on every call."""
        warnings.warn(
            "`ActCooLRSchedule.refresh()` is deprecated and does nothing: `state()` reads the variables "
            "on every call. It will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )

    def value_at(self, step: int, state: dict | RateState | None = None) -> float:
        """The learning rate at `step` as a Python float (the formula above, in float64).

        `state` is a `read()` or `state()` already read, or `None` to read it.
        """
        s = self.read() if state is None else state
        if isinstance(s, dict):
            s = RateState(**s)
        bounds = (s.min_learning_rate, s.max_learning_rate)
        return float(rate_at(step, s.anchor_step, s.anchor_learning_rate, s.drift, *bounds, xp=np))

    def _require_built(self) -> None:
        if self._rate is None:
            raise ValueError(
                "This ActCooLRSchedule has no state yet: compile a `keras_actcoolr.APTModel` with an "
                "optimizer that uses it (for example `keras_actcoolr.convert(model)` then `compile`)."
            )

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "name": self.name}


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"`ActCooLRSchedule.{old}` is deprecated: the pooled counts are the sigma estimator's state, "
        f"`keras_actcoolr.state.controller_state(optimizer){new}`. It will be removed in the next release.",
        DeprecationWarning,
        stacklevel=3,
    )
