"""`StaticController`: the fit machinery of `ActCooLR`, a sequence of calls to its parts."""

from __future__ import annotations

import numpy as np

from keras_actcoolr import messages
from keras_actcoolr import temperature as T
from keras_actcoolr.callbacks.guards import (
    RateUpdate,
    followed_probability,
)
from keras_actcoolr.callbacks.parts import ControllerParts
from keras_actcoolr.callbacks.sigma import (
    FALLBACK_SIGMA,
    FALLBACK_START_TEMPERATURE,
    OTHER_START_TEMPERATURE,
    fit,
)
from keras_actcoolr.measurement import range_measure, record_measure
from keras_actcoolr.models import AnalysisMode

__all__ = ["StaticController"]


class StaticController(ControllerParts):
    """The static controller's sequence: the start of a fit, then each measurement through the parts.

    `ActCooLR` validates the arguments, `ControllerParts` binds the parts;
    here the first step reads their state (`sync`), the range analyses
    choose the start temperature, sigma and the first rate, and
    `on_measurement` calls the parts in order: the sigma estimator, the
    collapse guard, the layer filter, the paper's update, the rate guards.
    """

    _synced = False
    _anchored = False
    _warned_dead = False
    _warned_single_batch = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._synced = False  # the start temperature and the pool are read at the first step
        self._anchored = False
        self._warned_dead = False
        super().on_train_begin(logs)

    def sync(self) -> None:
        """Read the parts' state once per fit, at its first step (after a `BackupAndRestore` restored it)."""
        if self._synced or self.schedule is None:
            return
        self._synced = True
        # A sigma already in the state (given, or estimated by the run this one resumes) came with its ceiling.
        self._anchored = self.estimator.sigma is not None
        self.estimator.sync()
        if self.collapse is not None:
            self.collapse.sync()

    def steps_to_measurement(self, step: int) -> int:
        """Every step while sigma is being estimated, then every `every_step` steps (a pure query)."""
        if self.schedule is not None and self._analysing():
            return 0
        return (-step) % self.every_step

    def _analysing(self) -> bool:
        if self._synced:
            return self.estimator.analysing()
        # Before the first step's sync: what it will decide, read without side effects.
        return self.estimator.pools() or self.estimator.start is None

    def wants_range_analysis(self, step: int) -> AnalysisMode:
        if self.schedule is None:
            return AnalysisMode.NONE
        if self.initial_learning_rate == "auto" and self.auto_learning_rate is None and step == 0:
            if self.params and self.params.get("steps") == 1 and not self._warned_single_batch:
                self._warned_single_batch = True
                messages.warn(
                    "ActCooLR: the training data has a single batch per epoch, and the range analysis that "
                    '`initial_learning_rate="auto"` runs before the first step uses that batch up without '
                    "training on it: the first epoch trains nothing (its loss reads 0). Use more data than one "
                    "batch (or a smaller `batch_size`), or pass `initial_learning_rate=None`.",
                    stacklevel=3,
                )
            return AnalysisMode.BEFORE_STEP
        wanted = self._analysing() or self.estimator.sigma is None
        return AnalysisMode.AFTER_STEP if wanted else AnalysisMode.NONE

    def start_in_force(self) -> float:
        """The start temperature of the target curve: given, chosen ("auto"), or the fallback until chosen."""
        given = self.start_temperature if self.estimator is None else self.estimator.start_temperature
        if given is None:  # the optimizer's default, before the first fit bound it
            return OTHER_START_TEMPERATURE
        if given != "auto":
            return given
        start = self.estimator.start
        return FALLBACK_START_TEMPERATURE if start is None else start  # "auto" not chosen yet: the fallback

    def _adopt(self, fitted: tuple, step: int) -> float:
        """Store a fitted `(sigma, mu)`; the first fit of the fit also sets the start rate and the ceiling."""
        sigma = self.estimator.adopt(fitted[0])
        if fitted[1] is not None and not self._anchored:
            target = T.temperature_to_probability(self.target(self.progress(step, self.origin)))
            self._set_start_rate(self.estimator.predicted_rate(fitted[1], sigma, target))
        return sigma

    def _set_start_rate(self, rate: float) -> None:
        if self.collapse is not None:
            self.collapse.start_rate = rate
        if self.max_learning_rate == "auto" and self.guard_on("runaway_guard"):
            in_force = self.schedule.read().max_learning_rate
            factor = self.units.ceiling_factor()
            ceiling = self.estimator.set_ceiling(rate, in_force, self.min_learning_rate, factor)
            if ceiling is not None:
                self.schedule.assign(max_learning_rate=ceiling)
        self._anchored = True

    def _read_range(self, range_analysis: dict) -> dict:
        """The range analysis in the controller's measure, wide layers read as the layer filter reads them."""
        if self.layer_filter_part is not None:
            range_analysis = self.layer_filter_part.read_range(range_analysis)
        return range_measure(range_analysis, self.measure)

    def on_range_analysis_before_step(self, record: dict, range_analysis: dict) -> None:
        self.sync()
        range_analysis = self._read_range(range_analysis)
        step_layers = record_measure(record, self.measure)[0]
        step_temperature = float(np.mean(list(step_layers.values()))) if step_layers else 0.0
        self.range_analysis = dict(range_analysis, step_temperature=step_temperature, measure=self.measure)
        pooled = self.estimator.pool_add(record, range_analysis)
        fitted = fit(pooled)
        if self.estimator.start is None:
            self.estimator.choose_start(pooled)
        if fitted is None:
            messages.warn(
                "The range analysis before the first step could not be fitted; ActCooLR starts at "
                "the schedule's initial learning rate.",
                stacklevel=2,
            )
            self.auto_learning_rate = self.schedule.value_at(record["step"])  # the step's rate was a reference one
            return
        sigma = self.estimator.adopt(fitted[0]) if self.sigma is None else self.sigma
        rate = self.estimator.predicted_rate(fitted[1], sigma, T.temperature_to_probability(self.target(0.0)))
        self._set_start_rate(rate)
        self.auto_learning_rate = float(np.clip(rate, self.min_learning_rate, self.schedule.read().max_learning_rate))
        self.range_analysis.update(sigma=fitted[0], mu=fitted[1])
        self.schedule.assign(anchor_step=record["step"], anchor_learning_rate=self.auto_learning_rate, drift=0.0)
        if self.collapse is not None:
            self.collapse.set_start_rate(record["step"], self.auto_learning_rate)

    # ------------------------------------------------------- a measurement

    def on_measurement(self, record: dict, range_analysis: dict | None) -> None:
        self.sync()
        if range_analysis is not None:
            range_analysis = self._read_range(range_analysis)
            if self.estimator.analysing():
                self._pool(record, range_analysis)
        if record["step"] % self.every_step != 0:
            return  # measured for the range analysis only: the controller acts every `every_step` steps
        sigma = self._sigma(record, range_analysis)
        if self.collapse is not None and self.collapse.check(record, self.batch):
            return
        self._warn_if_dead(record)
        target = self.target(self.progress(record["step"], self.origin))
        probability, control, resolved = followed_probability(record, self.measure, self.layer_filter_part)
        ceiling = self.schedule.read().max_learning_rate
        update = self._paper_update(record, probability, target, sigma, ceiling).replace(resolved=resolved)
        for guard in self.rate_guard_parts:
            update = guard.limit(update)
        new_rate = float(np.clip(update.new_rate, self.min_learning_rate, ceiling))
        self.schedule.assign(anchor_step=record["step"] + 1, anchor_learning_rate=new_rate, drift=update.drift)
        if self.collapse is not None:
            self.collapse.keep(record["step"], record["learning_rate"], new_rate, record)
        extra = {"target_temperature": target, "control_temperature": control, "sigma": sigma}
        extra.update(next_learning_rate=new_rate, max_learning_rate=ceiling, runaway=update.runaway)
        extra.update(step_scale=update.step_scale)
        self.record_measurement(dict(record, **extra, measure=self.measure))

    def _paper_update(
        self, record: dict, probability: float | None, target: float, sigma: float, ceiling: float
    ) -> RateUpdate:
        """The paper's update (`temperature.static_lr_update`), or the rate held without a probability."""
        rate = record["learning_rate"]
        new_rate, drift = rate, 0.0
        if probability is not None:
            # The target rate is clipped to the bounds before the drift is formed (no overflow at any sigma).
            target_probability = T.temperature_to_probability(target)
            bounds = {"min_learning_rate": self.min_learning_rate, "max_learning_rate": ceiling}
            full = self.guard_on("full_tracking")
            new_rate, drift = T.static_lr_update(
                rate,
                probability,
                target_probability,
                sigma,
                self.every_step,
                self.epsilon,
                **bounds,
                full_tracking=full,
            )
        return RateUpdate(record["step"], rate, new_rate, drift, probability, sigma, self.every_step, self.curve_steps)

    def _pool(self, record: dict, range_analysis: dict) -> None:
        pooled = self.estimator.pool_add(record, range_analysis)
        if self.estimator.start is None:
            self.estimator.choose_start(pooled)
        if self.estimator.pooling:
            fitted = self.estimator.estimate(pooled, self.params.get("steps") if self.params else None)
            if fitted is not None:
                self._adopt(fitted, record["step"])

    def _sigma(self, record: dict, range_analysis: dict | None) -> float:
        """The sigma of this update: given, estimated, fitted now, or the fallback while pooling."""
        if self.sigma is not None:
            return self.sigma
        sigma = self.estimator.sigma
        if sigma is None and not self.estimator.pooling:
            sigma = self._adopt(fit(range_analysis) or (FALLBACK_SIGMA, None), record["step"])
        # While the first batches' analyses cannot be fitted yet: the fallback, not stored.
        return FALLBACK_SIGMA if sigma is None else sigma

    def _warn_if_dead(self, record: dict) -> None:
        names, dead = list(record["layers"]), record.get("dead", {})
        if names and all(dead.get(n, 0.0) >= 1.0 for n in names) and not self._warned_dead:
            self._warned_dead = True
            messages.warn(
                f"Every APTReLU layer of model {self.model.name!r} is dead at step {record['step']}: no channel is "
                "on at any position of the measured batch, so the network cannot learn and its temperature "
                "reads 0. Check the initialization, the input scaling and the learning rate.",
                stacklevel=3,
            )
