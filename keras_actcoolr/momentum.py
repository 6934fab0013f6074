"""A momentum that follows a schedule of the step inside the compiled update.

Keras optimizers hold `momentum` (SGD, RMSprop) and `beta_1` (Adam and its
variants) as Python floats, which a traced train step freezes. `MomentumInjection`
makes the update of one optimizer read the momentum of a schedule of
`optimizer.iterations` on every step, in the spirit of optax's
`inject_hyperparams`: the hyperparameter attribute stays a Python float (its
config, checkpoints and `.keras` files are those of the plain optimizer) and
only the update step of this optimizer instance changes, for as long as the
injection is attached.

- Optimizers that read the hyperparameter only as a number (Adam, AdamW,
  Adamax, Nadam, Lamb, Lion, ...) receive the scheduled value as a tensor for
  the length of their `update_step`.
- `SGD` and `RMSprop` also compare `momentum` with 0 in Python to decide
  whether momentum is on, so they keep their float `m` and the velocity of
  the variable is first scaled by `value / m`: their rule
  `velocity = m * velocity + ...` then computes `value * velocity + ...`
  (with Nesterov momentum, SGD's `w += m * velocity - lr * g` is corrected by
  `(value - m) * velocity`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_actcoolr import validation

__all__ = ["MomentumInjection", "one_cycle_momentum"]

# The optimizers that test their `momentum` in Python, and the list of their momentum slots.
_SCALED_VELOCITY = {keras.optimizers.SGD: "momentums", keras.optimizers.RMSprop: "_momentums"}


def one_cycle_momentum(
    step: Any, total_steps: int, t_max: float, base_momentum: float, max_momentum: float, xp: Any = keras.ops
) -> Any:
    """The 1-cycle momentum of `step`: the one formula of `OneCycleMomentum`'s momentum.

    With `L = total_steps - 1`, `p = t_max * L` and `s = clip(step, 0, L)`:
    `max_momentum + (base_momentum - max_momentum) * s / p` up to the peak,
    `base_momentum + (max_momentum - base_momentum) * (s - p) / (L - p)` after it.

    Args:
        step: The optimizer step, an integer (tensor).
        total_steps: Integer >= 2, the length of the cycle.
        t_max: Float in (0, 1), the position of the lowest momentum.
        base_momentum: The momentum at the peak of the learning rate.
        max_momentum: The momentum at the start and the end.
        xp: `keras.ops` (the default: a float32 tensor, for a traced
            update) or `numpy` (a float64 NumPy scalar, for the eager value
            `OneCycleMomentum` shows between steps).

    Returns:
        The momentum, a scalar of `xp`.
    """
    last = float(total_steps - 1)
    peak = t_max * last
    s = keras.ops.cast(step, "float32") if xp is keras.ops else np.float64(step)
    s = xp.clip(s, 0.0, last)
    falling = max_momentum + (base_momentum - max_momentum) * (s / peak)
    rising = base_momentum + (max_momentum - base_momentum) * ((s - peak) / (last - peak))
    return xp.where(s <= peak, falling, rising)


class MomentumInjection:
    """Makes one optimizer's update read its momentum from a schedule of its step.

    Args:
        optimizer: The Keras optimizer that applies the updates (for a
            `LossScaleOptimizer`, the one it wraps).
        attribute: `"momentum"` or `"beta_1"`, the hyperparameter to schedule.
        schedule: A function of the step (an integer tensor) that returns the
            hyperparameter as a scalar tensor, written with `keras.ops`.
    """

    def __init__(self, optimizer: keras.optimizers.Optimizer, attribute: str, schedule: Callable[[Any], Any]) -> None:
        validation.one_of("attribute", attribute, ("momentum", "beta_1"))
        self.optimizer = optimizer
        self.attribute = attribute
        self.schedule = schedule
        self.attached = False

    def attach(self) -> None:
        """From now on, the optimizer's traced update reads the schedule (retrace the train function)."""
        if self.attached:
            return
        optimizer = self.optimizer
        slots = next((name for cls, name in _SCALED_VELOCITY.items() if isinstance(optimizer, cls)), None)
        update_step = type(optimizer).update_step

        def scheduled_update_step(gradient: Any, variable: Any, learning_rate: Any) -> None:
            value = keras.ops.cast(self.schedule(optimizer.iterations), variable.dtype)
            fixed = getattr(optimizer, self.attribute)
            if slots is None:
                setattr(optimizer, self.attribute, value)
                try:
                    update_step(optimizer, gradient, variable, learning_rate)
                finally:
                    setattr(optimizer, self.attribute, fixed)
                return
            # `fixed` is the Python float the optimizer's rule multiplies by (never 0: checked on attach).
            velocity = getattr(optimizer, slots)[optimizer._get_variable_index(variable)]
            optimizer.assign(velocity, keras.ops.multiply(velocity, value / fixed))
            update_step(optimizer, gradient, variable, learning_rate)
            if getattr(optimizer, "nesterov", False):
                optimizer.assign_add(variable, keras.ops.multiply(velocity, value - fixed))

        if slots is not None and not float(getattr(optimizer, self.attribute)) > 0:
            raise ValueError(
                f"{type(optimizer).__name__} has no momentum slots when `momentum=0`. "
                f"Received: momentum={getattr(optimizer, self.attribute)!r}"
            )
        # An attribute of this instance: the optimizer's class, config and saved files stay those of Keras.
        optimizer.update_step = scheduled_update_step
        self.attached = True

    def detach(self) -> None:
        """Give the optimizer its own update step back (retrace the train function)."""
        if self.attached:
            del self.optimizer.update_step
            self.attached = False
