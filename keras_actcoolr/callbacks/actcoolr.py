"""`ActCooLR`: the static controller of supplementary section B, composed of its parts and guards.

The parts live in their own modules: `sigma` (the sigma estimator, the
automatic start and ceiling), `guards` (the layer filter, the runaway guard,
the final anneal), `collapse` (the collapse guard), `static` (the sequence
that calls them per measurement) and `controller` (what `ActCooLR` shares
with `DynamicActCooLR`).
"""

from __future__ import annotations

from collections.abc import Callable

from keras_actcoolr import temperature as T
from keras_actcoolr import validation
from keras_actcoolr.callbacks.collapse import DEAD_EXAMPLES, HEALTHY_RATE_SLACK
from keras_actcoolr.callbacks.guards import RateGuard
from keras_actcoolr.callbacks.sigma import (
    ADAM_START_TEMPERATURE,
    AUTO_CEILING_FACTOR,
    FALLBACK_SIGMA,
    FALLBACK_START_TEMPERATURE,
    MOMENTUM_START_TEMPERATURE,
    OTHER_START_TEMPERATURE,
    PLAIN_SGD_START_TEMPERATURE,
    SIGMA_EXAMPLES,
)
from keras_actcoolr.callbacks.static import StaticController
from keras_actcoolr.measurement import DEFAULT_MEASURE

__all__ = [
    "ADAM_START_TEMPERATURE",
    "AUTO_CEILING_FACTOR",
    "DEAD_EXAMPLES",
    "FALLBACK_SIGMA",
    "FALLBACK_START_TEMPERATURE",
    "FINAL_ANNEAL_SHARE",
    "HEALTHY_RATE_SLACK",
    "LOSS_AVERAGE_WARMUP",
    "LOSS_AVERAGE_WEIGHT",
    "MOMENTUM_START_TEMPERATURE",
    "OTHER_START_TEMPERATURE",
    "PLAIN_SGD_START_TEMPERATURE",
    "SIGMA_EXAMPLES",
    "ActCooLR",
]

#: Weight of a new measured batch in the collapse guard's moving average of the loss
#: (`keras_actcoolr.temperature.LossSpikeTest`).
LOSS_AVERAGE_WEIGHT = T.LOSS_AVERAGE_WEIGHT

#: Measurements the moving average takes in before the collapse guard compares it.
LOSS_AVERAGE_WARMUP = T.LOSS_AVERAGE_WARMUP

#: `ActCooLR(final_anneal_share=...)` default: the share of training at its end over which the
#: final-anneal guard lets the rate only fall, to 0 at the last step.
FINAL_ANNEAL_SHARE = 0.1


def _checked_start_temperature(start_temperature: float | str | None, epsilon: float) -> float | str | None:
    """`None`, `"auto"`, or a start temperature > 0 whose change probability stays below `1 - epsilon`."""
    if isinstance(start_temperature, str) and start_temperature != "auto":
        raise ValueError(
            '`start_temperature` must be a float > 0, "auto" or None. '
            f"Received: start_temperature={start_temperature!r}"
        )
    if start_temperature is None or start_temperature == "auto":
        return start_temperature
    start = validation.positive("start_temperature", start_temperature)
    if T.temperature_to_probability(start) >= 1.0 - epsilon:
        limit = float(T.probability_to_temperature(1.0 - epsilon))
        raise ValueError(
            "`start_temperature` is so high that its change probability rounds to 1 "
            f"(the limit for epsilon={epsilon} is {limit:.3f}). "
            f"Received: start_temperature={start_temperature!r}"
        )
    return start


class ActCooLR(StaticController):
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
    as their core (`guards=False` turns all of them off, and full tracking
    (below) with them, and gives the update above exactly, the paper's
    controller with its target clipped to the bounds):

    - `layer_filter`: dead and saturated layers are left out of the network temperature the
      controller follows, a layer wider than 64 channels is read as 64 of them, also in the
      range analyses (`keras_actcoolr.callbacks.guards.LayerFilter`); none left: the rate is held.
    - `runaway_guard`: a rate that rises without an answer of the temperature
      stops rising (`runaway_anchor`; `keras_actcoolr.callbacks.guards.RunawayGuard`).
    - `collapse_guard`: a non-finite loss, a sustained loss spike or a layer
      frozen dead restores a kept state: bad data is skipped, a first failure
      retried, a second one a collapse that lowers the ceiling
      (`keras_actcoolr.callbacks.collapse.CollapseGuard`; its `"bad_data"`,
      `"retry"` and `"collapse"` events are in `events`, with a warning, and
      the `collapses` count in the logs).
    - `final_anneal`: over the last `final_anneal_share` of training the
      rate may only fall, to 0 at the last step
      (`keras_actcoolr.callbacks.guards.FinalAnneal`).

    More guards: `rate_guards` (see docs/method.md#writing-a-controller).

    **Tracking.** The update above moves the rate 0.19 of the way to `lr_target` by the next
    measurement (`every_step=10`); `full_tracking=True` (with `guards`) reaches it there
    (`temperature.static_lr_update`).

    `max_learning_rate="auto"`: ten times the erf model's rate for the start temperature
    (range analysis), at most `100`; `100` without a range analysis or with the runaway guard off.

    **Adam's units.** With `adam_units=True` and an Adam (or AdamW) optimizer the runaway guard
    reads the rate times Adam's step per unit rate, which shrinks once its gradients' signs vary
    (the record's `step_scale`), and the automatic ceiling is 43.6 times the start rate for
    `beta_1 = 0.9` (`keras_actcoolr.callbacks.adam_units.AdamUnits`).

    **Measure.** `measure`: `"vector"` (the paper's layer temperatures) or `"grouped"` (groups of
    8 channels, `keras_actcoolr.APTReLU`), which resolves wide layers that the paper's count
    saturates; every fit, pool and filter uses it. The grouped scale is cooler on layers wider than
    8 channels (about `8 / C` of the paper's): a start temperature means a hotter network there.

    `measurements` holds one record per measurement (see `TemperatureLogger`), extended by
    `target_temperature`, `control_temperature` (the value the controller followed, of the chosen
    measure; `None` when it held the rate because no layer was left), `measure`, `max_learning_rate`
    (the ceiling in force), `sigma`, `next_learning_rate`, `runaway` (the runaway guard held the
    rate) and `step_scale` (see above; `None` when the runaway guard did not run); `events` one record
    per event (`"collapse"`, `"retry"`, `"bad_data"`, `"new_curve"`). `history` (both) is deprecated.

    Example:

    ```python
    model = keras_actcoolr.convert(model)
    schedule = keras_actcoolr.ActCooLRSchedule(initial_learning_rate=0.1)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=10, callbacks=[keras_actcoolr.ActCooLR(every_step=10)])
    ```

    Args:
        start_temperature: Float > 0, the target temperature at the start of training; `None`:
            chosen from the optimizer (`1.5` for SGD with momentum 0.9, since 0.8.0; `2.0` for SGD
            without momentum; `1.5` for Adam and AdamW; `1.0`, change probability 1/2, for others;
            `keras_actcoolr.callbacks.sigma.default_start_temperature`); or `"auto"`: from the
            first range analysis (`keras_actcoolr.temperature.auto_start_temperature`). The paper's
            `3.03` is for ResNet-32 on CIFAR-10; the defaults were chosen on this project's
            development tasks by the benchmarks' targets (`docs/quality.md`; a small MLP trains
            better at `1.0`). Defaults to `None`.
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
            or `"auto"`: the first rate is the erf model's for the start
            temperature, `exp(mu + sigma * PhiInv(P*(0)))`, fitted to a range
            analysis of the first batch (supplementary section B) taken at
            the reference rate `keras_actcoolr.models.BEFORE_STEP_LEARNING_RATE`
            and undone completely (weights, slots, `iterations`, metrics)
            under every strategy; that batch is not trained on. The
            schedule's rate is used only if the analysis cannot be fitted.
            Defaults to `"auto"`.
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
        rate_guards: List of `keras_actcoolr.callbacks.guards.RateGuard`
            applied after the built-in ones (on with `guards`), or `None`.
            Defaults to `None`.
        measure: `"vector"` (the paper's whole-vector temperatures) or
            `"grouped"` (groups of 8 channels), the layer temperatures the
            controller follows (see above). `guards=False` with `"vector"`
            is the paper's controller. Defaults to `"vector"`
            (`keras_actcoolr.measurement.DEFAULT_MEASURE`; chosen on the
            development tasks, `docs/method.md#wide-layers-the-grouped-measurement`).
        full_tracking: Boolean, reach the target rate at the next
            measurement (see above). Defaults to `False`.
        adam_units: Boolean, with a `keras.optimizers.Adam` (or `AdamW`),
            read the rate in Adam's units in the runaway guard and the
            automatic ceiling (see above); no effect on other optimizers.
            Defaults to `True` (chosen on the development tasks,
            `docs/quality.md#actcoolr-driving-adam`).
        runaway_anchor: `"rise"`: the runaway guard reads a rise from the measurement where it
            started; `"coolest"`: from its coolest measurement, so that early training's cooling is
            not read as a rise without an answer (but a converged network's is not held either:
            `docs/quality.md#the-runaway-guards-anchor`). Defaults to `"rise"`.

    Raises:
        ValueError: for an argument out of its range, naming it and the
            received value (for example `measure="patterns"`).
    """

    def __init__(
        self,
        start_temperature: float | str | None = None,
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
        rate_guards: list[RateGuard] | None = None,
        measure: str = DEFAULT_MEASURE,
        adam_units: bool = True,
        full_tracking: bool = False,
        runaway_anchor: str = "rise",
    ) -> None:
        super().__init__(every_step, total_steps, min_learning_rate, max_learning_rate, measure, allow_auto=True)
        self.initial_learning_rate = validation.one_of("initial_learning_rate", initial_learning_rate, (None, "auto"))
        self.epsilon = validation.real_in("epsilon", epsilon, 0.0, 0.5)
        self.start_temperature = _checked_start_temperature(start_temperature, self.epsilon)
        self.gamma = validation.positive("gamma", gamma)
        self.sigma = validation.positive("sigma", sigma, allow_none=True)
        self.target_temperature = validation.callable_or_none(
            "target_temperature", target_temperature, "progress -> temperature"
        )
        self.guards = validation.boolean("guards", guards)
        self.collapse_guard = validation.boolean("collapse_guard", collapse_guard)
        self.runaway_guard = validation.boolean("runaway_guard", runaway_guard)
        self.layer_filter = validation.boolean("layer_filter", layer_filter)
        self.final_anneal = validation.boolean("final_anneal", final_anneal)
        self.adam_units = validation.boolean("adam_units", adam_units)
        self.full_tracking = validation.boolean("full_tracking", full_tracking)
        self.final_anneal_share = validation.real_in("final_anneal_share", final_anneal_share, 0.0, 1.0)
        self.loss_tolerance = validation.positive("loss_tolerance", loss_tolerance)
        self.runaway_anchor = validation.one_of("runaway_anchor", runaway_anchor, ("rise", "coolest"))
        self.runaway_factor = validation.real_in("runaway_factor", runaway_factor, 1.0, float("inf"))
        self.collapse_backoff = validation.real_in("collapse_backoff", collapse_backoff, 0.0, 1.0)
        self.snapshot_every = validation.integer_at_least_one("snapshot_every", snapshot_every)
        self.sigma_examples = validation.integer_at_least_one("sigma_examples", sigma_examples)
        self.rate_guards = list(rate_guards or [])
        self.auto_learning_rate: float | None = None
        self.range_analysis: dict | None = None

    @property
    def sigma_analysis(self) -> dict | None:
        """The pooled range analysis that estimated sigma, with its fit (`None` before one)."""
        return None if self.estimator is None else self.estimator.sigma_analysis

    def target(self, progress: float) -> float:
        """Target temperature at `progress` in [0, 1]."""
        if self.target_temperature is not None:
            return _target_value(self.target_temperature(progress), progress)
        return float(T.target_temperature(progress, self.start_in_force(), self.gamma))


def _target_value(value: object, progress: float) -> float:
    """A user's `target_temperature(progress)` as a float, or a ValueError naming the progress."""
    try:
        return validation.non_negative("target_temperature(progress)", value)
    except ValueError:
        raise ValueError(
            f"`target_temperature` must return a finite number >= 0. Received: {value!r} at progress={progress!r}"
        ) from None
