"""The pure arithmetic of ActCooLR's guards.

The collapse guard's loss-spike test, the runaway guard's limits, Adam's
units and the layer filter's width rule.

`keras_actcoolr.temperature` re-exports every name of this module, with the
guards' arithmetic on temperatures (`temperature_ceiling`, `is_saturated`,
...); docs/method.md#guards describes the guards that use them.
"""

from __future__ import annotations

import math

import numpy as np

ArrayLike = float | np.ndarray

__all__ = [
    "LOSS_AVERAGE_WARMUP",
    "LOSS_AVERAGE_WEIGHT",
    "LOSS_CLIP",
    "LOSS_EXAMPLES",
    "LOSS_SUSTAIN",
    "LossSpikeTest",
    "adam_noise_step_scale",
    "adam_step_scale",
    "limit_rise",
    "loss_spike_index",
    "loss_spiked",
    "RUNAWAY_RESPONSE",
    "runaway_limited",
    "runaway_cooled",
    "REFERENCE_GROUPS",
    "is_wide",
    "vector_temperature_from_groups",
]


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


def loss_spike_index(losses: float | np.ndarray, tolerance: float, **kwargs: float) -> int | None:
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


#: `runaway_limited`, `runaway_cooled`: the share of the erf model's predicted answer to a rise that counts as an answer.
RUNAWAY_RESPONSE = 0.25


def runaway_limited(
    learning_rate: float,
    anchor_learning_rate: float,
    z: float,
    anchor_z: float,
    sigma: float,
    factor: float,
    response: float = RUNAWAY_RESPONSE,
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


def runaway_cooled(z: float, anchor_z: float, sigma: float, factor: float, response: float = RUNAWAY_RESPONSE) -> bool:
    """Whether the network cooled since the anchor of a rise by more than a rise's answer: the anchor moves.

    `runaway_limited` asks a rise of more than `factor` for an answer of
    `response * ln(factor) / sigma` in `z = PhiInv(P)` at least. A network
    whose `z` fell by more than that since the anchor (training cooled it,
    as early training does) would hide the answer to the rise, so the rise
    is read from there on: from the coolest measurement, with the rate of
    that measurement (`RunawayGuard(anchor="coolest")`).
    """
    return (anchor_z - z) > response * math.log(factor) / sigma


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


# ------------------------------------------------------- the layer filter's width rule


#: The layer filter reads a layer of more than this many groups of 8 channels (64 channels)
#: as this many groups: `T = REFERENCE_GROUPS * T_g` (see `vector_temperature_from_groups`).
REFERENCE_GROUPS = 8


def is_wide(positions: ArrayLike, group_positions: ArrayLike, max_groups: float = REFERENCE_GROUPS) -> ArrayLike:
    """Whether a layer has more than `max_groups` groups of 8 channels per position (`N_g > max_groups * N`).

    With the default, whether it is wider than 64 channels: the layers the
    layer filter reads as 64 of their channels. A layer with no positions is not.
    """
    positions = np.asarray(positions, dtype=np.float64)
    return (positions > 0) & (np.asarray(group_positions, dtype=np.float64) > max_groups * positions)


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
