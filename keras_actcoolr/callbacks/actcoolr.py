"""`ActCooLR`: the static controller of supplementary section B, with its guards."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from scipy import special

from keras_actcoolr import messages, validation
from keras_actcoolr import temperature as T
from keras_actcoolr.callbacks.base import MeasuringCallback, bind_controller
from keras_actcoolr.measurement import DEFAULT_MEASURE, RangeCounts, check_measure, range_measure, record_measure
from keras_actcoolr.models import AnalysisMode
from keras_actcoolr.schedules import ActCooLRSchedule, unwrapped_optimizer

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

#: Weight of a new measured batch in the collapse guard's moving average of the loss
#: (`keras_actcoolr.temperature.LossSpikeTest`).
LOSS_AVERAGE_WEIGHT = T.LOSS_AVERAGE_WEIGHT

#: Measurements the moving average takes in before the collapse guard compares it.
LOSS_AVERAGE_WARMUP = T.LOSS_AVERAGE_WARMUP

#: The collapse guard's rules on dead layers (a layer that died since the start of the fit, every
#: layer dead) need a measured batch of at least this many examples.
DEAD_EXAMPLES = 4

#: The collapse guard calls a non-finite loss bad data when the step's rate is at most this
#: multiple of the highest rate that healthy measurements proved since the older kept state.
HEALTHY_RATE_SLACK = 1.25

#: `ActCooLR(final_anneal_share=...)` default: the share of training at its end over which the
#: final-anneal guard lets the rate only fall, to 0 at the last step.
FINAL_ANNEAL_SHARE = 0.1


def _read_saturated_through_groups(
    record: dict, names: list[str], temperatures: np.ndarray, saturated: set
) -> tuple[np.ndarray, set]:
    """Layer temperatures as the layer filter reads them, through the groups of 8 channels where needed.

    - A layer of more than `REFERENCE_GROUPS` groups (64 channels) is read as
      that many groups, `T = 8 * T_g`: the temperature of 64 of its channels
      flipping at its rate, so that one wide layer (a 1024-unit dense layer
      reads about 16 times a 64-channel one) does not stand for the network.
    - A saturated layer whose grouped count is not saturated gets the
      paper-scale temperature its groups imply when channels flip
      independently, `(N_g / N) * T_g`, and is no longer saturated.

    Both use `keras_actcoolr.temperature.vector_temperature_from_groups`.
    Layers saturated in both counts stay saturated.
    """
    groups = record.get("group_layers")
    if not groups:
        return temperatures, saturated
    positions, group_positions = record.get("positions", {}), record.get("group_positions", {})
    group_saturated = set(record.get("group_saturated", ()))
    temperatures = temperatures.copy()
    for index, name in enumerate(names):
        n, n_g = positions.get(name, 0.0), group_positions.get(name, 0.0)
        wide = n > 0 and n_g / n > T.REFERENCE_GROUPS
        if (wide or name in saturated) and name not in group_saturated:
            temperatures[index] = T.vector_temperature_from_groups(groups[name], n, n_g, T.REFERENCE_GROUPS)
            saturated = saturated - {name}
        elif wide:
            saturated = saturated | {name}
    return temperatures, saturated


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
    lr_target = clip(lr_target, min_learning_rate, max_learning_rate)
    d = (lr_target - lr) / every_step
    lr <- lr + d                    # the step after the measurement
    lr <- lr + d / every_step       # each following step until the next one
    ```

    `P` and `P*` are clamped to `[epsilon, 1 - epsilon]`, and the rate to
    `[min_learning_rate, max_learning_rate]`. The target is computed in log
    space and clipped before the drift is formed
    (`keras_actcoolr.temperature.static_lr_update`), so that no `sigma`, `P`
    or `P*` makes the rate NaN or infinite. When `sigma` is not given, it
    is estimated by learning-rate range analyses (the Table-1 rates, fitted
    with the erf model) of the first training steps, pooled until
    `sigma_examples` examples (or one epoch of a smaller training set) were
    analysed; meanwhile every step is measured and the controller acts
    every `every_step` steps with the latest estimate. A run resumed from a
    checkpoint keeps the estimate.

    **Guards.** The paper's controller runs away on networks that cool
    faster than the target (with batch normalization and momentum the weight
    norms grow, the effective step falls, and the rate climbs to its clamp),
    and reads dead ReLUs as cold; and a network that cools faster than the
    target near the end of training makes it raise the rate just when every
    tuned schedule anneals. Four guards, on by default, keep the update above
    as their core (`guards=False` turns all of them off and gives the update
    above exactly, the paper's controller with its target clipped to the
    bounds):

    - `layer_filter`: layers whose every channel is dead on the measured
      batch (they read `T = 0`, frozen, not cold) and layers whose
      measurement is saturated (fewer than
      `keras_actcoolr.temperature.SATURATION_COUNT` unchanged positions, so
      `T` sits near its ceiling `log2(2N)` at any rate) are left out of the
      network temperature that the controller follows (the record's
      `temperature` stays the mean of all layers). With `measure="vector"`,
      a layer saturated in its whole-vector count but not in its count over
      groups of 8 channels is kept, read through its groups on the paper's
      scale, and a layer wider than 64 channels is read as 64 of its
      channels (`keras_actcoolr.temperature.vector_temperature_from_groups`,
      `REFERENCE_GROUPS`).
      If every layer is left out, the rate is held.
    - `runaway_guard`: once the rate has risen by more than
      `runaway_factor` since it last fell, and the temperature answered less
      than a quarter of what the erf model predicts for that rise, the rate
      may not rise further (it may still fall); and between two
      measurements the rate may rise by `runaway_factor` at most
      (`keras_actcoolr.temperature.limit_rise`).
    - `collapse_guard`: watches for a non-finite loss on any step (a measured
      batch's loss; between measurements Keras' running loss in
      `logs["loss"]`, at no extra cost), a sustained loss spike
      (`keras_actcoolr.temperature.LossSpikeTest` with `loss_tolerance`: a
      moving average of the measured batch losses, each clipped so that one
      outlier batch cannot fire it, above its minimum by the margin of
      `keras_actcoolr.temperature.loss_spiked` at three measurements in a
      row), and a layer frozen dead (every channel dead and `T = 0`, alive in
      the kept state, while the rate rose since, or since the start of the
      fit). A non-finite loss at a rate that healthy measurements proved
      (at most `HEALTHY_RATE_SLACK` times the highest) is **bad data**: the
      newest healthy state is restored (the failing step's update and those
      since that state, at most `every_step`, are undone and their batches
      skipped), the rate and its ceiling stay, and a `"bad_data"` event names
      the step and the batch index within the epoch. Any other first failure
      is **retried**: the older kept state is restored and the run restarts
      at its rate (from the state before the first step, at the rate the
      range analysis gives for the start temperature), the ceiling unchanged
      (a `"retry"` event). A failure within `snapshot_every` healthy
      measurements of a retry or of bad data, or a frozen layer, is a
      **collapse**: the older kept state is restored, the rate's ceiling is
      lowered to `collapse_backoff` times the highest rate since that state
      and the rate restarts below it (a `"collapse"` event, and the
      `collapses` count in the logs). Every event resets the epoch's running
      metrics, is a record in `history` (`{"event": ..., "reason": ...,
      "restored_step": ...}`) and a warning. The kept states are copies in
      memory (weights and optimizer slots; the step count goes on): the
      state before the fit's first step, one every `snapshot_every` healthy
      measurements (two kept), and the newest healthy one: at most three
      times the weights and slots.
    - `final_anneal`: over the last `final_anneal_share` of training the
      rate may only fall: each update is capped by the line from the rate of
      the measured step down to 0 at the last step, so the rate ends near 0
      as a tuned one-cycle or cosine schedule does (the controller may still
      lower it faster). An update whose interval reaches into that share may
      not raise the rate. It needs no state: it depends on the step and
      `total_steps` only.

    With `max_learning_rate="auto"` the ceiling comes from the range
    analysis that estimates `sigma` (or picks the first rate): ten times the
    rate the fitted erf model gives for the start temperature, at most
    `100`; it belongs to the runaway guard. Without a range analysis (`sigma`
    given and no `initial_learning_rate="auto"`) or with the runaway guard
    off, it is `100`, the top of the range analysis.

    **Adam's units.** Adam moves every weight by about the rate times
    `m_hat / (sqrt(v_hat) + epsilon)`: by the rate itself on its first step
    (the step the range analysis before the first step reads), by about a
    fifth of it once the gradients' signs vary from batch to batch. The
    network then cools at a constant rate, and the paper's runaway guard
    reads the controller's rise as a rise without answer and holds the rate.
    With `adam_units=True` (the default) and a `keras.optimizers.Adam` (or
    `AdamW`) optimizer, the runaway guard reads the rate times Adam's step
    per unit rate after the measured step
    (`keras_actcoolr.temperature.adam_step_scale`, the record's
    `step_scale`), and the automatic ceiling is ten times the start step in
    the units of a step on noise gradients: `10 / adam_noise_step_scale(beta_1)`
    (43.6 for `beta_1 = 0.9`) times the start rate. Other optimizers are
    unaffected.

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
    `max_learning_rate` (the ceiling in force), `sigma`, `next_learning_rate`, `runaway` (the
    runaway guard held the rate) and `step_scale` (Adam's step per unit rate that the runaway guard
    read, 1 without Adam's units; `None` when the guard did not run), and one record per event (`"collapse"`, `"retry"`,
    `"bad_data"`, `"new_curve"`; see `events`).

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

    # Driving Adam: the runaway guard and the automatic ceiling read the rate in Adam's units.
    model.compile(optimizer=keras.optimizers.Adam(keras_actcoolr.ActCooLRSchedule(1e-3)),
                  loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=10, callbacks=[keras_actcoolr.ActCooLR()])  # adam_units=True
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
            `fit`). Needed when the data has no known length. The target
            curve counts the optimizer's steps, which go on across fits: a
            second `fit` continues the curve when it fits in it (pass
            `initial_epoch`, or a `total_steps` spanning the fits); a fit
            that starts at or past the end of its curve (or, without
            `total_steps`, would run an epoch or more past it) follows a new
            curve from its first step over its own steps (`total_steps` when
            given), with a warning and a `"new_curve"` record in `history`.
            Defaults to `None`.
        target_temperature: Callable `progress -> temperature` replacing the
            power curve, or `None`. It must return a finite number >= 0.
            Defaults to `None`.
        min_learning_rate: Float >= 0, lower bound of the rate; below
            `100` (the top of the range analysis) with
            `max_learning_rate="auto"`. If the automatic ceiling computed at
            run time is not above it, a warning says so and the ceiling is
            not applied (the minimum wins). Defaults to `1e-7`.
        max_learning_rate: Float > `min_learning_rate`, upper bound of the
            rate, or `"auto"` (see above). Defaults to `"auto"`.
        epsilon: Float in (0, 0.5), clamp of the probabilities.
            Defaults to `1e-6`.
        initial_learning_rate: `None` (start at the schedule's initial rate)
            or `"auto"`: before the first step, a range analysis of the first
            batch fits `sigma` and `mu` and the first rate is the one the erf
            model predicts for the start temperature,
            `exp(mu + sigma * PhiInv(P*(0)))`, whatever the schedule's initial
            rate (supplementary section B). The analysed step is taken at the
            reference rate `keras_actcoolr.models.BEFORE_STEP_LEARNING_RATE`
            (1.0) and undone completely (weights, optimizer slots and
            `iterations`, a `LossScaleOptimizer`'s state, metrics), under
            every strategy; its batch is not trained on (with a single batch
            per epoch, a warning: the first epoch then trains nothing). The
            schedule's initial rate is then used only if the analysis cannot
            be fitted. Defaults to `"auto"`.
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
        final_anneal: Boolean, the final-anneal guard. Defaults to `True`.
        final_anneal_share: Float in (0, 1), the share of training at its
            end over which the final-anneal guard lets the rate only fall.
            Defaults to `0.1`.
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
        adam_units: Boolean, with a `keras.optimizers.Adam` (or `AdamW`)
            optimizer, read the rate in Adam's units in the runaway guard and
            the automatic ceiling (see above); `False` reads it as with any
            optimizer (the behaviour before this argument). No effect on other
            optimizers. Defaults to `True` (chosen on the development tasks,
            `docs/quality.md#actcoolr-driving-adam`).

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
        final_anneal: bool = True,
        final_anneal_share: float = FINAL_ANNEAL_SHARE,
        measure: str = DEFAULT_MEASURE,
        adam_units: bool = True,
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
        if (
            self.start_temperature != "auto"
            and T.temperature_to_probability(self.start_temperature) >= 1.0 - self.epsilon
        ):
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
        self.min_learning_rate = validation.real_in(
            "min_learning_rate", min_learning_rate, 0.0, math.inf, low_open=False
        )
        if max_learning_rate == "auto":
            self.max_learning_rate: float | str = "auto"
            top = float(T.RANGE_LEARNING_RATES[-1])
            if self.min_learning_rate >= top:
                raise ValueError(
                    f"`min_learning_rate` must be below {top:g}, the highest rate of the range analysis and the "
                    'largest ceiling that `max_learning_rate="auto"` can set; pass a number greater than '
                    f"`min_learning_rate` as `max_learning_rate`. Received: min_learning_rate={min_learning_rate!r}"
                )
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
            ("final_anneal", final_anneal),
            ("adam_units", adam_units),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
        self.guards = guards
        self.collapse_guard = collapse_guard
        self.runaway_guard = runaway_guard
        self.layer_filter = layer_filter
        self.final_anneal = final_anneal
        self.adam_units = adam_units
        self.final_anneal_share = validation.real_in("final_anneal_share", final_anneal_share, 0.0, 1.0)
        self.loss_tolerance = validation.positive("loss_tolerance", loss_tolerance)
        self.runaway_factor = validation.real_in("runaway_factor", runaway_factor, 1.0, math.inf)
        self.collapse_backoff = validation.real_in("collapse_backoff", collapse_backoff, 0.0, 1.0)
        self.snapshot_every = validation.integer_at_least_one("snapshot_every", snapshot_every)
        self.sigma_examples = validation.integer_at_least_one("sigma_examples", sigma_examples)
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
        self._warned_single_batch = False
        self._origin = 0
        self._curve_set = False
        self._latest: dict | None = None
        self._retry: dict | None = None
        self._proven: list[float] = []
        self._handled = -1
        self._loss_finite = True
        self._epoch = 0
        self._batch: int | None = None
        self._start_rate: float | None = None
        self._spike = T.LossSpikeTest(self.loss_tolerance)

    @property
    def measurements(self) -> list[dict]:
        """The measurement records of `history` (without the event records)."""
        return [record for record in self.history if "event" not in record]

    @property
    def events(self) -> list[dict]:
        """The event records of `history`: `"collapse"`, `"retry"`, `"bad_data"` and `"new_curve"`."""
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
            ceiling = (
                stored
                if self._on("runaway_guard")
                and math.isfinite(stored)
                and stored < T.RANGE_LEARNING_RATES[-1]
                and (state["sigma"] > 0 or state["collapses"] > 0)
                else float(T.RANGE_LEARNING_RATES[-1])
            )
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
        self._origin = 0
        self._curve_set = False
        self._latest = None
        self._retry = None
        self._proven = []
        self._handled = -1
        self._loss_finite = True
        self._start_rate = None
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._loss_finite = True  # Keras resets the running loss at each epoch
        if self._curve_set or self._schedule is None:
            return
        # At the first epoch of the fit, once every callback's `on_train_begin` ran (a
        # `BackupAndRestore` may have restored the step count there).
        self._curve_set = True
        self._set_curve(epoch)
        if self._on("collapse_guard"):
            # The state before the first step: a run that starts far too high can fall back to it.
            step = self._optimizer_step()
            # The optimizer's slots are created at the first step otherwise; the kept state needs them now.
            self.model.build_training_state()
            values = [tf.identity(v.value) for v in self._guarded_variables()]
            rate = self._schedule.value_at(step)
            self._snapshots = [
                {"step": step, "learning_rate": rate, "peak": rate, "values": values, "dead": None, "initial": True}
            ]
            self._latest = self._snapshots[0]
            self._healthy = 1

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._batch = batch
        super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Every step: a running loss that turns non-finite is handled by the collapse guard.

        Keras' `logs["loss"]` is the running mean over the epoch: it turns
        non-finite at the first step whose loss is, and stays so. A measured
        step was handled already (`on_divergence`); an unmeasured one is handled
        here, before its NaN weights train on. No extra computation: the loss is
        in the logs.
        """
        loss = (logs or {}).get("loss")
        if loss is None or not self._on("collapse_guard") or self._schedule is None:
            return
        try:
            loss = float(loss)
        except (TypeError, ValueError):
            return
        if math.isfinite(loss):
            self._loss_finite = True
            return
        if not self._loss_finite:
            return  # the epoch's running loss stays non-finite after an unhandled failure
        step = self._optimizer_step() - 1
        if step <= self._handled:
            self._loss_finite = True  # handled in `on_divergence`; the metrics were reset
            return
        self._loss_finite = False
        self._failure(step, "non-finite loss", self._schedule.value_at(step), nonfinite=True, batch=batch)

    def _optimizer_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _set_curve(self, epoch: int) -> None:
        """Place the target curve: continue it, or start a new one (with a warning) if the fit runs past its end.

        The curve spans `total_steps` (given, or `epochs * steps` of `fit`)
        counted from step 0 of the optimizer. A fit that starts at or past its
        end (or, without `total_steps`, would run at least an epoch past it: a
        second `fit` without `initial_epoch`) gets a new curve from its first
        step, over its own steps (`total_steps` when given).
        """
        start = self._optimizer_step()
        length = self._steps
        steps, epochs = (self.params or {}).get("steps"), (self.params or {}).get("epochs")
        fit_steps = int(steps) * (int(epochs) - int(epoch)) if steps and epochs else None
        if start >= length:
            where = f"which is at or past the end of its target curve (step {length})"
        elif self.total_steps is None and fit_steps is not None and start + fit_steps - length >= steps:
            where = (
                f"and runs {fit_steps} steps, to step {start + fit_steps}, past the end of its target "
                f"curve (step {length})"
            )
        else:
            return
        new_length = self.total_steps if self.total_steps is not None else (fit_steps or length)
        source = "`total_steps`" if self.total_steps is not None else "`epochs` times the steps per epoch"
        self._origin, self._steps = start, int(new_length)
        reason = (
            f"this fit starts at optimizer step {start} {where}; the curve's length comes from {source} and "
            "its steps are counted by the optimizer, whose step count goes on across fits"
        )
        self.history.append(
            {"step": start, "event": "new_curve", "reason": reason, "origin": start, "total_steps": self._steps}
        )
        messages.warn(
            f"ActCooLR: {reason}. ActCooLR follows a new target curve of {self._steps} steps from step {start} "
            f"(from the start temperature down to 0 at step {start + self._steps}). To continue the earlier "
            "curve instead, pass `initial_epoch` to `fit` (e.g. `fit(epochs=4, initial_epoch=2)` after "
            "`fit(epochs=2)`); to set the curve's length across fits, pass `ActCooLR(total_steps=...)`.",
            stacklevel=2,
        )

    def _progress(self, step: int) -> float:
        """Position of `step` on the target curve, in [0, 1]."""
        return min(max(step - self._origin, 0) / self._steps, 1.0)

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
        self._pooling = (
            self.sigma is None and not state["pool_done"] and (state["sigma"] <= 0.0 or state["pool_batches"] > 0)
        )
        self._pool = None
        self._spike.reset(state["loss_average"], state["loss_count"], state["loss_reference"], state["loss_minimum"])
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

    def wants_range_analysis(self, step: int) -> AnalysisMode:
        if self._schedule is None:
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
        wanted = self._analysing() or self._schedule.state()["sigma"] <= 0.0
        return AnalysisMode.AFTER_STEP if wanted else AnalysisMode.NONE

    def on_range_analysis_before_step(self, record: dict, range_analysis: dict) -> None:
        self._sync()
        range_analysis = range_measure(range_analysis, self.measure)
        step_layers = record_measure(record, self.measure)[0]
        step_temperature = float(np.mean(list(step_layers.values()))) if step_layers else 0.0
        self.range_analysis = dict(range_analysis, step_temperature=step_temperature, measure=self.measure)
        range_analysis = self._pool_add(record, range_analysis)
        fitted = self._fit(range_analysis)
        if self._start is None:
            self._choose_start(range_analysis)
        if fitted is None:
            messages.warn(
                "The range analysis before the first step could not be fitted; ActCooLR starts at "
                "the schedule's initial learning rate.",
                stacklevel=2,
            )
            self.auto_learning_rate = self._schedule.value_at(record["step"])  # the step's rate was a reference one
            return
        sigma, mu = fitted
        if self.sigma is None:
            self._adopt_sigma(sigma, None, record["step"])
        rate = self._predicted_rate(mu, self._sigma)
        self._start_rate = rate
        self._set_auto_ceiling(rate)
        self._anchored = True
        ceiling = self._schedule.state()["max_learning_rate"]
        self.auto_learning_rate = float(np.clip(rate, self.min_learning_rate, ceiling))
        self.range_analysis.update(sigma=sigma, mu=mu)
        self._schedule.assign(anchor_step=record["step"], anchor_learning_rate=self.auto_learning_rate, drift=0.0)
        if self._snapshots and self._snapshots[0].get("initial") and self._snapshots[0]["step"] == record["step"]:
            # The analysed step was undone: the state before the first step now goes with this rate.
            self._snapshots[0]["learning_rate"] = self._snapshots[0]["peak"] = self.auto_learning_rate

    def target(self, progress: float) -> float:
        """Target temperature at `progress` in [0, 1]."""
        if self.target_temperature is not None:
            value = self.target_temperature(progress)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not (math.isfinite(value) and value >= 0)
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
            initial = self._snapshots[0] if self._snapshots else None
            if initial is not None and initial["dead"] is None and initial["step"] == step:
                initial["dead"] = set(_dead_layers(record))  # the measured batch ran on the kept state
            reason = self._collapse_reason(record, state)
            if reason is not None and self._snapshots:
                if reason.startswith("loss spike"):
                    self._failure(step, reason, rate, nonfinite=False, batch=self._batch)
                else:
                    self._collapse(step, reason, rate)
                return
            self._track_loss(record.get("loss"))
            self._prove_rate(step, state)
        progress = self._progress(step)
        target = self.target(progress)
        names = list(record["layers"])
        dead = record.get("dead", {})
        if names and all(dead.get(n, 0.0) >= 1.0 for n in names) and not self._warned_dead:
            self._warned_dead = True
            messages.warn(
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
            if self.measure == "vector":
                temperatures, saturated = _read_saturated_through_groups(record, names, temperatures, saturated)
            excluded = np.array([dead.get(n, 0.0) >= 1.0 or n in saturated for n in names])
        probability = T.control_probability(temperatures, excluded)
        if probability is not None and excluded is not None:
            # With N positions a count resolves P down to about 1/N: no change is no proof of P = 0.
            kept = [positions.get(n, 0.0) for n, out in zip(names, excluded) if not out]
            if kept and min(kept) > 0:
                probability = max(probability, 0.5 / min(kept))
        runaway, scale = False, None
        if probability is None:
            # Nothing left to follow (every layer dead or saturated): hold the rate.
            new_rate, drift = rate, 0.0
            control = None
        else:
            control = float(T.probability_to_temperature(probability))
            # The target rate is clipped to the bounds before the drift is formed (no overflow at any sigma).
            new_rate, drift = T.static_lr_update(
                rate,
                probability,
                T.temperature_to_probability(target),
                sigma,
                self.every_step,
                self.epsilon,
                min_learning_rate=self.min_learning_rate,
                max_learning_rate=state["max_learning_rate"],
            )
            if self._on("runaway_guard"):
                scale = self._step_scale()
                new_rate, drift, runaway = self._limit_runaway(rate, probability, sigma, new_rate, drift, state, scale)
        if self._on("final_anneal"):
            new_rate, drift = self._anneal(step, rate, new_rate, drift)
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
                step_scale=scale,
                measure=self.measure,
            )
        )

    def on_divergence(self, step: int, loss: float) -> bool:
        """A measured step with a non-finite loss: the collapse guard handles it (see `_failure`)."""
        if not (self._on("collapse_guard") and self._snapshots):
            return False
        return self._failure(step, "non-finite loss", self._schedule.value_at(step), nonfinite=True, batch=self._batch)

    # ------------------------------------------------------------- guards

    def _collapse_reason(self, record: dict, state: dict) -> str | None:
        loss = record.get("loss")
        if loss is not None:
            if not math.isfinite(loss):
                return "non-finite loss"
            test = self._spike
            if test.update(loss, record.get("examples")):
                return (
                    f"loss spike (batch {loss:.4g}, average {test.average:.4g} above its minimum "
                    f"{test.minimum:.4g} for {test.spiked} measurements)"
                )
        # On a batch of a few examples a layer may well be off for all of them: no sign of death.
        dead = _dead_layers(record) if record.get("examples", DEAD_EXAMPLES) >= DEAD_EXAMPLES else []
        if self._snapshots and dead and len(dead) == len(record["layers"]):
            kept_dead = self._snapshots[0]["dead"]
            if kept_dead is not None and len(kept_dead) < len(dead):
                return "every APTReLU layer died (no channel on in the measured batch)"
        kept = self._snapshots[0] if self._snapshots else None
        if kept is not None and kept["dead"] is not None and kept.get("initial"):
            # Died since the start of the fit (the kept state): a first rate far too high.
            frozen = [n for n in dead if record["layers"][n] == 0.0 and n not in kept["dead"]]
            if frozen:
                return f"layer {frozen[0]!r} died since the start of the fit (every channel dead, T = 0)"
        if kept is not None and record["learning_rate"] > kept["learning_rate"]:
            # Died since the kept state, while the rate rose: frozen, not cold.
            kept_dead = kept["dead"] or set()
            frozen = [n for n in _dead_layers(record) if record["layers"][n] == 0.0 and n not in kept_dead]
            if frozen:
                return f"frozen layer {frozen[0]!r} (every channel dead, T = 0) while the rate rose"
        return None

    def _track_loss(self, loss: float | None) -> None:
        """Store the spike test's moving average, count, reference and minimum with the controller state."""
        if loss is None or not math.isfinite(loss):
            return
        test = self._spike
        self._schedule.assign(
            loss_average=test.average, loss_count=test.count, loss_reference=test.reference, loss_minimum=test.minimum
        )

    def _prove_rate(self, step: int, state: dict) -> None:
        """A healthy measurement at `step` proves the rates of the steps since the last one."""
        anchor = state["anchor_step"]
        if step > anchor and not self._spike.suspect:
            proven = max(self._schedule.value_at(anchor, state), self._schedule.value_at(step - 1, state))
            self._proven = (self._proven + [proven])[-2 * self.snapshot_every :]
        if self._retry is not None:
            self._retry["healthy"] += 1
            if self._retry["healthy"] >= self.snapshot_every:
                self._retry = None  # the retried state went on healthily: the failure is forgotten

    def _where(self, step: int, batch: int | None) -> str:
        where = f"step {step}"
        if batch is not None:
            where += f" (batch {batch} of epoch {self._epoch})"
        return where

    def _failure(self, step: int, reason: str, rate: float, nonfinite: bool, batch: int | None) -> bool:
        """A non-finite loss (any step) or a sustained loss spike: bad data, a retry, or a collapse.

        - A failure within `snapshot_every` healthy measurements of an earlier
          retry or bad-data event is the rate's: `_collapse` (the ceiling is lowered).
        - Else a non-finite loss at a rate that healthy measurements proved
          (at most `HEALTHY_RATE_SLACK` times the highest since the older kept
          state) is the batch's: `_bad_data` (the newest kept state is
          restored, the ceiling and the rate stay).
        - Else `_retry_from`: the older kept state is restored and the run
          restarts at its rate, the ceiling unchanged.

        Returns True if handled (a kept state exists).
        """
        if not self._snapshots:
            return False
        self._handled = step
        if self._retry is not None:
            earlier = self._retry
            self._collapse(
                step,
                f"{reason} at {self._where(step, batch)}, again {step - earlier['step']} steps after the "
                f"{earlier['kind']} at step {earlier['step']}",
                rate,
            )
            return True
        proven = max(self._proven, default=0.0)
        if nonfinite and self._latest is not None and 0.0 < rate <= HEALTHY_RATE_SLACK * proven:
            self._bad_data(step, reason, rate, batch, proven)
        else:
            self._retry_from(step, reason, rate, batch)
        return True

    def _restore(self, kept: dict) -> None:
        variables = self._guarded_variables()
        if len(variables) != len(kept["values"]):
            raise RuntimeError(
                f"ActCooLR: the kept state holds {len(kept['values'])} variables, the model and optimizer now "
                f"{len(variables)}: variables were created after the state was kept."
            )
        for variable, value in zip(variables, kept["values"]):
            variable.assign(value)
        # The epoch's running loss holds the failure; start it again from the restored state.
        for metric in self.model.metrics:
            metric.reset_state()

    def _bad_data(self, step: int, reason: str, rate: float, batch: int | None, proven: float) -> None:
        """Undo the steps since the newest kept state; the rate, its ceiling and the schedule stay."""
        kept = self._latest
        self._restore(kept)
        self._retry = {"step": step, "kind": "bad data", "healthy": 0}
        undone = list(range(kept["step"] + 1, step + 1))
        # Batch indices in this epoch of the undone steps (a bad batch can also give a finite loss
        # and NaN weights: its loss shows at the next step).
        batches = [
            b for b in (None if batch is None else batch - (step - s) for s in undone) if b is not None and b >= 0
        ]
        skipped = f"the update of step {step}" + (
            f" and of the {len(undone) - 1} steps before it since the kept state" if len(undone) > 1 else ""
        )
        if batches:
            skipped += f" (batches {batches[0]} to {batches[-1]} of epoch {self._epoch})"
        self.history.append(
            {
                "step": step,
                "event": "bad_data",
                "reason": reason,
                "epoch": self._epoch,
                "batch": batch,
                "restored_step": kept["step"],
                "undone_steps": undone,
                "undone_batches": batches,
                "learning_rate": rate,
                "proven_learning_rate": proven,
                "max_learning_rate": self._schedule.state()["max_learning_rate"],
            }
        )
        messages.warn(
            f"ActCooLR: {reason} at {self._where(step, batch)}, at learning rate {rate:.4g}, a rate that "
            f"trained healthily up to {proven:.4g}: bad data (a NaN or infinite input, label or loss), not the "
            f"rate. Restored the state of step {kept['step']}: {skipped} are skipped. The learning rate and its "
            "ceiling are unchanged; check the data (a failure again soon after is taken as the rate's).",
            stacklevel=2,
        )

    def _retry_from(self, step: int, reason: str, rate: float, batch: int | None) -> None:
        """Restore the older kept state and restart at its rate, the ceiling unchanged."""
        snapshot = self._snapshots[0]
        self._restore(snapshot)
        state = self._schedule.state()
        restart = min(snapshot["learning_rate"], state["max_learning_rate"])
        if snapshot.get("initial") and self._start_rate is not None:
            # Back at the start: retry at the range analysis' rate rather than the first one.
            restart = max(min(restart, self._start_rate), self.min_learning_rate)
        self._restart(step, snapshot, restart, {})
        self._retry = {"step": step, "kind": "retry", "healthy": 0}
        event = {
            "step": step,
            "event": "retry",
            "reason": reason,
            "epoch": self._epoch,
            "batch": batch,
            "restored_step": snapshot["step"],
            "learning_rate": rate,
            "max_learning_rate": state["max_learning_rate"],
            "next_learning_rate": restart,
        }
        self.history.append(event)
        messages.warn(
            f"ActCooLR: {reason} at {self._where(step, batch)}. Restored the state of step {snapshot['step']} and "
            f"retry at its learning rate {restart:.4g}, the ceiling unchanged; a failure again within "
            f"{self.snapshot_every} healthy measurements lowers the ceiling.",
            stacklevel=2,
        )

    def _restart(self, step: int, snapshot: dict, restart: float, updates: dict) -> None:
        """The controller state after a restored kept state: new anchor, recent losses and rise forgotten.

        The spike test keeps its reference and minimum (the restored state
        trained at that loss) and compares from the next measured loss on.
        """
        test = self._spike
        settled = math.isfinite(test.minimum)
        test.reset(math.nan, test.warmup if settled else 0, test.reference, test.minimum)
        self._schedule.assign(
            anchor_step=step + 1,
            anchor_learning_rate=restart,
            drift=0.0,
            loss_average=math.nan,
            loss_count=test.count,
            loss_reference=test.reference,
            loss_minimum=test.minimum,
            rise_learning_rate=0.0,
            rise_z=0.0,
            **updates,
        )
        snapshot["peak"] = restart
        self._snapshots = [snapshot]
        self._latest = snapshot
        self._healthy = 1

    def _limit_runaway(
        self,
        rate: float,
        probability: float,
        sigma: float,
        new_rate: float,
        drift: float,
        state: dict,
        scale: float = 1.0,
    ) -> tuple[float, float, bool]:
        """The runaway guard; the rise and its anchor are read as `rate * scale` (`_step_scale`)."""
        z = float(special.ndtri(np.clip(probability, self.epsilon, 1 - self.epsilon)))
        if new_rate <= rate:
            if state["rise_learning_rate"] > 0:
                self._schedule.assign(rise_learning_rate=0.0, rise_z=0.0)
            return new_rate, drift, False
        anchor = state["rise_learning_rate"]
        if anchor <= 0:
            self._schedule.assign(rise_learning_rate=rate * scale, rise_z=z)
            new_rate, drift = T.limit_rise(rate, new_rate, drift, self.every_step, self.runaway_factor)
            return new_rate, drift, False
        if T.runaway_limited(rate * scale, anchor, z, state["rise_z"], sigma, self.runaway_factor):
            return rate, 0.0, True
        # Between two measurements the rate may rise by `runaway_factor` at most: the paper's update
        # moves a tenth of the way to a target rate that a large sigma puts orders of magnitude away.
        new_rate, drift = T.limit_rise(rate, new_rate, drift, self.every_step, self.runaway_factor)
        return new_rate, drift, False

    def _anneal(self, step: int, rate: float, new_rate: float, drift: float) -> tuple[float, float]:
        """The final-anneal guard: near the end of training the rate may only fall, to 0 at the end.

        From the start of the last `final_anneal_share` of the steps, the new
        rate and its drift are capped by the line from `rate` (the measured
        step's) to 0 at the last step; just before it, by `rate` (no rise).
        """
        tail_start = (1.0 - self.final_anneal_share) * self._steps
        if step + self.every_step < tail_start:
            return new_rate, drift
        if step < tail_start:
            return min(new_rate, rate), min(drift, 0.0)
        remaining = max(self._steps - step, 1)
        return min(new_rate, rate * (remaining - 1) / remaining), min(drift, -rate / remaining)

    def _keep_state(self, step: int, rate: float, new_rate: float, dead: set) -> None:
        """Copy weights and optimizer slots every `snapshot_every` healthy measurements (keep two).

        Each copy also tracks the highest rate used since it was taken.
        """
        for snapshot in self._snapshots:
            snapshot["peak"] = max(snapshot["peak"], rate, new_rate)
        if self._spike.suspect:
            return  # a loss far above its minimum may be the start of a collapse: keep no copy of it
        values = [tf.identity(v.value) for v in self._guarded_variables()]
        latest = {"step": step, "learning_rate": new_rate, "peak": new_rate, "values": values, "dead": dead}
        self._latest = latest  # the newest healthy state, which bad data goes back to
        if self._healthy % self.snapshot_every == 0:
            self._snapshots.append(latest)
            self._snapshots = self._snapshots[-2:]
        self._healthy += 1

    def _guarded_variables(self) -> list:
        optimizer = self.model.optimizer
        skip = {id(v) for v in self._schedule.variables} | {id(optimizer.iterations)}
        slots = [v for v in optimizer.variables if id(v) not in skip]
        return list(self.model.variables) + slots

    def _collapse(self, step: int, reason: str, rate: float) -> None:
        snapshot = self._snapshots[0]
        self._restore(snapshot)
        state = self._schedule.state()
        peak = max(snapshot["peak"], rate)
        ceiling = max(min(state["max_learning_rate"], self.collapse_backoff * peak), self.min_learning_rate)
        restart = min(snapshot["learning_rate"], ceiling)
        if snapshot.get("initial") and self._start_rate is not None:
            # Back at the start: the run started too high. Fall back to the range analysis' rate.
            restart = max(min(restart, self._start_rate), self.min_learning_rate)
        self._restart(step, snapshot, restart, {"max_learning_rate": ceiling, "collapses": state["collapses"] + 1})
        self._retry = None
        self._proven = []
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
        messages.warn(
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
            target = T.temperature_to_probability(self.target(self._progress(step)))
            self._start_rate = self._predicted_rate(mu, self._sigma, target)
            self._set_auto_ceiling(self._start_rate)
            self._anchored = True

    def _choose_start(self, range_analysis: dict) -> None:
        """Resolve `start_temperature="auto"` from a range analysis (see `temperature.auto_start_temperature`)."""
        try:
            start = T.auto_start_temperature(range_analysis["learning_rates"], range_analysis["layer_temperatures"])
        except ValueError as error:
            messages.warn(f"{error} ActCooLR starts at temperature {FALLBACK_START_TEMPERATURE}.", stacklevel=3)
            start = FALLBACK_START_TEMPERATURE
        self._schedule.assign(start_temperature=start)
        self._start = self._schedule.state()["start_temperature"]

    def _fit(self, range_analysis: dict | None, warn: bool = True) -> tuple[float, float] | None:
        """`(sigma, mu)` of the erf model fitted to a range analysis, or None (with a warning if `warn`)."""
        if range_analysis is None:
            if warn:
                messages.warn(f"No range analysis for sigma; using sigma={FALLBACK_SIGMA}.", stacklevel=3)
            return None
        try:
            return T.fit_erf_model(range_analysis["learning_rates"], range_analysis["temperatures"])
        except ValueError as error:
            if warn:
                messages.warn(f"{error} ActCooLR uses sigma={FALLBACK_SIGMA}.", stacklevel=3)
            return None

    def _predicted_rate(self, mu: float, sigma: float, probability: float | None = None) -> float:
        """The rate the erf model `(sigma, mu)` gives for `probability` (default: the start target)."""
        if probability is None:
            probability = T.temperature_to_probability(self.target(0.0))
        return float(T.erf_learning_rate(probability, sigma, mu, self.epsilon))

    def _adam(self) -> keras.optimizers.Adam | None:
        """The model's optimizer when `adam_units` is on and it is a `keras.optimizers.Adam` (or `AdamW`)."""
        optimizer = unwrapped_optimizer(self.model.optimizer) if self.adam_units else None
        return optimizer if isinstance(optimizer, keras.optimizers.Adam) else None

    def _step_scale(self) -> float:
        """Adam's step per unit rate after the measured step (`temperature.adam_step_scale`); 1 without Adam."""
        optimizer = self._adam()
        if optimizer is None:
            return 1.0
        slots = {v.path: v for v in optimizer.variables}
        pairs = [
            (slot, slots[path[: -len("_momentum")] + "_velocity"])
            for path, slot in slots.items()
            if path.endswith("_momentum") and path[: -len("_momentum")] + "_velocity" in slots
        ]
        numpy = keras.ops.convert_to_numpy
        scale = T.adam_step_scale(
            [numpy(m.value) for m, _ in pairs],
            [numpy(v.value) for _, v in pairs],
            int(numpy(optimizer.iterations)),
            float(optimizer.beta_1),
            float(optimizer.beta_2),
            float(optimizer.epsilon),
        )
        return scale if scale > 0.0 else 1.0

    def _ceiling_factor(self) -> float:
        """The automatic ceiling's multiple of the start rate: `AUTO_CEILING_FACTOR`, in Adam's units with Adam.

        The start rate is read on Adam's first step, which moves every weight
        by the rate; once the gradients are noise a step moves them by
        `adam_noise_step_scale(beta_1)` of it (0.229), so the ceiling is
        `AUTO_CEILING_FACTOR` times the start step in those units.
        """
        optimizer = self._adam()
        if optimizer is None:
            return AUTO_CEILING_FACTOR
        return AUTO_CEILING_FACTOR / T.adam_noise_step_scale(float(optimizer.beta_1))

    def _set_auto_ceiling(self, start_rate: float) -> None:
        if self.max_learning_rate != "auto" or not self._on("runaway_guard"):
            return
        state = self._schedule.state()
        factor = self._ceiling_factor()
        ceiling = min(factor * start_rate, state["max_learning_rate"], float(T.RANGE_LEARNING_RATES[-1]))
        if ceiling > self.min_learning_rate:
            self._schedule.assign(max_learning_rate=ceiling)
        else:
            messages.warn(
                f"ActCooLR: the automatic `max_learning_rate` ({ceiling:.4g}, {factor:.4g} times the rate "
                f"{start_rate:.4g} that the fitted erf model gives for the target) is not above "
                f"`min_learning_rate` ({self.min_learning_rate:.4g}). `min_learning_rate` wins: the automatic "
                f"ceiling is not applied and the rate stays within [{self.min_learning_rate:.4g}, "
                f"{state['max_learning_rate']:.4g}]. Lower `min_learning_rate` or pass a number as `max_learning_rate`.",
                stacklevel=3,
            )
