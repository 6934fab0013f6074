"""`OneCycleMomentum`: the momentum half of the 1-cycle policy, next to a `OneCycle` rate."""

from __future__ import annotations

import keras
import numpy as np

from keras_actcoolr import validation
from keras_actcoolr.momentum import MomentumInjection, one_cycle_momentum
from keras_actcoolr.schedules import OneCycle, find_schedule, unwrapped_optimizer

__all__ = ["OneCycleMomentum"]


class OneCycleMomentum(keras.callbacks.Callback):
    """Cycles the optimizer's momentum opposite to a 1-cycle learning rate.

    The momentum falls linearly from `max_momentum` to `base_momentum` while
    `keras_actcoolr.OneCycle` raises the rate to its peak, and rises back to
    `max_momentum` on the way down. With `L = total_steps - 1`,
    `p = t_max * L` and `s = clip(step, 0, L)`:

    ```python
    def momentum(step):
        if s <= p:
            return max_momentum + (base_momentum - max_momentum) * s / p
        return base_momentum + (max_momentum - base_momentum) * (s - p) / (L - p)
    ```

    The defaults are the values of the ActCooLR supplementary material's
    Table 2 (`alpha_max = 0.9`, `alpha_base = 0.765`). `total_steps` and
    `t_max` default to those of the optimizer's `OneCycle` schedule.

    The callback cycles the hyperparameter `momentum` (SGD, RMSprop) or, for
    optimizers without one, `beta_1` (Adam and its variants). During `fit`
    the traced update computes the momentum of each step from
    `optimizer.iterations` (see `keras_actcoolr.momentum.MomentumInjection`),
    also with `steps_per_execution > 1`; `fit` retraces its train function
    once for this, at its start and at its end. The hyperparameter stays a
    Python float that the callback sets to the momentum of the next step
    before each batch, so the optimizer's config holds the current value (and
    `ModelCheckpoint` works); after `fit` it keeps its last value.

    Example:

    ```python
    schedule = keras_actcoolr.OneCycle(0.05, 0.5, total_steps=epochs * steps_per_epoch, t_max=0.3)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss="mse")
    model.fit(x, y, epochs=epochs, callbacks=[keras_actcoolr.OneCycleMomentum()])
    ```

    Args:
        total_steps: Integer >= 2, or `None` to take it from the optimizer's
            `OneCycle` schedule. Defaults to `None`.
        t_max: Float in (0, 1), position of the lowest momentum as a fraction
            of training, or `None` to take it from the optimizer's `OneCycle`
            schedule. Defaults to `None`.
        base_momentum: Float in (0, 1], the momentum at the peak of the
            learning rate (`alpha_base`). Defaults to `0.765`.
        max_momentum: Float in [`base_momentum`, 1], the momentum at the start
            and the end (`alpha_max`). Defaults to `0.9`.
    """

    def __init__(
        self,
        total_steps: int | None = None,
        t_max: float | None = None,
        base_momentum: float = 0.765,
        max_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.total_steps = validation.integer("total_steps", total_steps, minimum=2, allow_none=True)
        self.t_max = validation.real_in("t_max", t_max, 0, 1, allow_none=True)
        self.base_momentum = validation.real_in("base_momentum", base_momentum, 0, 1, high_open=False)
        self.max_momentum = validation.real_in(
            "max_momentum", max_momentum, self.base_momentum, 1, low_open=False, high_open=False
        )
        self._injection: MomentumInjection | None = None
        self._cycle: tuple[int, float] | None = None

    def momentum_at(self, step: int) -> float:
        """The momentum of `step` (the formula above, in float64). Known once training has begun."""
        if self._cycle is None:
            raise ValueError("OneCycleMomentum knows `total_steps` and `t_max` once `fit` has begun.")
        total_steps, t_max = self._cycle
        return float(one_cycle_momentum(step, total_steps, t_max, self.base_momentum, self.max_momentum, xp=np))

    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer = unwrapped_optimizer(self.model.optimizer)
        schedule = find_schedule(optimizer)
        total_steps = self.total_steps
        t_max = self.t_max
        if isinstance(schedule, OneCycle):
            total_steps = schedule.total_steps if total_steps is None else total_steps
            t_max = schedule.t_max if t_max is None else t_max
        if total_steps is None or t_max is None:
            raise ValueError(
                "OneCycleMomentum needs `total_steps` and `t_max`: give them, or use a "
                "`keras_actcoolr.OneCycle` learning rate. "
                f"Received: total_steps={self.total_steps}, t_max={self.t_max}, "
                f"learning_rate of type {type(schedule or optimizer.learning_rate).__name__}"
            )
        self._cycle = (int(total_steps), float(t_max))
        attribute = "momentum" if hasattr(optimizer, "momentum") else "beta_1" if hasattr(optimizer, "beta_1") else None
        if attribute is None:
            raise ValueError(
                "OneCycleMomentum needs an optimizer with a `momentum` (SGD, RMSprop) or `beta_1` "
                f"(Adam) hyperparameter. Received: optimizer of type {type(optimizer).__name__}"
            )
        current = getattr(optimizer, attribute)
        if attribute == "momentum" and not float(current) > 0:
            raise ValueError(
                "OneCycleMomentum needs an optimizer built with momentum: SGD and RMSprop create no "
                "momentum slots when `momentum=0`. Create it with, for example, `momentum=0.9`. "
                f"Received: momentum={current}"
            )
        cycle = dict(
            total_steps=self._cycle[0], t_max=self._cycle[1], base_momentum=self.base_momentum,
            max_momentum=self.max_momentum,
        )  # fmt: skip
        self._injection = MomentumInjection(optimizer, attribute, lambda step: one_cycle_momentum(step, **cycle))
        self._injection.attach()
        # A train function traced earlier holds the float: trace one that reads the schedule.
        self.model.make_train_function(force=True)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        injection = self._injection
        step = int(keras.ops.convert_to_numpy(injection.optimizer.iterations))
        # The float the optimizer shows (and saves) is the momentum of the step about to run.
        setattr(injection.optimizer, injection.attribute, self.momentum_at(step))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._injection is not None:
            self._injection.detach()
            self._injection = None
            # The train function traced for this fit reads the schedule: trace the optimizer's own next time.
            self.model.make_train_function(force=True)
