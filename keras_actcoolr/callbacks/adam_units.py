"""Adam's units: the rate read as the step Adam takes per unit rate (`ActCooLR(adam_units=True)`).

Adam moves every weight by about the rate times `m_hat / (sqrt(v_hat) + epsilon)`:
by the rate itself on its first step (the step the range analysis before the
first step reads), by about a fifth of it once the gradients' signs vary from
batch to batch. The network then cools at a constant rate, and a runaway guard
that reads the rate alone sees the controller's rise go unanswered and holds
the rate. `AdamUnits` gives the runaway guard the rate in Adam's units and the
automatic ceiling its multiple of the start rate.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_actcoolr import temperature as T
from keras_actcoolr.callbacks.sigma import AUTO_CEILING_FACTOR
from keras_actcoolr.schedules import unwrapped_optimizer

__all__ = ["AdamUnits"]

_MOMENTUM, _VELOCITY = "_momentum", "_velocity"


class AdamUnits:
    """The step per unit rate of a `keras.optimizers.Adam` (or `AdamW`) optimizer; 1 for any other.

    Args:
        optimizer: The model's optimizer (a `LossScaleOptimizer` is looked
            through), or `None` (Adam's units off: the rate's own units).
    """

    def __init__(self, optimizer: Any) -> None:
        inner = None if optimizer is None else unwrapped_optimizer(optimizer)
        self.optimizer = inner if isinstance(inner, keras.optimizers.Adam) else None

    @property
    def active(self) -> bool:
        """Whether the optimizer is an Adam (the units differ from the rate's)."""
        return self.optimizer is not None

    def step_scale(self) -> float:
        """Adam's step per unit rate after the last step (`temperature.adam_step_scale`); 1 without Adam."""
        if self.optimizer is None:
            return 1.0
        # Keras names Adam's slots `<variable path>_momentum` and `<variable path>_velocity`.
        slots = {v.path: v for v in self.optimizer.variables}
        pairs = [
            (slot, slots[path[: -len(_MOMENTUM)] + _VELOCITY])
            for path, slot in slots.items()
            if path.endswith(_MOMENTUM) and path[: -len(_MOMENTUM)] + _VELOCITY in slots
        ]
        numpy = keras.ops.convert_to_numpy
        scale = T.adam_step_scale(
            [numpy(m.value) for m, _ in pairs],
            [numpy(v.value) for _, v in pairs],
            int(numpy(self.optimizer.iterations)),
            float(self.optimizer.beta_1),
            float(self.optimizer.beta_2),
            float(self.optimizer.epsilon),
        )
        return scale if scale > 0.0 else 1.0

    def ceiling_factor(self) -> float:
        """The automatic ceiling's multiple of the start rate: `AUTO_CEILING_FACTOR`, in Adam's units with Adam.

        The start rate is read on Adam's first step, which moves every weight
        by the rate; once the gradients are noise a step moves them by
        `adam_noise_step_scale(beta_1)` of it (0.229 for `beta_1 = 0.9`), so
        the ceiling is `AUTO_CEILING_FACTOR` times the start step in those units.
        """
        if self.optimizer is None:
            return AUTO_CEILING_FACTOR
        return AUTO_CEILING_FACTOR / T.adam_noise_step_scale(float(self.optimizer.beta_1))
