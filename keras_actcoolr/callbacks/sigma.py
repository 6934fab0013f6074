"""The sigma estimator of `ActCooLR`: pooled range analyses, the erf fit, the automatic start and ceiling."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_actcoolr import messages
from keras_actcoolr import temperature as T
from keras_actcoolr.measurement import RangeCounts
from keras_actcoolr.rate import unwrapped_optimizer
from keras_actcoolr.state import RANGE_COUNTS, StateVariables, register_state, state_field

__all__ = [
    "ADAM_START_TEMPERATURE",
    "AUTO_CEILING_FACTOR",
    "FALLBACK_SIGMA",
    "FALLBACK_START_TEMPERATURE",
    "MOMENTUM_START_TEMPERATURE",
    "OTHER_START_TEMPERATURE",
    "PLAIN_SGD_START_TEMPERATURE",
    "SIGMA_EXAMPLES",
    "default_start_temperature",
    "momentum_start_temperature",
    "SigmaEstimator",
    "SigmaState",
]

#: sigma used when the range analysis at the start cannot be fitted (see the README).
FALLBACK_SIGMA = 1.0

#: `ActCooLR(start_temperature="auto")`: the start temperature used when no layer's range analysis
#: can be fitted (with a warning).
FALLBACK_START_TEMPERATURE = 1.0

#: `ActCooLR()`'s start temperature for SGD with momentum 0.9 or more (since 0.8.0; 1.0 before)
#: (`docs/quality.md#the-start-temperature-with-momentum-080`).
MOMENTUM_START_TEMPERATURE = 1.5

#: `ActCooLR()`'s start temperature for an optimizer that is neither SGD nor Adam (change
#: probability 1/2), and the one `start_in_force()` reports before a fit binds the optimizer.
OTHER_START_TEMPERATURE = 1.0

#: `ActCooLR()`'s start temperature for `keras.optimizers.Adam` and its subclasses (`AdamW`)
#: (`docs/quality.md#the-start-temperature-and-the-optimizer`).
ADAM_START_TEMPERATURE = 1.5

#: `ActCooLR()`'s start temperature for SGD without momentum (`docs/quality.md`).
PLAIN_SGD_START_TEMPERATURE = 2.0


def momentum_start_temperature(momentum: float) -> float:
    """The default start temperature of SGD with `momentum`: 2 without it, 1.5 from 0.9, log-linear between.

    With momentum `m`, a step carries the gradients of about `1 / (1 - m)`
    steps in one direction, and the flips it causes persist; without it, part
    of every step's flips is noise that the next step undoes. A step without
    momentum must therefore be hotter for the same progress: the start
    temperature falls by one half per decade of `1 / (1 - m)`,
    `T0 = 2 - 0.5 * log10(min(1 / (1 - m), 10))`. Chosen at `m = 0`
    (`docs/quality.md#the-start-temperature-and-the-optimizer`) and at
    `m = 0.9` (`docs/quality.md#the-start-temperature-with-momentum-080`);
    `m = 0.5` (1.85) was measured after.
    """
    decades = float(np.log10(1.0 / max(1.0 - float(momentum), 0.1)))  # of the step multiplier, in [0, 1]
    return PLAIN_SGD_START_TEMPERATURE - (PLAIN_SGD_START_TEMPERATURE - MOMENTUM_START_TEMPERATURE) * decades


def default_start_temperature(optimizer) -> float:
    """`ActCooLR(start_temperature=None)`'s start temperature for `optimizer`.

    `momentum_start_temperature(optimizer.momentum)` for a
    `keras.optimizers.SGD` (unwrapped from a `LossScaleOptimizer`),
    `ADAM_START_TEMPERATURE` (1.5) for a `keras.optimizers.Adam` (or
    `AdamW`), and `OTHER_START_TEMPERATURE` (1.0) for every other
    optimizer.
    """
    inner = unwrapped_optimizer(optimizer)
    if isinstance(inner, keras.optimizers.SGD):
        return momentum_start_temperature(inner.momentum)
    if isinstance(inner, keras.optimizers.Adam):
        return ADAM_START_TEMPERATURE
    return OTHER_START_TEMPERATURE


#: `ActCooLR(sigma_examples=...)` default: examples whose range analyses estimate sigma
#: (supplementary section C), or one epoch if the training set is smaller.
SIGMA_EXAMPLES = 4096

#: `ActCooLR(max_learning_rate="auto")`: the ceiling as a multiple of the rate that the fitted
#: erf model gives for the start temperature.
AUTO_CEILING_FACTOR = 10.0


@register_state("sigma")
@dataclasses.dataclass(frozen=True)
class SigmaState:
    """The sigma estimator's state (variables `actcoolr_sigma_<field>`).

    Attributes:
        sigma: The erf model's sigma in force, or `None` (not estimated yet).
        start_temperature: The start temperature in force, or `None`
            (`start_temperature="auto"` not chosen yet).
        ceiling: The automatic ceiling of the rate (`max_learning_rate="auto"`),
            or `None` (not set by a range analysis).
        pool_examples: Examples pooled so far.
        pool_batches: Batches pooled so far.
        pool_done: Whether the pool is complete.
        pool_counts: The pooled `[rates, layers, 2]` counts, or `None`
            without the layer count.
    """

    sigma: float | None = state_field("float32", None)
    start_temperature: float | None = state_field("float32", None)
    ceiling: float | None = state_field("float32", None)
    pool_examples: int = state_field("int64", 0)
    pool_batches: int = state_field("int64", 0)
    pool_done: bool = state_field("bool", False)
    pool_counts: np.ndarray | None = state_field("float64", shape=RANGE_COUNTS)


class SigmaEstimator:
    """Estimates sigma from pooled range analyses and picks the automatic start temperature and ceiling.

    The range analyses of the first training steps (every step is measured
    meanwhile) are pooled until `examples` examples, or one epoch, were
    analysed; the erf model (`keras_actcoolr.temperature.fit_erf_model`) is
    refitted to the pool at each one. The pool lives in the state, so a
    resumed run goes on pooling where it stopped.

    Args:
        state: The `StateVariables` of `SigmaState`.
        sigma: The given sigma, or `None` (estimate it).
        start_temperature: The given start temperature, or `"auto"`.
        examples: Examples to pool.
        epsilon: Clamp of the probabilities.
    """

    def __init__(
        self, state: StateVariables, sigma: float | None, start_temperature: float | str, examples: int, epsilon: float
    ) -> None:
        self.state = state
        self.given = sigma
        self.start_temperature = start_temperature
        self.examples = examples
        self.epsilon = epsilon
        self.sigma_analysis: dict | None = None
        self.pooling = False

    # -------------------------------------------------------------- reading

    def read(self) -> SigmaState:
        return self.state.read()

    @property
    def sigma(self) -> float | None:
        """The sigma in force (stored float32 value), or `None`."""
        return self.state.get("sigma")

    @property
    def start(self) -> float | None:
        """The start temperature in force, or `None` ("auto" not chosen yet)."""
        return self.state.get("start_temperature")

    def begin_fit(self) -> None:
        """Store the given sigma and start temperature (at `on_train_begin`)."""
        values = {}
        if self.given is not None:
            values["sigma"] = self.given
        if self.start_temperature != "auto":
            values["start_temperature"] = self.start_temperature
        self.state.write(**values)

    def pools(self) -> bool:
        """Whether the range analyses are to be pooled, read from the state (a pure query).

        Unless sigma is given or the pool is complete: while sigma is
        unknown, or to go on with a pool a resumed run left unfinished (when
        the state holds its counts; else the stored sigma is kept).
        """
        get = self.state.get
        if self.given is not None or get("pool_done"):
            return False
        batches = get("pool_batches")
        if batches == 0:
            return get("sigma") is None
        return get("pool_counts") is not None

    def sync(self) -> None:
        """Decide whether this fit pools, from the state (read at the first step, after a restore)."""
        self.pooling = self.pools()

    def analysing(self) -> bool:
        """Whether the steps still need range analyses (for sigma or the start temperature)."""
        return self.pooling or self.start is None

    # -------------------------------------------------------------- pooling

    def pool_add(self, record: dict, range_analysis: dict) -> dict:
        """Add a batch's range analysis to the pool; the pooled analysis.

        Counts add up over batches (as one analysis of all their examples
        would count them); the temperatures are recomputed from the sums.
        """
        counts = np.asarray(range_analysis["counts"], dtype=np.float64)
        state = self.read()
        pooled = state.pool_counts
        if state.pool_batches == 0 or pooled is None or pooled.shape != counts.shape:
            pooled, examples, batches = np.zeros_like(counts), 0, 0
        else:
            examples, batches = state.pool_examples, state.pool_batches
        pooled = pooled + counts
        examples += int(record.get("examples", 0))
        batches += 1
        self.state.write(pool_counts=pooled, pool_examples=examples, pool_batches=batches)
        result = RangeCounts(np.asarray(range_analysis["learning_rates"]), pooled)
        return dict(result, examples=examples, batches=batches)

    def estimate(self, pooled: dict, steps_per_epoch: int | None) -> tuple[float, float | None] | None:
        """Refit sigma to the pool; `(sigma, mu)` to adopt (`mu` None for the fallback), or None.

        Stops pooling at `examples` examples or one epoch.
        """
        done = pooled["examples"] >= self.examples or (
            steps_per_epoch is not None and pooled["batches"] >= steps_per_epoch
        )
        if not pooled["examples"] and steps_per_epoch is None:
            done = True  # no example count and no epoch length: one batch, as without pooling
        unknown = self.sigma is None
        fitted = fit(pooled, warn=done and unknown)
        if fitted is not None:
            self.sigma_analysis = dict(pooled, sigma=fitted[0], mu=fitted[1])
        elif done and unknown:
            fitted = (FALLBACK_SIGMA, None)
        if done:
            self.pooling = False
            self.state.write(pool_done=True)
        return fitted

    def adopt(self, sigma: float) -> float:
        """Store `sigma`; the stored float32 value (the one a resumed run reads)."""
        self.state.write(sigma=sigma)
        return self.sigma

    def choose_start(self, range_analysis: dict) -> float:
        """Resolve `start_temperature="auto"` (see `temperature.auto_start_temperature`)."""
        try:
            start = T.auto_start_temperature(range_analysis["learning_rates"], range_analysis["layer_temperatures"])
        except ValueError as error:
            messages.warn(f"{error} ActCooLR starts at temperature {FALLBACK_START_TEMPERATURE}.", stacklevel=4)
            start = FALLBACK_START_TEMPERATURE
        self.state.write(start_temperature=start)
        return self.start

    def predicted_rate(self, mu: float, sigma: float, probability: float) -> float:
        """The rate the erf model `(sigma, mu)` gives for `probability`."""
        return float(T.erf_learning_rate(probability, sigma, mu, self.epsilon))

    def set_ceiling(
        self, start_rate: float, in_force: float, minimum: float, factor: float = AUTO_CEILING_FACTOR
    ) -> float | None:
        """The automatic ceiling, `factor` times a start rate, stored; None (with a warning) if not above `minimum`."""
        ceiling = min(factor * start_rate, in_force, float(T.RANGE_LEARNING_RATES[-1]))
        if ceiling > minimum:
            self.state.write(ceiling=ceiling)
            return ceiling
        messages.warn(
            f"ActCooLR: the automatic `max_learning_rate` ({ceiling:.4g}, {factor:.4g} times the rate "
            f"{start_rate:.4g} that the fitted erf model gives for the target) is not above "
            f"`min_learning_rate` ({minimum:.4g}). `min_learning_rate` wins: the automatic "
            f"ceiling is not applied and the rate stays within [{minimum:.4g}, "
            f"{in_force:.4g}]. Lower `min_learning_rate` or pass a number as `max_learning_rate`.",
            stacklevel=4,
        )
        return None


def fit(range_analysis: dict | None, warn: bool = True) -> tuple[float, float] | None:
    """`(sigma, mu)` of the erf model fitted to a range analysis, or None (with a warning if `warn`)."""
    if range_analysis is None:
        if warn:
            messages.warn(f"No range analysis for sigma; using sigma={FALLBACK_SIGMA}.", stacklevel=4)
        return None
    try:
        return T.fit_erf_model(range_analysis["learning_rates"], range_analysis["temperatures"])
    except ValueError as error:
        if warn:
            messages.warn(f"{error} ActCooLR uses sigma={FALLBACK_SIGMA}.", stacklevel=4)
        return None
