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

from keras_actcoolr import validation
from keras_actcoolr.guard_math import (  # re-exported: the guards' arithmetic is read as `temperature.*`
    LOSS_AVERAGE_WARMUP,
    LOSS_AVERAGE_WEIGHT,
    LOSS_CLIP,
    LOSS_EXAMPLES,
    LOSS_SUSTAIN,
    REFERENCE_GROUPS,
    RUNAWAY_RESPONSE,
    ArrayLike,
    LossSpikeTest,
    adam_noise_step_scale,
    adam_step_scale,
    is_wide,
    limit_rise,
    loss_spike_index,
    loss_spiked,
    runaway_cooled,
    runaway_limited,
    vector_temperature_from_groups,
)

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
    "is_wide",
    "wide_layer_counts",
    "REFERENCE_GROUPS",
    "LOSS_AVERAGE_WARMUP",
    "LOSS_AVERAGE_WEIGHT",
    "LOSS_CLIP",
    "LOSS_EXAMPLES",
    "LOSS_SUSTAIN",
    "LossSpikeTest",
    "loss_spike_index",
    "loss_spiked",
    "RUNAWAY_RESPONSE",
    "runaway_limited",
    "runaway_cooled",
    "limit_rise",
    "adam_step_scale",
    "adam_noise_step_scale",
    "temperature_ceiling",
    "layer_temperature",
    "linear_probability_curve",
    "power_cooling",
    "probability_to_temperature",
    "probit",
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
    return np.exp(mu + sigma * probit(probability, epsilon))


def probit(probability: ArrayLike, epsilon: float = EPSILON) -> ArrayLike:
    """`z = PhiInv(P)`, the standard normal quantile of a change probability clamped to `[epsilon, 1 - epsilon]`.

    The erf model is linear in it: `z = (ln(lr) - mu) / sigma`.
    """
    return special.ndtri(np.clip(np.asarray(probability, dtype=np.float64), epsilon, 1.0 - epsilon))


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
    full_tracking: bool = False,
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

    The paper's update moves `(2 * every_step - 1) / every_step**2` of the
    way to `lr_target` by the next measurement (0.19 with `every_step=10`).
    With `full_tracking=True` the drift is `d` itself, so that the rate
    reaches `lr_target` at the next measurement
    (`new_lr + (every_step - 1) * d = lr_target`).

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
        full_tracking: Boolean, reach `lr_target` at the next measurement
            instead of the paper's drift. Defaults to `False` (the paper's).

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
    sigma = validation.positive("sigma", sigma)
    learning_rate = validation.non_negative("learning_rate", learning_rate)
    high = min(float(max_learning_rate), FLOAT32_MAX)
    low = min(max(float(min_learning_rate), 0.0), high)
    learning_rate = float(learning_rate)
    z_gap = float(probit(target_probability, epsilon) - probit(probability, epsilon))
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
    return float(learning_rate + step), float(step if full_tracking else step / every_step)


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


def wide_layer_counts(counts: ArrayLike, group_counts: ArrayLike, max_groups: float = REFERENCE_GROUPS) -> np.ndarray:
    """Whole-vector counts with every layer of more than `max_groups` groups read as that many groups.

    `counts` and `group_counts` are `(..., 2)` arrays of (unchanged, positions),
    as in `keras_actcoolr.RangeAnalysis`. Where `is_wide`, a layer's unchanged
    count becomes `N * 2 ** -T`, `T = vector_temperature_from_groups(T_g, N,
    N_g, max_groups)` with `T_g = layer_temperature(U_g, N_g)`: the count of
    `8 * max_groups` of its channels. Its positions and every other layer are
    unchanged. Read as a count, a wide layer's temperature is then at most the
    ceiling `log2(2N)`, as the whole-vector count's is. This is how the layer
    filter reads a wide layer in a measurement, applied to counts, so that a
    range analysis, its pool and the erf model fitted to them are on the scale
    the controller follows.
    """
    counts = np.array(counts, dtype=np.float64)
    group_counts = np.asarray(group_counts, dtype=np.float64)
    positions, group_positions = counts[..., 1], group_counts[..., 1]
    group_temperature = layer_temperature(group_counts[..., 0], group_positions)
    read = vector_temperature_from_groups(group_temperature, positions, group_positions, max_groups)
    counts[..., 0] = np.where(is_wide(positions, group_positions, max_groups), positions * 2.0**-read, counts[..., 0])
    return counts


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
