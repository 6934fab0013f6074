"""`ControllerParts`: the parts of `ActCooLR`, bound at the start of a fit, and the fit's events that reach them."""

from __future__ import annotations

import math

import keras

from keras_actcoolr import temperature as T
from keras_actcoolr.callbacks.adam_units import AdamUnits
from keras_actcoolr.callbacks.collapse import CollapseGuard
from keras_actcoolr.callbacks.controller import ControllerCallback
from keras_actcoolr.callbacks.guards import (
    FinalAnneal,
    LayerFilter,
    RateGuard,
    RunawayGuard,
)
from keras_actcoolr.callbacks.sigma import SigmaEstimator, default_start_temperature
from keras_actcoolr.schedules import unwrapped_optimizer
from keras_actcoolr.state import controller_state

__all__ = ["ControllerParts"]


class ControllerParts(ControllerCallback):
    """The parts of the static controller, bound at `on_train_begin`, and the fit's events that reach them.

    It creates the parts from the controller's arguments and the
    optimizer's typed state: a `SigmaEstimator`, a `LayerFilter`, a
    `CollapseGuard` and the rate guards (`RunawayGuard`, `FinalAnneal`, then
    `rate_guards`; a switched-off guard is not created), sets the bounds in
    force, places the target curve (`origin`) at the first epoch, and passes
    a non-finite loss to the collapse guard. `StaticController` calls the
    parts per measurement.
    """

    # The parts, bound at `on_train_begin` (none before the first fit).
    estimator: SigmaEstimator | None = None
    collapse: CollapseGuard | None = None
    layer_filter_part: LayerFilter | None = None
    rate_guard_parts: tuple | list = ()
    #: The units the runaway guard and the automatic ceiling read the rate in (`adam_units`).
    units: AdamUnits | None = None
    #: The batch of the epoch being trained, and the target curve's first step.
    batch: int | None = None
    origin = 0

    def guard_on(self, guard: str) -> bool:
        """Whether a guard (an argument's name: `"collapse_guard"`, ...) is on (and `guards` too)."""
        return self.guards and bool(getattr(self, guard))

    def _bind_parts(self) -> None:
        schedule = self.bind()
        state = controller_state(unwrapped_optimizer(self.model.optimizer))
        start = self.start_temperature
        if start is None:
            start = default_start_temperature(self.model.optimizer)
        self.estimator = SigmaEstimator(state["sigma"], self.sigma, start, self.sigma_examples, self.epsilon)
        self.layer_filter_part = LayerFilter(self.measure) if self.guard_on("layer_filter") else None
        self.collapse = None
        if self.guard_on("collapse_guard"):
            self.collapse = CollapseGuard(
                state["collapse"],
                self.loss_tolerance,
                self.collapse_backoff,
                self.snapshot_every,
                self.min_learning_rate,
            )
            skip = lambda: schedule.variables + state.variables  # noqa: E731
            self.collapse.bind(self.model, schedule, skip, self._report)
        self.rate_guard_parts: list[RateGuard] = []
        self.units = AdamUnits(self.model.optimizer if self.adam_units else None)
        if self.guard_on("runaway_guard"):
            guard = RunawayGuard(
                state["runaway"], self.runaway_factor, self.epsilon, self.units.step_scale, self.runaway_anchor
            )
            self.rate_guard_parts.append(guard)
        if self.guard_on("final_anneal"):
            self.rate_guard_parts.append(FinalAnneal(self.final_anneal_share))
        if self.guards:
            self.rate_guard_parts.extend(self.rate_guards)
        self.estimator.begin_fit()
        schedule.assign(min_learning_rate=self.min_learning_rate, max_learning_rate=self._ceiling(state))

    def _ceiling(self, state) -> float:
        """The ceiling in force: the user's bound or the automatic one, and a collapse's."""
        top = float(T.RANGE_LEARNING_RATES[-1])
        if self.max_learning_rate == "auto":
            auto = state["sigma"].read().ceiling
            ceiling = auto if auto is not None and self.guard_on("runaway_guard") else top
        else:
            ceiling = self.max_learning_rate
        lowered = state["collapse"].read().ceiling
        if lowered is not None and self.guard_on("collapse_guard"):
            ceiling = min(ceiling, lowered)
        return ceiling

    def _report(self, event: dict) -> None:
        self.record_event(event)
        if event["event"] in ("retry", "collapse"):
            for guard in self.rate_guard_parts:
                guard.reset()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._bind_parts()
        self.origin = 0
        self._curve_set = False
        self._loss_finite = True
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.collapse is not None:
            self.collapse.epoch = epoch
        self._loss_finite = True  # Keras resets the running loss at each epoch
        if self._curve_set or self.schedule is None:
            return
        # At the first epoch of the fit, once every callback's `on_train_begin` ran (a
        # `BackupAndRestore` may have restored the step count there).
        self._curve_set = True
        self.origin = self.place_curve(self._optimizer_step(), epoch)
        if self.collapse is not None:
            # The state before the first step: a run that starts far too high can fall back to it.
            # The optimizer's slots are created at the first step otherwise; the kept state needs them now.
            self.model.build_training_state()
            step = self._optimizer_step()
            self.collapse.keep_initial(step, self.schedule.value_at(step))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.batch = batch
        super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Every step: a running loss that turns non-finite is handled by the collapse guard.

        Keras' `logs["loss"]` is the running mean over the epoch: it turns
        non-finite at the first step whose loss is, and stays so. A measured
        step was handled already (`on_divergence`); an unmeasured one here.
        """
        loss = (logs or {}).get("loss")
        if loss is None or self.collapse is None:
            return
        try:
            loss = float(loss)
        except (TypeError, ValueError):
            return
        if math.isfinite(loss):
            self._loss_finite = True
            return
        if not self._loss_finite:
            return  # the running loss stays non-finite once it turned: handled at the step that turned it
        step = self._optimizer_step() - 1
        if step <= self.collapse.handled:
            return  # handled in `on_divergence`; the metrics were reset
        self._loss_finite = False
        self.collapse.failure(step, "non-finite loss", self.schedule.value_at(step), nonfinite=True, batch=batch)

    def on_divergence(self, step: int, loss: float) -> bool:
        """A measured step with a non-finite loss: the collapse guard handles it."""
        if self.collapse is None or not self.collapse.ready:
            return False
        rate = self.schedule.value_at(step)
        return self.collapse.failure(step, "non-finite loss", rate, nonfinite=True, batch=self.batch)

    def _optimizer_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    # ------------------------------------------------------------ the start
