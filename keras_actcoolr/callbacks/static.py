"""`StaticController`: the fit machinery of `ActCooLR`, a sequence of calls to its parts."""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_actcoolr import messages
from keras_actcoolr import temperature as T
from keras_actcoolr.callbacks.collapse import CollapseGuard
from keras_actcoolr.callbacks.controller import ControllerCallback
from keras_actcoolr.callbacks.guards import FinalAnneal, LayerFilter, RateGuard, RateUpdate, RunawayGuard
from keras_actcoolr.callbacks.sigma import FALLBACK_SIGMA, FALLBACK_START_TEMPERATURE, SigmaEstimator, fit
from keras_actcoolr.measurement import range_measure, record_measure
from keras_actcoolr.schedules import unwrapped_optimizer
from keras_actcoolr.state import controller_state

__all__ = ["StaticController"]


class StaticController(ControllerCallback):
    """The static controller's fit: binds the parts at `on_train_begin` and calls them per measurement.

    `ActCooLR` validates the arguments; this class runs the parts: a
    `SigmaEstimator`, a `LayerFilter`, a `CollapseGuard` and the rate guards
    (`RunawayGuard`, `FinalAnneal`, then `rate_guards`).
    """

    # The parts, bound at `on_train_begin` (none before the first fit).
    estimator: SigmaEstimator | None = None
    collapse: CollapseGuard | None = None
    layer_filter_part: LayerFilter | None = None
    rate_guard_parts: tuple | list = ()
    _synced = False
    _warned_single_batch = False
    _batch: int | None = None

    def _on(self, guard: str) -> bool:
        return self.guards and bool(getattr(self, guard))

    def _bind_parts(self) -> None:
        schedule = self.bind()
        state = controller_state(unwrapped_optimizer(self.model.optimizer))
        self.estimator = SigmaEstimator(
            state["sigma"], self.sigma, self.start_temperature, self.sigma_examples, self.epsilon
        )
        self.layer_filter_part = LayerFilter(self.measure) if self._on("layer_filter") else None
        self.collapse = None
        if self._on("collapse_guard"):
            self.collapse = CollapseGuard(
                state["collapse"], self.loss_tolerance, self.collapse_backoff, self.snapshot_every, self.min_learning_rate
            )
            skip = lambda: schedule.variables + state.variables  # noqa: E731
            self.collapse.bind(self.model, schedule, skip, self._report)
        self.rate_guard_parts: list[RateGuard] = []
        if self._on("runaway_guard"):
            self.rate_guard_parts.append(RunawayGuard(state["runaway"], self.runaway_factor, self.epsilon))
        if self._on("final_anneal"):
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
            ceiling = auto if auto is not None and self._on("runaway_guard") else top
        else:
            ceiling = self.max_learning_rate
        lowered = state["collapse"].read().ceiling
        if lowered is not None and self._on("collapse_guard"):
            ceiling = min(ceiling, lowered)
        return ceiling

    def _report(self, event: dict) -> None:
        self.record_event(event)
        if event["event"] in ("retry", "collapse"):
            for guard in self.rate_guard_parts:
                guard.reset()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._bind_parts()
        self._synced = False  # the start temperature and the pool are read at the first step
        self._anchored = False
        self._origin = 0
        self._curve_set = False
        self._warned_dead = False
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
        self._origin = self.place_curve(self._optimizer_step(), epoch)
        if self.collapse is not None:
            # The state before the first step: a run that starts far too high can fall back to it.
            optimizer = self.model.optimizer
            if not optimizer.built:
                # Its slots are created at the first step otherwise; the kept state needs them now.
                optimizer.build(self.model.trainable_variables)
            step = self._optimizer_step()
            self.collapse.keep_initial(step, self.schedule.value_at(step))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._batch = batch
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
        if math.isfinite(loss) or not self._loss_finite:
            self._loss_finite = True if math.isfinite(loss) else self._loss_finite
            return
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
        return self.collapse.failure(step, "non-finite loss", rate, nonfinite=True, batch=self._batch)

    def _optimizer_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    # ------------------------------------------------------------ the start

    def _sync(self) -> None:
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
        state = self.estimator.read()
        pools = self.sigma is None and not state.pool_done and (state.sigma is None or state.pool_batches > 0)
        return pools or state.start_temperature is None

    def wants_range_analysis(self, step: int) -> bool | str:
        if self.schedule is None:
            return False
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
            return "before_step"
        return self._analysing() or self.estimator.sigma is None

    def start_in_force(self) -> float:
        """The start temperature of the target curve: given, chosen ("auto"), or the fallback until chosen."""
        if self.start_temperature != "auto":
            return self.start_temperature
        start = self.estimator.start
        return FALLBACK_START_TEMPERATURE if start is None else start  # "auto" not chosen yet: the fallback

    def _adopt(self, fitted: tuple, step: int) -> float:
        """Store a fitted `(sigma, mu)`; the first fit of the fit also sets the start rate and the ceiling."""
        sigma = self.estimator.adopt(fitted[0])
        if fitted[1] is not None and not self._anchored:
            target = T.temperature_to_probability(self.target(self.progress(step, self._origin)))
            self._set_start_rate(self.estimator.predicted_rate(fitted[1], sigma, target))
        return sigma

    def _set_start_rate(self, rate: float) -> None:
        if self.collapse is not None:
            self.collapse.start_rate = rate
        if self.max_learning_rate == "auto" and self._on("runaway_guard"):
            in_force = self.schedule.read().max_learning_rate
            ceiling = self.estimator.set_ceiling(rate, in_force, self.min_learning_rate)
            if ceiling is not None:
                self.schedule.assign(max_learning_rate=ceiling)
        self._anchored = True

    def on_range_analysis_before_step(self, record: dict, range_analysis: dict) -> None:
        self._sync()
        range_analysis = range_measure(range_analysis, self.measure)
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
        self._sync()
        if range_analysis is not None:
            range_analysis = range_measure(range_analysis, self.measure)
            if self.estimator.analysing():
                self._pool(record, range_analysis)
        if record["step"] % self.every_step != 0:
            return  # measured for the range analysis only: the controller acts every `every_step` steps
        sigma = self._sigma(record, range_analysis)
        if self.collapse is not None and self.collapse.check(record, self._batch):
            return
        self._warn_if_dead(record)
        target = self.target(self.progress(record["step"], self._origin))
        probability, control = self._control_probability(record)
        update = self._update(record, probability, target, sigma)
        for guard in self.rate_guard_parts:
            update = guard.limit(update)
        ceiling = self.schedule.read().max_learning_rate
        new_rate = float(np.clip(update.new_rate, self.min_learning_rate, ceiling))
        self.schedule.assign(anchor_step=record["step"] + 1, anchor_learning_rate=new_rate, drift=update.drift)
        if self.collapse is not None:
            self.collapse.keep(record["step"], record["learning_rate"], new_rate, record)
        extra = {"target_temperature": target, "control_temperature": control, "sigma": sigma}
        extra.update(next_learning_rate=new_rate, max_learning_rate=ceiling, runaway=update.runaway)
        self.record_measurement(dict(record, **extra, measure=self.measure))

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

    def _control_probability(self, record: dict) -> tuple[float | None, float | None]:
        """The change probability the controller follows (the layer filter applied) and its temperature."""
        names = list(record["layers"])
        layers, positions, saturated = record_measure(record, self.measure)
        temperatures = np.array([layers[n] for n in names], dtype=np.float64)
        excluded = None
        if self.layer_filter_part is not None:
            temperatures, excluded = self.layer_filter_part.excluded(record, names, temperatures, saturated)
        probability = T.control_probability(temperatures, excluded)
        if probability is None:
            return None, None  # nothing left to follow (every layer dead or saturated): hold the rate
        if excluded is not None:
            # With N positions a count resolves P down to about 1/N: no change is no proof of P = 0.
            kept = [positions.get(n, 0.0) for n, out in zip(names, excluded) if not out]
            if kept and min(kept) > 0:
                probability = max(probability, 0.5 / min(kept))
        return probability, float(T.probability_to_temperature(probability))

    def _update(self, record: dict, probability: float | None, target: float, sigma: float) -> RateUpdate:
        rate = record["learning_rate"]
        new_rate, drift = rate, 0.0
        if probability is not None:
            # The target rate is clipped to the bounds before the drift is formed (no overflow at any sigma).
            new_rate, drift = T.static_lr_update(
                rate,
                probability,
                T.temperature_to_probability(target),
                sigma,
                self.every_step,
                self.epsilon,
                min_learning_rate=self.min_learning_rate,
                max_learning_rate=self.schedule.read().max_learning_rate,
            )
        return RateUpdate(record["step"], rate, new_rate, drift, probability, sigma, self.every_step, self.curve_steps)
