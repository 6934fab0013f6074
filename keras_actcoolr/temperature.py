"""Pure math of ActCooLR: conversions, the erf model, its fit, targets and controllers.

Everything here works on Python floats and NumPy arrays and holds no Keras
state, so that it can be checked against SciPy and reused by the callbacks,
the analysis tools and user code alike.

Definitions (base 2 throughout, see `docs/differences.md`):

```python
P = 1 - 2 ** (-T)          # change probability of a temperature
T = -log2(1 - P)           # temperature of a change probability
P(lr) = Phi((ln(lr) - mu) / sigma)     # the erf (log-normal CDF) model
```
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import optimize, special

ArrayLike = float | np.ndarray

#: Learning rates of the range analyses (Table 1 of the supplementary material):
#: 25 values evenly spaced in log space from 10**-3.2 to 10**2.
RANGE_LEARNING_RATES: np.ndarray = np.logspace(-3.2, 2.0, 25)
RANGE_LEARNING_RATES.setflags(write=False)

#: Default clamp of change probabilities to `[EPSILON, 1 - EPSILON]` in the controllers.
EPSILON = 1e-6

#: A layer measurement with fewer unchanged positions than this is *saturated*: its
#: temperature is within `log2(2 * SATURATION_COUNT)` bits of the ceiling `log2(2N)` that
#: any rate reaches, and the count is too small to resolve it (relative error of `U`
#: about `1 / sqrt(U)`).
SATURATION_COUNT = 8

__all__ = [
    "AUTO_START_BOUNDS",
    "EPSILON",
    "FLOAT32_MAX",
    "auto_start_temperature",
    "RANGE_LEARNING_RATES",
    "dynamic_lr_update",
    "erf_learning_rate",
    "erf_probability",
    "control_probability",
    "fit_erf_model",
    "is_saturated",
    "vector_temperature_from_groups",
    "REFERENCE_GROUPS",
    "LOSS_AVERAGE_WARMUP",
    "LOSS_AVERAGE_WEIGHT",
    "LOSS_CLIP",
    "LOSS_EXAMPLES",
    "LOSS_SUSTAIN",
    "LossSpikeTest",
    "loss_spike_index",
    "loss_spiked",
    "runaway_limited",
    "limit_rise",
    "adam_step_scale",
    "adam_noise_step_scale",
    "temperature_ceiling",
    "layer_temperature",
    "linear_probability_curve",
    "power_cooling",
    "probability_to_temperature",
    "static_lr_update",
    "target_temperature",
    "temperature_to_probability",
]


def temperature_to_probability(temperature: ArrayLike) -> ArrayLike:
    """Change probability `P = 1 - 2**(-T)` of an activation pattern temperature."""
    return -np.expm1(-np.log(2.0) * np.asarray(temperature, dtype=np.float64))


def probability_to_temperature(probability: ArrayLike) -> ArrayLike:
    """Temperature `T = -log2(1 - P)` of a change probability (inf at `P = 1`)."""
    with np.errstate(divide="ignore"):
        return -np.log1p(-np.asarray(probability, dtype=np.float64)) / np.log(2.0)


def layer_temperature(unchanged: ArrayLike, positions: ArrayLike) -> ArrayLike:
    """Temperature `-log2(max(U, 0.5) / N)` of `U` unchanged positions out of `N`.

    The cap at 0.5 is the paper's (supplementary section H): it keeps `log(0)` out when every position
    changed. A layer with no positions (`N = 0`) has temperature 0.
    """
    unchanged = np.asarray(unchanged, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    safe_positions = np.where(positions > 0, positions, 1.0)
    temperature = -np.log2(np.maximum(unchanged, 0.5) / safe_positions)
    return np.where(positions > 0, np.maximum(temperature, 0.0), 0.0)


def erf_probability(learning_rate: ArrayLike, sigma: float, mu: float) -> ArrayLike:
    """The erf model `Phi((ln(lr) - mu) / sigma)` of change probability against learning rate."""
    learning_rate = np.asarray(learning_rate, dtype=np.float64)
    return special.ndtr((np.log(learning_rate) - mu) / sigma)


def erf_learning_rate(probability: ArrayLike, sigma: float, mu: float, epsilon: float = EPSILON) -> ArrayLike:
    """The rate the erf model gives for a change probability: `exp(mu + sigma * PhiInv(P))`.

    The inverse of `erf_probability`; `P` is clamped to `[epsilon, 1 - epsilon]`.
    """
    probability = np.clip(np.asarray(probability, dtype=np.float64), epsilon, 1 - epsilon)
    return np.exp(mu + sigma * special.ndtri(probability))


def fit_erf_model(learning_rates: ArrayLike, temperatures: ArrayLike) -> tuple[float, float]:
    """Least-squares fit of the erf model to measured `(learning rate, temperature)` pairs.

    The fit is on change probabilities, as the paper's `curve_fit` (supplementary section H) is.

    Args:
        learning_rates: 1-D array of positive learning rates.
        temperatures: 1-D array of measured temperatures, same length.

    Returns:
        `(sigma, mu)` with `sigma > 0`.

    Raises:
        ValueError: for inputs of different lengths, fewer than 2 points,
            non-positive learning rates, or when the measurements do not
            determine the model (for example all temperatures equal).
    """
    learning_rates = np.asarray(learning_rates, dtype=np.float64).ravel()
    temperatures = np.asarray(temperatures, dtype=np.float64).ravel()
    if learning_rates.shape != temperatures.shape:
        raise ValueError(
            "`learning_rates` and `temperatures` must have the same length. "
            f"Received: {learning_rates.size} and {temperatures.size} values."
        )
    if learning_rates.size < 2:
        raise ValueError(f"At least 2 points are needed to fit the erf model. Received: {learning_rates.size}.")
    if np.any(learning_rates <= 0) or not np.all(np.isfinite(learning_rates)):
        raise ValueError(f"Learning rates must be positive and finite. Received: learning_rates={learning_rates}")
    probabilities = temperature_to_probability(temperatures)
    if np.ptp(probabilities) <= 0:
        raise ValueError(
            "The erf model cannot be fitted: every measured temperature is the same "
            f"({temperatures[0]}). Use a wider range of learning rates or more data."
        )
    log_lr = np.log(learning_rates)
    # Start from the learning rate where P crosses 1/2 (or the closest point).
    mu0 = float(log_lr[np.argmin(np.abs(probabilities - 0.5))])

    def model(x: np.ndarray, sigma: float, mu: float) -> np.ndarray:
        return special.ndtr((x - mu) / sigma)

    try:
        (sigma, mu), _ = optimize.curve_fit(
            model, log_lr, probabilities, p0=(1.0, mu0), bounds=([1e-6, -np.inf], [np.inf, np.inf])
        )
    except (RuntimeError, optimize.OptimizeWarning) as error:
        raise ValueError(f"The erf model fit did not converge: {error}") from error
    return float(sigma), float(mu)


#: `start_temperature="auto"` keeps its choice within these bounds.
AUTO_START_BOUNDS = (0.5, 4.0)


def auto_start_temperature(
    learning_rates: ArrayLike,
    layer_temperatures: ArrayLike,
    bounds: tuple[float, float] = AUTO_START_BOUNDS,
    quantile: float = 0.5,
) -> float:
    """The start temperature chosen from a range analysis: the network's temperature where its median layer is at P = 1/2.

    Each layer's erf model is fitted to its column of `layer_temperatures`
    (`[rates, layers]`); `lr* = exp(q-quantile of mu)` is the rate at which
    the median layer (`quantile=0.5`; `1.0`: the slowest layer) reaches
    change probability one half. The result is the
    mean over the fitted layers of their model temperatures at `lr*`,
    clipped to `bounds`. A network whose layers answer the rate alike gets
    about `1` (`P = 1/2`); one whose layers differ (some far from their
    midpoint at `lr*`) gets more or less.

    Raises:
        ValueError: when no layer's erf model can be fitted (for example
            every layer dead or saturated at every rate).
    """
    learning_rates = np.asarray(learning_rates, dtype=np.float64).ravel()
    layer_temperatures = np.asarray(layer_temperatures, dtype=np.float64)
    if layer_temperatures.ndim != 2 or layer_temperatures.shape[0] != learning_rates.size:
        raise ValueError(
            "`layer_temperatures` must have shape `[len(learning_rates), layers]`. "
            f"Received: shape {layer_temperatures.shape} for {learning_rates.size} rates."
        )
    fits = []
    errors = []
    for column in layer_temperatures.T:
        try:
            fits.append(fit_erf_model(learning_rates, column))
        except ValueError as error:
            errors.append(str(error))
    if not fits:
        reason = errors[0] if errors else "the network has no layer"
        raise ValueError(
            "`start_temperature='auto'` needs the erf model of at least one layer, and no layer's "
            f"range analysis could be fitted ({reason}). Pass a number as `start_temperature`."
        )
    sigmas, mus = np.array(fits).T
    rate = np.exp(np.quantile(mus, quantile))
    temperatures = probability_to_temperature(erf_probability(rate, sigmas, mus))
    return float(np.clip(np.mean(temperatures), *bounds))


def power_cooling(progress: ArrayLike, start: float, gamma: float) -> ArrayLike:
    """`start * (1 - progress) ** gamma` for `progress` clipped to `[0, 1]`."""
    progress = np.clip(np.asarray(progress, dtype=np.float64), 0.0, 1.0)
    return start * (1.0 - progress) ** gamma


def target_temperature(progress: ArrayLike, start_temperature: float, gamma: float = 1.0) -> ArrayLike:
    """Target temperature `T0 * (1 - progress) ** gamma` (`gamma = 1` is the paper's linear curve)."""
    return power_cooling(progress, start_temperature, gamma)


def linear_probability_curve(start_probability: float) -> Callable[[ArrayLike], ArrayLike]:
    """Target probability curve falling linearly from `start_probability` to 0."""
    return lambda progress: power_cooling(progress, start_probability, 1.0)


def _clamp(probability: ArrayLike, epsilon: float) -> ArrayLike:
    return np.clip(np.asarray(probability, dtype=np.float64), epsilon, 1.0 - epsilon)


#: The largest float32: `static_lr_update` keeps its target rate below it, so that the rate and its drift
#: stay finite in the float32 variables of `ActCooLRSchedule`.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def static_lr_update(
    learning_rate: float,
    probability: float,
    target_probability: float,
    sigma: float,
    every_step: int,
    epsilon: float = EPSILON,
    min_learning_rate: float = 0.0,
    max_learning_rate: float = math.inf,
) -> tuple[float, float]:
    """One update of the static ActCooLR controller.

    ```python
    lr_target = lr * exp(sigma * (PhiInv(P*) - PhiInv(P)))
    lr_target = clip(lr_target, min_learning_rate, max_learning_rate)
    d = (lr_target - lr) / every_step
    new_lr = lr + d                 # used from the step after the measurement
    drift_per_step = d / every_step # added on each following step
    ```

    `P` and `P*` are clamped to `[epsilon, 1 - epsilon]`. The target rate is
    computed in log space, `ln(lr) + sigma * (PhiInv(P*) - PhiInv(P))`, and
    clipped to the bounds (and to the largest float32) *before* the drift is
    formed, so that no `sigma`, `P` or `P*` overflows it: the result is
    finite for any measurement and any `sigma`, and finite in float32 too.
    With `lr` within the bounds, `new_lr` is within them as well (it lies
    between `lr` and the clipped target).

    Example:

    ```python
    new_lr, drift = static_lr_update(0.1, 0.2, 0.5, sigma=1.0, every_step=10)
    # P < P*: the network is colder than the target, the rate rises
    ```

    Args:
        learning_rate: Float >= 0, the rate of the measured step.
        probability: The measured change probability `P`.
        target_probability: The target change probability `P*`.
        sigma: Float > 0, the erf model's sigma.
        every_step: Integer >= 1, steps between two measurements.
        epsilon: Clamp of the probabilities. Defaults to `1e-6`.
        min_learning_rate: Float >= 0, lower bound of the target rate.
            Defaults to `0`.
        max_learning_rate: Upper bound of the target rate (at most the
            largest float32 is used). Defaults to `inf`.

    Returns:
        `(new_learning_rate, drift_per_step)`, finite floats.

    Raises:
        ValueError: if `probability` or `target_probability` is NaN, `sigma`
            is not a positive finite number or `learning_rate` not a finite
            number >= 0.
    """
    if math.isnan(probability) or math.isnan(target_probability):
        raise ValueError(
            "The probabilities of `static_lr_update` must not be NaN. "
            f"Received: probability={probability!r}, target_probability={target_probability!r}"
        )
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"`sigma` must be a positive finite number. Received: sigma={sigma!r}")
    if not (math.isfinite(learning_rate) and learning_rate >= 0):
        raise ValueError(f"`learning_rate` must be a finite number >= 0. Received: learning_rate={learning_rate!r}")
    high = min(float(max_learning_rate), FLOAT32_MAX)
    low = min(max(float(min_learning_rate), 0.0), high)
    learning_rate = float(learning_rate)
    z_gap = float(special.ndtri(_clamp(target_probability, epsilon)) - special.ndtri(_clamp(probability, epsilon)))
    if learning_rate > 0 and high > 0:
        # |z_gap| <= 2 * PhiInv(1 - epsilon), but `sigma * z_gap` may still be huge (even +-inf): it is
        # compared with the log-distance to the ceiling before any `exp`, which then cannot overflow.
        shift = sigma * z_gap
        if shift >= math.log(high) - math.log(learning_rate):
            lr_target = high
        elif shift < 700.0:
            lr_target = learning_rate * math.exp(shift)  # exactly `lr` when on target
        else:  # below the ceiling, so finite, but `exp(shift)` alone would overflow
            lr_target = math.exp(math.log(learning_rate) + shift)
    else:
        lr_target = 0.0  # the multiplicative update cannot leave a rate of 0 (but the bounds can)
    lr_target = min(max(lr_target, low), high)
    step = (lr_target - learning_rate) / every_step
    return float(learning_rate + step), float(step / every_step)


def dynamic_lr_update(
    learning_rate: float, probability: float, target_probability: float, rate: float = 0.05
) -> tuple[float, float]:
    """One update of the dynamic ActCooLR controller (supplementary section D).

    The temperature error `(P - C)**2` is minimised by SGD on the learning rate
    with `dP/dlr := 1`: `step = -rate * 2 * (P - C)`.

    Returns:
        `(new_learning_rate, step)`; the step is re-applied until the next measurement.
    """
    step = -rate * 2.0 * (float(probability) - float(target_probability))
    return float(learning_rate + step), float(step)


# ------------------------------------------------------------------ guards
# The pieces of ActCooLR's guards that are pure arithmetic (see `ActCooLR`).


def temperature_ceiling(positions: ArrayLike) -> ArrayLike:
    """The highest temperature `N` positions can show, `log2(2N)` (every position changed)."""
    return np.log2(2.0 * np.asarray(positions, dtype=np.float64))


#: The layer filter reads a layer of more than this many groups of 8 channels (64 channels)
#: as this many groups: `T = REFERENCE_GROUPS * T_g` (see `vector_temperature_from_groups`).
REFERENCE_GROUPS = 8


def vector_temperature_from_groups(
    group_temperature: ArrayLike,
    positions: ArrayLike,
    group_positions: ArrayLike,
    max_groups: float | None = None,
) -> ArrayLike:
    """The whole-vector temperature that a grouped one implies when channels flip independently.

    A layer of `C` channels has `G = ceil(C / 8) = N_g / N` groups per
    position. If the groups change independently with probability `P_g`, a
    position's whole vector is unchanged with probability `(1 - P_g) ** G`,
    so `T = G * T_g` (temperatures are `-log2` of the unchanged share). This
    reads a layer whose whole-vector count is saturated (too few unchanged
    positions to resolve `T`) through its grouped count, on the paper's
    scale. Layers with no positions get 0. With `max_groups`, `G` is at most
    that: the temperature of `8 * max_groups` of the layer's channels.
    """
    positions = np.asarray(positions, dtype=np.float64)
    group_positions = np.asarray(group_positions, dtype=np.float64)
    groups = np.where(positions > 0, group_positions / np.where(positions > 0, positions, 1.0), 0.0)
    if max_groups is not None:
        groups = np.minimum(groups, max_groups)
    return groups * np.asarray(group_temperature, dtype=np.float64)


def is_saturated(unchanged: float, positions: float, count: int = SATURATION_COUNT) -> bool:
    """Whether a layer's counts cannot resolve its temperature: `positions > 0` and `unchanged < count`."""
    return bool(positions > 0 and unchanged < count)


def control_probability(
    temperatures: ArrayLike, excluded: ArrayLike | None = None, mean_of_probabilities: bool = False
) -> float | None:
    """The network change probability a controller follows, from the layer temperatures.

    `excluded` marks layers left out (dead or saturated). The network value
    is the probability of the mean temperature (the static controller), or
    with `mean_of_probabilities` the mean of the layer probabilities (the
    dynamic controller). Returns `None` when every layer is excluded.
    """
    temperatures = np.asarray(temperatures, dtype=np.float64).ravel()
    keep = np.ones(temperatures.shape, bool) if excluded is None else ~np.asarray(excluded, bool).ravel()
    if not keep.any():
        return None
    if mean_of_probabilities:
        return float(np.mean(temperature_to_probability(temperatures[keep])))
    return float(temperature_to_probability(np.mean(temperatures[keep])))


def loss_spiked(loss: float, minimum: float, reference: float, tolerance: float) -> bool:
    """Whether `loss` is far above its recent `minimum`: a collapse of training.

    ```python
    spiked = loss - minimum > tolerance * max(reference - minimum, minimum)
    ```

    `reference` is the loss at the start of training: a run that gave back
    `tolerance` of its progress since then has collapsed. Early on, when
    little progress is made, the margin is `tolerance * minimum` instead, so
    that the noise of a loss that has barely moved is no collapse.
    Non-finite losses always count as spiked.
    """
    if not math.isfinite(loss):
        return True
    if not (math.isfinite(minimum) and math.isfinite(reference)):
        return False
    return loss - minimum > tolerance * max(reference - minimum, minimum)


#: `LossSpikeTest`: weight of a new measured batch loss in the moving average.
LOSS_AVERAGE_WEIGHT = 0.25

#: `LossSpikeTest`: measurements the moving average takes in before it is compared.
LOSS_AVERAGE_WARMUP = 4

#: `LossSpikeTest`: consecutive spiked measurements that fire the test.
LOSS_SUSTAIN = 3

#: `LossSpikeTest`: a batch loss enters the average at most this many margins above the minimum.
LOSS_CLIP = 2.0

#: `LossSpikeTest`: a measured batch of fewer examples counts as this share of a measurement.
LOSS_EXAMPLES = 16


class LossSpikeTest:
    """The collapse guard's spike test over the losses of the measured batches, one at a time.

    The test follows a moving average of the measured batch losses (each new
    one weighted `weight`). After `warmup` measurements the average is the
    `reference` and starts its `minimum`; from then on a batch loss enters the
    average clipped to `minimum + clip * margin`, with the margin of
    `loss_spiked`, `tolerance * max(reference - minimum, minimum)`, so that
    one outlier batch (ordinary at batch size 1, where one example's loss
    ranges from 0 to 10) moves the average by at most `weight * clip`
    margins. The test fires when the average is spiked
    (`loss_spiked(average, minimum, reference, tolerance)`) at `sustain`
    measurements in a row: a sustained rise, not batch noise. A non-finite
    loss is not taken in (the guard handles it at once).

    Example:

    ```python
    test = LossSpikeTest(tolerance=0.5)
    fired = [test.update(loss) for loss in losses]
    ```

    Args:
        tolerance: Float > 0, see `loss_spiked`.
        weight: Float in (0, 1], weight of a new loss. Defaults to `LOSS_AVERAGE_WEIGHT`.
        warmup: Integer >= 1, measurements before the first comparison.
            Defaults to `LOSS_AVERAGE_WARMUP`.
        sustain: Integer >= 1, spiked measurements in a row that fire the
            test. Defaults to `LOSS_SUSTAIN`.
        clip: Float > 0, see above. Defaults to `LOSS_CLIP`.
    """

    def __init__(
        self,
        tolerance: float,
        weight: float = LOSS_AVERAGE_WEIGHT,
        warmup: int = LOSS_AVERAGE_WARMUP,
        sustain: int = LOSS_SUSTAIN,
        clip: float = LOSS_CLIP,
    ) -> None:
        self.tolerance, self.weight, self.clip = float(tolerance), float(weight), float(clip)
        self.warmup, self.sustain = int(warmup), int(sustain)
        self.reset()

    def reset(
        self, average: float = math.nan, count: int = 0, reference: float = math.nan, minimum: float = math.nan
    ) -> None:
        """Set the moving average, its count, reference and minimum (a new start: the defaults)."""
        self.average, self.count = float(average), int(count)
        self.reference, self.minimum = float(reference), float(minimum)
        self.spiked = 0.0
        self.high = False
        self._shares = 0.0

    @property
    def suspect(self) -> bool:
        """Whether the last loss was more than a margin above the minimum, or the average is spiked."""
        return self.high or self.spiked > 0

    def margin(self) -> float:
        """How far above its minimum the average may go, `tolerance * max(reference - minimum, minimum)`."""
        return self.tolerance * max(self.reference - self.minimum, self.minimum)

    def update(self, loss: float, examples: int | None = None) -> bool:
        """Take in a measured batch loss (of `examples` examples); whether the test fires at it.

        A batch of fewer than `LOSS_EXAMPLES` examples counts as that share
        of a measurement: its weight is `1 - (1 - weight) ** (examples / LOSS_EXAMPLES)`
        and it adds that share to the warm-up, so that the average spans
        about as many examples at batch size 1 as at 16.
        """
        if not math.isfinite(loss):
            return False
        share = 1.0 if not examples or examples >= LOSS_EXAMPLES else examples / LOSS_EXAMPLES
        weight = 1 - (1 - self.weight) ** share
        settled = self.count >= self.warmup and math.isfinite(self.minimum)
        self.high = settled and loss > self.minimum + self.margin()
        if settled:
            loss = min(loss, self.minimum + self.clip * self.margin())
        self.average = loss if math.isnan(self.average) else (1 - weight) * self.average + weight * loss
        self._shares = getattr(self, "_shares", 0.0) + share
        counted = int(self._shares + 1e-9)
        self._shares -= counted
        self.count = max(self.count + counted, self.warmup + 1) if settled else self.count + counted
        if self.count < self.warmup or (not settled and counted == 0):
            return False
        if not settled:
            # The average now spans about as many measurements as it remembers: start comparing.
            self.reference = self.minimum = self.average
            return False
        if loss_spiked(self.average, self.minimum, self.reference, self.tolerance):
            # Sustained over `sustain` measurements of `LOSS_EXAMPLES` examples or more.
            self.spiked += share
        else:
            self.spiked = 0.0
            self.minimum = min(self.minimum, self.average)
        return self.spiked >= self.sustain - 1e-9


def loss_spike_index(losses: ArrayLike, tolerance: float, **kwargs: float) -> int | None:
    """Index of the first loss of a sequence at which a new `LossSpikeTest(tolerance, **kwargs)` fires, or None."""
    test = LossSpikeTest(tolerance, **kwargs)
    for index, loss in enumerate(np.asarray(losses, dtype=np.float64).ravel()):
        if test.update(float(loss)):
            return index
    return None


def limit_rise(
    learning_rate: float, new_learning_rate: float, drift: float, every_step: int, factor: float
) -> tuple[float, float]:
    """Cap an update so that the rate stays at most `factor * learning_rate` until the next measurement.

    The update sets `new_learning_rate` on the step after the measurement and
    adds `drift` on each of the `every_step - 1` steps after it; with a cap
    `c = factor * learning_rate`, the result is `min(new, c)` and a drift
    that reaches at most `c` at the last of those steps. A fall is unchanged.

    Returns:
        `(new_learning_rate, drift)`.
    """
    cap = factor * learning_rate
    new_learning_rate = min(new_learning_rate, cap)
    if drift > 0:
        drift = min(drift, (cap - new_learning_rate) / max(every_step - 1, 1))
    return float(new_learning_rate), float(drift)


def runaway_limited(
    learning_rate: float,
    anchor_learning_rate: float,
    z: float,
    anchor_z: float,
    sigma: float,
    factor: float,
    response: float = 0.25,
) -> bool:
    """Whether a rising rate has outrun the temperature: the runaway signature.

    Since the anchor (the start of the current rise, rate `anchor_learning_rate`,
    `z = PhiInv(P)` there `anchor_z`), the erf model predicts
    `z - anchor_z = ln(lr / anchor_lr) / sigma`. The rise is *unanswered* when
    the rate grew by more than `factor` and the temperature answered less than
    `response` of the prediction; then the rate must not rise further.
    """
    if anchor_learning_rate <= 0 or learning_rate <= anchor_learning_rate * factor:
        return False
    predicted = math.log(learning_rate / anchor_learning_rate) / sigma
    return (z - anchor_z) < response * predicted


def adam_step_scale(
    momentums: list, velocities: list, step: int, beta_1: float, beta_2: float, epsilon: float
) -> float:
    """Adam's step per unit of learning rate: the root mean square of `m_hat / (sqrt(v_hat) + epsilon)`.

    Adam moves weight `i` by `lr * m_hat_i / (sqrt(v_hat_i) + epsilon)`, with
    `m_hat = m / (1 - beta_1 ** step)` and `v_hat = v / (1 - beta_2 ** step)`
    (`step` is the optimizer's count of applied updates, the one the slots
    `m` and `v` were last updated with). This is the root mean square of that
    factor over every weight of `momentums` and `velocities` (matching lists
    of arrays; a weight with `v = 0` counts as not moving): the first step moves every weight with a non-zero gradient
    by the rate (1), later steps by less once the gradients' signs vary
    (`adam_noise_step_scale`). 0 for no weights or `step < 1`.
    """
    if step < 1:
        return 0.0
    m_correction = 1.0 - beta_1**step
    v_correction = 1.0 - beta_2**step
    total, count = 0.0, 0
    for m, v in zip(momentums, velocities):
        m_hat = np.asarray(m, dtype=np.float64) / m_correction
        v_hat = np.asarray(v, dtype=np.float64) / v_correction
        denominator = np.sqrt(v_hat) + epsilon
        # A weight that never had a gradient (m = v = 0) does not move.
        factor = np.divide(m_hat, denominator, out=np.zeros_like(m_hat), where=denominator > 0)
        total += float(np.sum(factor**2))
        count += m_hat.size
    return math.sqrt(total / count) if count else 0.0


def adam_noise_step_scale(beta_1: float) -> float:
    """`adam_step_scale` once the gradients are pure noise: `sqrt((1 - beta_1) / (1 + beta_1))`.

    With independent zero-mean gradients of variance `s**2`, `m` (an
    exponential average of weight `1 - beta_1`) has variance
    `s**2 * (1 - beta_1) / (1 + beta_1)` and `v_hat` tends to `s**2`: Adam's
    step is then this share of the first one (0.229 for `beta_1 = 0.9`).
    """
    return math.sqrt((1.0 - beta_1) / (1.0 + beta_1))
