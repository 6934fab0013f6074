"""`ActCooLR`: the static controller of supplementary section B, with its guards."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Callable

import numpy as np
import tensorflow as tf
from scipy import special

from keras_actcoolr import temperature as T
from keras_actcoolr import validation
from keras_actcoolr.callbacks.base import MeasuringCallback, bind_controller
from keras_actcoolr.measurement import DEFAULT_MEASURE, RangeCounts, check_measure, range_measure, record_measure
from keras_actcoolr.schedules import ActCooLRSchedule

__all__ = ["ActCooLR"]

#: sigma used when the range analysis at the start cannot be fitted (see the README).
FALLBACK_SIGMA = 1.0

#: `ActCooLR(start_temperature="auto")`: the start temperature used when no layer's range analysis
#: can be fitted (with a warning).
FALLBACK_START_TEMPERATURE = 1.0

#: `ActCooLR(sigma_examples=...)` default: examples whose range analyses estimate sigma
#: (supplementary section C), or one epoch if the training set is smaller.
SIGMA_EXAMPLES = 4096

#: `ActCooLR(max_learning_rate="auto")`: the ceiling as a multiple of the rate that the fitted
#: erf model gives for the start temperature.
AUTO_CEILING_FACTOR = 10.0

#: Weight of a new measured batch in the collapse guard's moving average of the loss.
LOSS_AVERAGE_WEIGHT = 0.25

#: Measurements the moving average takes in before the collapse guard compares it.
LOSS_AVERAGE_WARMUP = 4


def _smoothed(average: float, loss: float) -> float:
    """The exponential moving average of the measured batch losses after `loss` (NaN: none yet)."""
    return loss if math.isnan(average) else (1 - LOSS_AVERAGE_WEIGHT) * average + LOSS_AVERAGE_WEIGHT * loss

def _dead_layers(record: dict) -> list[str]:
    """Names of the layers of a record whose every channel was off on the measured batch."""
    dead = record.get("dead", {})
    return [name for name in record["layers"] if dead.get(name, 0.0) >= 1.0]

class ActCooLR(MeasuringCallback):
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
    is estimated by learning-rate range analyses (the Table-1 rates, fitted
    with the erf model) of the first training steps, pooled until
    `sigma_examples` examples (or one epoch of a smaller training set) were
    analysed; meanwhile every step is measured and the controller acts
    every `every_step` steps with the latest estimate. A run resumed from a
    checkpoint keeps the estimate.

    **Guards.** The paper's controller runs away on networks that cool
    faster than the target (with batch normalization and momentum the weight
    norms grow, the effective step falls, and the rate climbs to its clamp),
    and reads dead ReLUs as cold. Three guards, on by default, keep the
    update above as their core (`guards=False` turns all of them off and
    gives the paper's controller exactly):

    - `layer_filter`: layers whose every channel is dead on the measured
      batch (they read `T = 0`, frozen, not cold) and layers whose
      measurement is saturated (fewer than
      `keras_actcoolr.temperature.SATURATION_COUNT` unchanged positions, so
      `T` sits near its ceiling `log2(2N)` at any rate) are left out of the
      network temperature that the controller follows (the record's
      `temperature` stays the mean of all layers). If every layer is left
      out, the rate is held.
    - `runaway_guard`: once the rate has risen by more than
      `runaway_factor` since it last fell, and the temperature answered less
      than a quarter of what the erf model predicts for that rise, the rate
      may not rise further (it may still fall).
    - `collapse_guard`: a non-finite loss, a training loss far above its
      minimum (`keras_actcoolr.temperature.loss_spiked` with `loss_tolerance`,
      applied to a moving average of the losses of the measured batches, each
      new one weighted `LOSS_AVERAGE_WEIGHT`, compared once it has taken in
      `LOSS_AVERAGE_WARMUP` measurements), or the frozen signature (a layer with every channel
      dead and `T = 0` while the rate is above that of the kept state)
      restores the last good state kept in memory (weights, optimizer slots;
      the step count goes on), lowers the rate's ceiling to
      `collapse_backoff` times the highest rate since that state, restarts
      below it, and resets the epoch's running metrics. The event is a
      record in `history` (`{"event": "collapse", ...}`), the `collapses`
      count in the logs, and a warning. The good state is copied every
      `snapshot_every` healthy measurements (two copies are kept; the older
      one is restored), in memory: it costs twice the weights and slots.

    With `max_learning_rate="auto"` the ceiling comes from the range
    analysis that estimates `sigma` (or picks the first rate): ten times the
    rate the fitted erf model gives for the start temperature, at most
    `100`; it belongs to the runaway guard. Without a range analysis (`sigma`
    given and no `initial_learning_rate="auto"`) or with the runaway guard
    off, it is `100`, the top of the range analysis.

    **Measure.** `measure` chooses the layer temperatures the controller
    follows: `"vector"`, the paper's (a position changes when any of the
    layer's channels flips), or `"grouped"`, the same on groups of 8
    channels (see `keras_actcoolr.APTReLU`), which resolves wide layers that
    the paper's count saturates. The network temperature, the erf fits for
    sigma and the first rate, the pooled range analyses, `"auto"` start
    temperatures and the saturation filter all use the chosen measure. The
    grouped scale is cooler than the paper's on layers wider than 8 channels
    (about `8 / C` of it when channels flip independently), so a start
    temperature means a hotter network under `"grouped"`.

    `history` holds one record per measurement (see `TemperatureLogger`),
    extended by `target_temperature`, `control_temperature` (the value the
    controller followed, of the chosen measure; `None` when it held the rate because no layer was left),
    `measure`,
    `max_learning_rate` (the ceiling in force), `sigma`, `next_learning_rate` and `runaway` (the
    runaway guard held the rate), and one record per collapse event.

    Example:

    ```python
    model = keras_actcoolr.convert(model)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras_actcoolr.ActCooLRSchedule(initial_learning_rate=0.1), momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=10, callbacks=[
        keras_actcoolr.ActCooLR(start_temperature=1.0, gamma=1.0, every_step=10)])
    ```

    Args:
        start_temperature: Float > 0, the target temperature at the start
            of training, or `"auto"`: chosen from the first range analysis
            (`keras_actcoolr.temperature.auto_start_temperature`; the mean
            layer temperature where the median layer's change probability
            is 1/2, within `[0.5, 4]`; `1.0` with a warning when no layer's
            analysis can be fitted). The paper's `3.03` is for ResNet-32 on
            CIFAR-10; `1.0` (change probability 1/2) was chosen on this
            project's development tasks (`docs/quality.md`). Defaults to `1.0`.
        gamma: Float > 0, speed of cooling (1 is linear). Defaults to `1.0`.
        every_step: Integer >= 1, steps between measurements. Defaults to `10`.
        sigma: Float > 0 or `None` (estimate at the start). Defaults to `None`.
        total_steps: Integer >= 1 or `None` (take `epochs * steps` from
            `fit`). Needed when the data has no known length. Defaults to `None`.
        target_temperature: Callable `progress -> temperature` replacing the
            power curve, or `None`. It must return a finite number >= 0.
            Defaults to `None`.
        min_learning_rate: Float >= 0, lower bound of the rate.
            Defaults to `1e-7`.
        max_learning_rate: Float > `min_learning_rate`, upper bound of the
            rate, or `"auto"` (see above). Defaults to `"auto"`.
        epsilon: Float in (0, 0.5), clamp of the probabilities.
            Defaults to `1e-6`.
        initial_learning_rate: `None` (start at the schedule's initial rate)
            or `"auto"`: before the first step, a range analysis of the first
            batch fits `sigma` and `mu` and the first rate is the one the erf
            model predicts for the start temperature,
            `exp(mu + sigma * PhiInv(P*(0)))`, whatever the schedule's initial
            rate (supplementary section B). The analysed step is undone; its
            batch is not trained on. Defaults to `"auto"`.
        guards: Boolean, `False` turns every guard off (the paper's
            controller). Defaults to `True`.
        collapse_guard: Boolean, the collapse guard. Defaults to `True`.
        runaway_guard: Boolean, the runaway guard. Defaults to `True`.
        layer_filter: Boolean, leave dead and saturated layers out of the
            controlled temperature. Defaults to `True`.
        loss_tolerance: Float > 0, share of the progress since the start
            that a loss may give back before it counts as a collapse.
            Defaults to `0.5`.
        runaway_factor: Float > 1, rise of the rate allowed without an answer
            of the temperature. Defaults to `2.0`.
        collapse_backoff: Float in (0, 1), the new ceiling as a share of the
            highest rate before a collapse. Defaults to `0.5`.
        snapshot_every: Integer >= 1, healthy measurements between two copies
            of the good state. Defaults to `5`.
        sigma_examples: Integer >= 1, examples whose range analyses are
            pooled to estimate `sigma` (supplementary section C's 4096; at
            most one epoch is analysed). Unused when `sigma` is given.
            Defaults to `4096`.
        measure: `"vector"` (the paper's whole-vector temperatures) or
            `"grouped"` (groups of 8 channels), the layer temperatures the
            controller follows (see above). `guards=False` with `"vector"`
            is the paper's controller. Defaults to `"vector"`
            (`keras_actcoolr.measurement.DEFAULT_MEASURE`; chosen on the
            development tasks, `docs/method.md#wide-layers-the-grouped-measurement`).

    Raises:
        ValueError: for an argument out of its range, naming it and the
            received value (for example `measure="patterns"`).
    """

    #: `APTModel.fit` refuses other callbacks that set the rate next to a callback that says True here.
    drives_learning_rate = True

    def __init__(
        self,
        start_temperature: float | str = 1.0,
        gamma: float = 1.0,
        every_step: int = 10,
        sigma: float | None = None,
        total_steps: int | None = None,
        target_temperature: Callable[[float], float] | None = None,
        min_learning_rate: float = 1e-7,
        max_learning_rate: float | str = "auto",
        epsilon: float = T.EPSILON,
        initial_learning_rate: str | None = "auto",
        guards: bool = True,
        collapse_guard: bool = True,
        runaway_guard: bool = True,
        layer_filter: bool = True,
        loss_tolerance: float = 0.5,
        runaway_factor: float = 2.0,
        collapse_backoff: float = 0.5,
        snapshot_every: int = 5,
        sigma_examples: int = SIGMA_EXAMPLES,
        measure: str = DEFAULT_MEASURE,
    ) -> None:
        super().__init__(every_step)
        self.measure = check_measure(measure)
        if initial_learning_rate not in (None, "auto"):
            raise ValueError(
                f'`initial_learning_rate` must be None or "auto". Received: initial_learning_rate={initial_learning_rate!r}'
            )
        self.initial_learning_rate = initial_learning_rate
        self.auto_learning_rate: float | None = None
        self.range_analysis: dict | None = None
        self.sigma_analysis: dict | None = None
        self.epsilon = validation.real_in("epsilon", epsilon, 0.0, 0.5)
        if isinstance(start_temperature, str):
            if start_temperature != "auto":
                raise ValueError(
                    f'`start_temperature` must be a float > 0 or "auto". Received: start_temperature={start_temperature!r}'
                )
            self.start_temperature: float | str = "auto"
        else:
            self.start_temperature = validation.positive("start_temperature", start_temperature)
        if self.start_temperature != "auto" and T.temperature_to_probability(self.start_temperature) >= 1.0 - self.epsilon:
            limit = float(T.probability_to_temperature(1.0 - self.epsilon))
            raise ValueError(
                "`start_temperature` is so high that its change probability rounds to 1 "
                f"(the limit for epsilon={self.epsilon} is {limit:.3f}). "
                f"Received: start_temperature={start_temperature!r}"
            )
        self.gamma = validation.positive("gamma", gamma)
        self.sigma = None if sigma is None else validation.positive("sigma", sigma)
        if total_steps is not None and (
            isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps < 1
        ):
            raise ValueError(f"`total_steps` must be an integer >= 1 or None. Received: total_steps={total_steps!r}")
        self.total_steps = None if total_steps is None else int(total_steps)
        if target_temperature is not None and not callable(target_temperature):
            raise ValueError(
                "`target_temperature` must be a callable `progress -> temperature` or None. "
                f"Received: target_temperature={target_temperature!r}"
            )
        self.target_temperature = target_temperature
        self.min_learning_rate = validation.real_in("min_learning_rate", min_learning_rate, 0.0, math.inf, low_open=False)
        if max_learning_rate == "auto":
            self.max_learning_rate: float | str = "auto"
        else:
            self.max_learning_rate = validation.positive("max_learning_rate", max_learning_rate)
            if self.max_learning_rate <= self.min_learning_rate:
                raise ValueError(
                    "`max_learning_rate` must be greater than `min_learning_rate`. "
                    f"Received: min_learning_rate={min_learning_rate!r}, max_learning_rate={max_learning_rate!r}"
                )
        for name, value in (
            ("guards", guards),
            ("collapse_guard", collapse_guard),
            ("runaway_guard", runaway_guard),
            ("layer_filter", layer_filter),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
        self.guards = guards
        self.collapse_guard = collapse_guard
        self.runaway_guard = runaway_guard
        self.layer_filter = layer_filter
        self.loss_tolerance = validation.positive("loss_tolerance", loss_tolerance)
        self.runaway_factor = validation.real_in("runaway_factor", runaway_factor, 1.0, math.inf)
        self.collapse_backoff = validation.real_in("collapse_backoff", collapse_backoff, 0.0, 1.0)
        self.snapshot_every = validation.integer_at_least_one(snapshot_every, "snapshot_every")
        self.sigma_examples = validation.integer_at_least_one(sigma_examples, "sigma_examples")
        self._schedule: ActCooLRSchedule | None = None
        self._start: float | None = None
        self._synced = False
        self._pooling = False
        self._pool: dict | None = None
        self._anchored = False
        self._steps: int | None = None
        self._sigma: float | None = None
        self._snapshots: list[dict] = []
        self._healthy = 0
        self._warned_dead = False

    @property
    def measurements(self) -> list[dict]:
        """The measurement records of `history` (without the collapse events)."""
        return [record for record in self.history if "event" not in record]

    @property
    def events(self) -> list[dict]:
        """The collapse events of `history`."""
        return [record for record in self.history if "event" in record]

    # ------------------------------------------------------------- switches

    def _on(self, guard: str) -> bool:
        return self.guards and bool(getattr(self, guard))

    # ---------------------------------------------------------------- fit

    def on_train_begin(self, logs: dict | None = None) -> None:
        schedule, self._steps = bind_controller(self)
        state = schedule.state()
        ceiling = self.max_learning_rate
        if ceiling == "auto":
            stored = state["max_learning_rate"]
            # Kept when a range analysis or the collapse guard set it (a resumed run).
            ceiling = stored if self._on("runaway_guard") and math.isfinite(stored) and stored < T.RANGE_LEARNING_RATES[-1] and (
                state["sigma"] > 0 or state["collapses"] > 0
            ) else float(T.RANGE_LEARNING_RATES[-1])
        elif state["collapses"] > 0 and self._on("collapse_guard"):
            ceiling = min(ceiling, state["max_learning_rate"])
        updates: dict[str, float] = {"min_learning_rate": self.min_learning_rate, "max_learning_rate": ceiling}
        if self.sigma is not None:
            updates["sigma"] = self.sigma
        if self.start_temperature != "auto":
            updates["start_temperature"] = self.start_temperature
        schedule.assign(**updates)
        self._sigma = self.sigma
        self._synced = False  # the start temperature and the pool are read at the first step
        self._anchored = False
        self._schedule = schedule
        self._snapshots = []
        self._healthy = 0
        self._warned_dead = False
        super().on_train_begin(logs)

    def _sync(self) -> None:
        """Read the start temperature and the pool of range analyses from the controller state.

        Once per fit, at its first step rather than in `on_train_begin`: a
        checkpoint that a callback after this one restores there (Keras's
        `BackupAndRestore`) is then seen. "auto" keeps the start temperature
        chosen by the run this one resumes; the pool goes on filling where the
        resumed run left it.
        """
        if self._synced or self._schedule is None:
            return
        self._synced = True
        state = self._schedule.state()
        # A sigma already in the state (given, or estimated by the run this one resumes) came with its ceiling.
        self._anchored = state["sigma"] > 0.0
        if self.start_temperature == "auto":
            self._start = state["start_temperature"] if state["start_temperature"] > 0 else None
        else:
            self._start = self.start_temperature
        # sigma is estimated over the range analyses of the first steps, unless given or estimated.
        self._pooling = self.sigma is None and not state["pool_done"] and (
            state["sigma"] <= 0.0 or state["pool_batches"] > 0
        )
        self._pool = None
        if self._pooling and state["pool_batches"] > 0:
            counts = self._schedule.pool_counts()
            if counts is None:
                self._pooling = False  # no counts in the state to go on from: keep the stored sigma
            else:
                self._pool = {"counts": counts, "examples": state["pool_examples"], "batches": state["pool_batches"]}

    def _analysing(self) -> bool:
        """Whether the steps still need range analyses (for sigma or the start temperature)."""
        self._sync()
        return self._schedule is not None and (self._pooling or self._start is None)

    def steps_to_measurement(self, step: int) -> int:
        """Every step while sigma is being estimated, then every `every_step` steps."""
        return 0 if self._analysing() else (-step) % self.every_step

    def wants_range_analysis(self, step: int) -> bool | str:
        if self._schedule is None:
            return False
        if self.initial_learning_rate == "auto" and self.auto_learning_rate is None and step == 0:
            return "before_step"
        return self._analysing() or self._schedule.state()["sigma"] <= 0.0

    def on_range_analysis_before_step(self, record: dict, range_analysis: dict) -> None:
        self._sync()
        range_analysis = range_measure(range_analysis, self.measure)
        step_layers = record_measure(record, self.measure)[0]
        step_temperature = float(np.mean(list(step_layers.values()))) if step_layers else 0.0
        self.range_analysis = dict(
            range_analysis, step_temperature=step_temperature, measure=self.measure
        )
        range_analysis = self._pool_add(record, range_analysis)
        fitted = self._fit(range_analysis)
        if self._start is None:
            self._choose_start(range_analysis)
        if fitted is None:
            warnings.warn(
                "The range analysis before the first step could not be fitted; ActCooLR starts at "
                "the schedule's initial learning rate.",
                stacklevel=2,
            )
            self.auto_learning_rate = record["learning_rate"]
            return
        sigma, mu = fitted
        if self.sigma is None:
            self._adopt_sigma(sigma, None, record["step"])
        rate = self._predicted_rate(mu, self._sigma)
        self._set_auto_ceiling(rate)
        self._anchored = True
        ceiling = self._schedule.state()["max_learning_rate"]
        self.auto_learning_rate = float(np.clip(rate, self.min_learning_rate, ceiling))
        self.range_analysis.update(sigma=sigma, mu=mu)
        self._schedule.assign(anchor_step=record["step"], anchor_learning_rate=self.auto_learning_rate, drift=0.0)

    def target(self, progress: float) -> float:
        """Target temperature at `progress` in [0, 1]."""
        if self.target_temperature is not None:
            value = self.target_temperature(progress)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value) and value >= 0
            ):
                raise ValueError(
                    "`target_temperature` must return a finite number >= 0. "
                    f"Received: {value!r} at progress={progress!r}"
                )
            return float(value)
        start = self._start
        if start is None:  # "auto" not chosen yet
            start = FALLBACK_START_TEMPERATURE if self.start_temperature == "auto" else self.start_temperature
        return float(T.target_temperature(progress, start, self.gamma))

    def on_measurement(self, record: dict, range_analysis: dict | None) -> None:
        self._sync()
        schedule = self._schedule
        if range_analysis is not None:
            range_analysis = range_measure(range_analysis, self.measure)
        if range_analysis is not None and self._analysing():
            pooled = self._pool_add(record, range_analysis)
            if self._start is None:
                self._choose_start(pooled)
            if self._pooling:
                self._estimate_sigma(record, pooled)
        if record["step"] % self.every_step != 0:
            return  # measured for the range analysis only: the controller acts every `every_step` steps
        if self._sigma is None:
            # Given, estimated earlier in this fit, or restored from a checkpoint.
            self._sigma = schedule.state()["sigma"]
        if self._sigma <= 0.0 and not self._pooling:
            fitted = self._fit(range_analysis)
            self._adopt_sigma(*(fitted or (FALLBACK_SIGMA, None)), record["step"])
        # While the first batches' analyses cannot be fitted yet: the fallback, not stored.
        sigma = self._sigma if self._sigma > 0.0 else FALLBACK_SIGMA
        step = record["step"]
        rate = record["learning_rate"]
        state = schedule.state()
        if self._on("collapse_guard"):
            reason = self._collapse_reason(record, state)
            if reason is not None and self._snapshots:
                self._collapse(step, reason, rate)
                return
            self._track_loss(record.get("loss"), state)
        progress = min(step / self._steps, 1.0)
        target = self.target(progress)
        names = list(record["layers"])
        dead = record.get("dead", {})
        if names and all(dead.get(n, 0.0) >= 1.0 for n in names) and not self._warned_dead:
            self._warned_dead = True
            warnings.warn(
                f"Every APTReLU layer of model {self.model.name!r} is dead at step {step}: no channel is on "
                "at any position of the measured batch, so the network cannot learn and its temperature "
                "reads 0. Check the initialization, the input scaling and the learning rate.",
                stacklevel=2,
            )
        layers, positions, saturated = record_measure(record, self.measure)
        temperatures = np.array([layers[n] for n in names], dtype=np.float64)
        excluded = None
        if self._on("layer_filter"):
            dead = record.get("dead", {})
            saturated = set(saturated)
            excluded = np.array([dead.get(n, 0.0) >= 1.0 or n in saturated for n in names])
        probability = T.control_probability(temperatures, excluded)
        if probability is not None and excluded is not None:
            # With N positions a count resolves P down to about 1/N: no change is no proof of P = 0.
            kept = [positions.get(n, 0.0) for n, out in zip(names, excluded) if not out]
            if kept and min(kept) > 0:
                probability = max(probability, 0.5 / min(kept))
        runaway = False
        if probability is None:
            # Nothing left to follow (every layer dead or saturated): hold the rate.
            new_rate, drift = rate, 0.0
            control = None
        else:
            control = float(T.probability_to_temperature(probability))
            new_rate, drift = T.static_lr_update(
                rate, probability, T.temperature_to_probability(target), sigma, self.every_step, self.epsilon
            )
            if self._on("runaway_guard"):
                new_rate, drift, runaway = self._limit_runaway(rate, probability, sigma, new_rate, drift, state)
        ceiling = state["max_learning_rate"]
        new_rate = float(np.clip(new_rate, self.min_learning_rate, ceiling))
        schedule.assign(anchor_step=step + 1, anchor_learning_rate=new_rate, drift=drift)
        if self._on("collapse_guard"):
            self._keep_state(step, rate, new_rate, set(_dead_layers(record)))
        self.history.append(
            dict(
                record,
                target_temperature=target,
                control_temperature=control,
                sigma=sigma,
                next_learning_rate=new_rate,
                max_learning_rate=ceiling,
                runaway=runaway,
                measure=self.measure,
            )
        )

    def on_divergence(self, step: int, loss: float) -> bool:
        """A measured step with a non-finite loss: restore the kept state if the guard is on."""
        if not (self._on("collapse_guard") and self._snapshots):
            return False
        self._collapse(step, "non-finite loss", self._schedule.value_at(step))
        return True

    # ------------------------------------------------------------- guards

    def _collapse_reason(self, record: dict, state: dict) -> str | None:
        loss = record.get("loss")
        if loss is not None:
            if not math.isfinite(loss):
                return "non-finite loss"
            average = _smoothed(state["loss_average"], loss)
            settled = state["loss_count"] >= LOSS_AVERAGE_WARMUP
            if settled and T.loss_spiked(average, state["loss_minimum"], state["loss_reference"], self.loss_tolerance):
                return f"loss spike (batch {loss:.4g}, average {average:.4g}, minimum {state['loss_minimum']:.4g})"
        if self._snapshots and record["learning_rate"] > self._snapshots[0]["learning_rate"]:
            # Died since the kept state, while the rate rose: frozen, not cold.
            kept_dead = self._snapshots[0]["dead"]
            frozen = [n for n in _dead_layers(record) if record["layers"][n] == 0.0 and n not in kept_dead]
            if frozen:
                return f"frozen layer {frozen[0]!r} (every channel dead, T = 0) while the rate rose"
        return None

    def _track_loss(self, loss: float | None, state: dict) -> None:
        """Moving average of the measured batches' losses, its first value and its minimum."""
        if loss is None or not math.isfinite(loss):
            return
        average = _smoothed(state["loss_average"], loss)
        count = state["loss_count"] + 1
        updates = {"loss_average": average, "loss_count": count}
        if count == LOSS_AVERAGE_WARMUP:
            # The average now spans about as many measurements as it remembers: start comparing.
            updates["loss_reference"] = updates["loss_minimum"] = average
        elif count > LOSS_AVERAGE_WARMUP and average < state["loss_minimum"]:
            updates["loss_minimum"] = average
        self._schedule.assign(**updates)

    def _limit_runaway(
        self, rate: float, probability: float, sigma: float, new_rate: float, drift: float, state: dict
    ) -> tuple[float, float, bool]:
        z = float(special.ndtri(np.clip(probability, self.epsilon, 1 - self.epsilon)))
        if new_rate <= rate:
            if state["rise_learning_rate"] > 0:
                self._schedule.assign(rise_learning_rate=0.0, rise_z=0.0)
            return new_rate, drift, False
        anchor = state["rise_learning_rate"]
        if anchor <= 0:
            self._schedule.assign(rise_learning_rate=rate, rise_z=z)
            return new_rate, drift, False
        if T.runaway_limited(rate, anchor, z, state["rise_z"], sigma, self.runaway_factor):
            return rate, 0.0, True
        return new_rate, drift, False

    def _keep_state(self, step: int, rate: float, new_rate: float, dead: set) -> None:
        """Copy weights and optimizer slots every `snapshot_every` healthy measurements (keep two).

        Each copy also tracks the highest rate used since it was taken.
        """
        for snapshot in self._snapshots:
            snapshot["peak"] = max(snapshot["peak"], rate, new_rate)
        if self._healthy % self.snapshot_every == 0:
            values = [tf.identity(v.value) for v in self._guarded_variables()]
            self._snapshots.append(
                {"step": step, "learning_rate": new_rate, "peak": new_rate, "values": values, "dead": dead}
            )
            self._snapshots = self._snapshots[-2:]
        self._healthy += 1

    def _guarded_variables(self) -> list:
        optimizer = self.model.optimizer
        skip = {id(v) for v in self._schedule.variables} | {id(optimizer.iterations)}
        slots = [v for v in optimizer.variables if id(v) not in skip]
        return list(self.model.variables) + slots

    def _collapse(self, step: int, reason: str, rate: float) -> None:
        snapshot = self._snapshots[0]
        for variable, value in zip(self._guarded_variables(), snapshot["values"]):
            variable.assign(value)
        state = self._schedule.state()
        peak = max(snapshot["peak"], rate)
        ceiling = max(min(state["max_learning_rate"], self.collapse_backoff * peak), self.min_learning_rate)
        restart = min(snapshot["learning_rate"], ceiling)
        self._schedule.assign(
            anchor_step=step + 1,
            anchor_learning_rate=restart,
            drift=0.0,
            max_learning_rate=ceiling,
            collapses=state["collapses"] + 1,
            loss_average=math.nan,
            loss_count=0,
            rise_learning_rate=0.0,
            rise_z=0.0,
        )
        # The epoch's running loss holds the collapse; start it again from the restored state.
        for metric in self.model.metrics:
            metric.reset_state()
        snapshot["peak"] = restart
        self._snapshots = [snapshot]
        self._healthy = 1
        event = {
            "step": step,
            "event": "collapse",
            "reason": reason,
            "restored_step": snapshot["step"],
            "learning_rate": rate,
            "max_learning_rate": ceiling,
            "next_learning_rate": restart,
        }
        self.history.append(event)
        warnings.warn(
            f"ActCooLR: {reason} at step {step}. Restored the state of step {snapshot['step']}, "
            f"lowered the maximum learning rate to {ceiling:.4g} and restarted at {restart:.4g}.",
            stacklevel=2,
        )

    # ------------------------------------------------------ range analysis

    def _pool_add(self, record: dict, range_analysis: dict) -> dict:
        """Add a batch's range analysis to those of the earlier batches; the pooled analysis.

        Counts add up over batches (as one analysis of all their examples
        would count them); the temperatures are recomputed from the sums.
        """
        counts = np.asarray(range_analysis["counts"], dtype=np.float64)
        pool = self._pool
        if pool is None or pool["counts"].shape != counts.shape:
            pool = self._pool = {"counts": np.zeros_like(counts), "examples": 0, "batches": 0}
        pool["counts"] = pool["counts"] + counts
        pool["examples"] += int(record.get("examples", 0))
        pool["batches"] += 1
        # Kept with the controller state, so that a resumed run goes on from here.
        self._schedule.assign_pool_counts(pool["counts"])
        self._schedule.assign(pool_examples=pool["examples"], pool_batches=pool["batches"])
        pooled = RangeCounts(np.asarray(range_analysis["learning_rates"]), pool["counts"])
        return dict(pooled, examples=pool["examples"], batches=pool["batches"])

    def _estimate_sigma(self, record: dict, pooled: dict) -> None:
        """Refit sigma to the pooled analysis; stop pooling at `sigma_examples` examples or one epoch."""
        steps_per_epoch = self.params.get("steps") if self.params else None
        done = pooled["examples"] >= self.sigma_examples or (
            steps_per_epoch is not None and pooled["batches"] >= steps_per_epoch
        )
        if not pooled["examples"] and steps_per_epoch is None:
            done = True  # no example count and no epoch length: one batch, as without pooling
        fitted = self._fit(pooled, warn=done and self._schedule.state()["sigma"] <= 0.0)
        if fitted is not None:
            self._adopt_sigma(*fitted, record["step"])
            self.sigma_analysis = dict(pooled, sigma=fitted[0], mu=fitted[1])
        elif done and self._schedule.state()["sigma"] <= 0.0:
            self._adopt_sigma(FALLBACK_SIGMA, None, record["step"])
        if done:
            self._pooling = False
            self._pool = None
            self._schedule.assign(pool_done=1)

    def _adopt_sigma(self, sigma: float, mu: float | None, step: int) -> None:
        """Store `sigma`; the first fit of this fit (with its `mu`) also sets the "auto" ceiling.

        `self._sigma` is the stored float32 value, the one a run resumed from
        a checkpoint reads. The ceiling comes from the rate the erf model
        `(sigma, mu)` gives for the target at `step`.
        """
        self._schedule.assign(sigma=sigma)
        self._sigma = self._schedule.state()["sigma"]
        if mu is not None and not self._anchored:
            target = T.temperature_to_probability(self.target(min(step / self._steps, 1.0)))
            self._set_auto_ceiling(self._predicted_rate(mu, self._sigma, target))
            self._anchored = True

    def _choose_start(self, range_analysis: dict) -> None:
        """Resolve `start_temperature="auto"` from a range analysis (see `temperature.auto_start_temperature`)."""
        try:
            start = T.auto_start_temperature(range_analysis["learning_rates"], range_analysis["layer_temperatures"])
        except ValueError as error:
            warnings.warn(f"{error} ActCooLR starts at temperature {FALLBACK_START_TEMPERATURE}.", stacklevel=3)
            start = FALLBACK_START_TEMPERATURE
        self._schedule.assign(start_temperature=start)
        self._start = self._schedule.state()["start_temperature"]

    def _fit(self, range_analysis: dict | None, warn: bool = True) -> tuple[float, float] | None:
        """`(sigma, mu)` of the erf model fitted to a range analysis, or None (with a warning if `warn`)."""
        if range_analysis is None:
            if warn:
                warnings.warn(f"No range analysis for sigma; using sigma={FALLBACK_SIGMA}.", stacklevel=3)
            return None
        try:
            return T.fit_erf_model(range_analysis["learning_rates"], range_analysis["temperatures"])
        except ValueError as error:
            if warn:
                warnings.warn(f"{error} ActCooLR uses sigma={FALLBACK_SIGMA}.", stacklevel=3)
            return None

    def _predicted_rate(self, mu: float, sigma: float, probability: float | None = None) -> float:
        """The rate the erf model `(sigma, mu)` gives for `probability` (default: the start target)."""
        if probability is None:
            probability = T.temperature_to_probability(self.target(0.0))
        return float(T.erf_learning_rate(probability, sigma, mu, self.epsilon))

    def _set_auto_ceiling(self, start_rate: float) -> None:
        if self.max_learning_rate != "auto" or not self._on("runaway_guard"):
            return
        state = self._schedule.state()
        ceiling = min(AUTO_CEILING_FACTOR * start_rate, state["max_learning_rate"], float(T.RANGE_LEARNING_RATES[-1]))
        if ceiling > self.min_learning_rate:
            self._schedule.assign(max_learning_rate=ceiling)
