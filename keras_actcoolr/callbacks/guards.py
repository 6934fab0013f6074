"""`ActCooLR`'s rate guards: the layer filter, the runaway guard and the final anneal.

A rate guard is a `RateGuard` subclass: `limit` receives the update the
controller computed (`RateUpdate`) and returns it, limited. Give instances
to `ActCooLR(rate_guards=[...])`; a guard that needs state across a resume
declares it as a dataclass registered with
`keras_actcoolr.state.register_state` (see docs/method.md#writing-a-controller).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy import special

from keras_actcoolr import temperature as T
from keras_actcoolr.measurement import record_measure
from keras_actcoolr.records import RangeAnalysis
from keras_actcoolr.state import StateVariables, register_state, state_field

__all__ = [
    "FinalAnneal",
    "LayerFilter",
    "RateGuard",
    "RateUpdate",
    "RunawayGuard",
    "RunawayState",
    "dead_layers",
    "followed_probability",
]


def dead_layers(record: dict) -> list[str]:
    """Names of the layers of a record whose every channel was off on the measured batch."""
    dead = record.get("dead", {})
    return [name for name in record["layers"] if dead.get(name, 0.0) >= 1.0]


@dataclasses.dataclass(frozen=True)
class RateUpdate:
    """The rate update of one measurement, as the guards see and limit it.

    Attributes:
        step: The measured step.
        rate: The measured step's rate.
        new_rate: The rate of the next step.
        drift: The change of the rate per step until the next measurement.
        probability: The change probability the controller followed, or
            `None` (no layer left: the rate is held).
        sigma: The sigma of the update.
        every_step: Steps between two measurements.
        total_steps: The length of the target curve.
        runaway: Whether the runaway guard held the rate.
        step_scale: The step per unit rate the runaway guard read (1 for
            plain units; Adam's with `ActCooLR(adam_units=True)`), or `None`
            when it did not run.
        resolved: Whether the measurement resolved a change: `False` when
            `probability` is the count's resolution floor, a bound and not
            a reading (`followed_probability`).
    """

    step: int
    rate: float
    new_rate: float
    drift: float
    probability: float | None
    sigma: float
    every_step: int
    total_steps: int
    runaway: bool = False
    step_scale: float | None = None
    resolved: bool = True

    def replace(self, **changes: object) -> RateUpdate:
        return dataclasses.replace(self, **changes)


class RateGuard:
    """Base of the guards that limit `ActCooLR`'s rate update.

    Override `limit`; `reset` is called when the collapse guard restores a
    kept state (forget what the guard remembers of the recent rates).
    """

    #: The guard's name in messages.
    name = "rate guard"

    def limit(self, update: RateUpdate) -> RateUpdate:
        """The update, limited (default: unchanged)."""
        return update

    def reset(self) -> None:
        """Forget the recent rates (after a kept state was restored)."""


class LayerFilter:
    """Leaves dead and saturated layers out of the temperature the controller follows.

    Layers whose every channel is dead on the measured batch (they read
    `T = 0`, frozen, not cold) and layers whose measurement is saturated
    (fewer than `keras_actcoolr.temperature.SATURATION_COUNT` unchanged
    positions, so `T` sits near its ceiling `log2(2N)` at any rate) are left
    out. With `measure="vector"`, a layer saturated in its whole-vector count
    but not over groups of 8 channels is kept, read through its groups on
    the paper's scale, and a layer wider than 64 channels is read as 64 of
    its channels (`temperature.vector_temperature_from_groups`).
    """

    def __init__(self, measure: str) -> None:
        self.measure = measure

    def excluded(self, record: dict, names: list[str], temperatures: np.ndarray, saturated: set) -> tuple:
        """`(temperatures, excluded)`: the temperatures as read and a mask of the layers left out."""
        dead = record.get("dead", {})
        saturated = set(saturated)
        if self.measure == "vector":
            temperatures, saturated = _read_through_groups(record, names, temperatures, saturated)
        return temperatures, np.array([dead.get(n, 0.0) >= 1.0 or n in saturated for n in names])

    def read_range(self, range_analysis: RangeAnalysis) -> RangeAnalysis:
        """A range analysis with its wide layers read as 64 of their channels, as `excluded` reads them.

        With `measure="vector"`, the counts of a layer wider than 64 channels
        are replaced by those of `temperature.wide_layer_counts`, so that the
        erf model fitted to the analysis (sigma, the first rate, the automatic
        start temperature and ceiling) is on the scale the controller follows.
        Saturated layers are kept as counted: a saturated count reads a change
        probability within `SATURATION_COUNT / N` of 1 either way. Unchanged
        without grouped counts, with `measure="grouped"`, and for a mapping
        that is no `RangeAnalysis` (as `measurement.range_measure` treats it).
        """
        if self.measure != "vector" or getattr(range_analysis, "group_counts", None) is None:
            return range_analysis
        return range_analysis.replace(counts=T.wide_layer_counts(range_analysis.counts, range_analysis.group_counts))


def _read_through_groups(record: dict, names: list[str], temperatures: np.ndarray, saturated: set) -> tuple:
    """Layer temperatures read through the groups of 8 channels where needed (see `LayerFilter`)."""
    groups = record.get("group_layers")
    if not groups:
        return temperatures, saturated
    positions, group_positions = record.get("positions", {}), record.get("group_positions", {})
    group_saturated = set(record.get("group_saturated", ()))
    temperatures = temperatures.copy()
    for index, name in enumerate(names):
        n, n_g = positions.get(name, 0.0), group_positions.get(name, 0.0)
        wide = bool(T.is_wide(n, n_g))
        if (wide or name in saturated) and name not in group_saturated:
            temperatures[index] = T.vector_temperature_from_groups(groups[name], n, n_g, T.REFERENCE_GROUPS)
            saturated = saturated - {name}
        elif wide:
            saturated = saturated | {name}
    return temperatures, saturated


def followed_probability(
    record: dict, measure: str, layer_filter: LayerFilter | None
) -> tuple[float | None, float | None, bool]:
    """The change probability the controller follows (the layer filter applied), its temperature, and whether it
    resolved a change.

    With the layer filter, a count over `N` positions resolves a probability
    down to about `1 / N`, so the probability is at least `0.5 / N` of the
    smallest kept layer: then it is a bound, not a reading, and the third
    value is `False` (without the filter: `False` when no change was seen).
    `(None, None, False)` when no layer is left (every one dead or
    saturated): the rate is then held.
    """
    names = list(record["layers"])
    layers, positions, saturated = record_measure(record, measure)
    temperatures = np.array([layers[n] for n in names], dtype=np.float64)
    excluded = None
    if layer_filter is not None:
        temperatures, excluded = layer_filter.excluded(record, names, temperatures, saturated)
    probability = T.control_probability(temperatures, excluded)
    if probability is None:
        return None, None, False
    resolved = probability > 0.0
    if excluded is not None:
        # With N positions a count resolves P down to about 1/N: no change is no proof of P = 0.
        kept = [positions.get(n, 0.0) for n, out in zip(names, excluded) if not out]
        if kept and min(kept) > 0:
            floor = 0.5 / min(kept)
            resolved = probability > floor
            probability = max(probability, floor)
    return probability, float(T.probability_to_temperature(probability)), resolved


@register_state("runaway")
@dataclasses.dataclass(frozen=True)
class RunawayState:
    """The runaway guard's state (variables `actcoolr_runaway_<field>`).

    Attributes:
        rise_learning_rate: The rate where the current rise started, or
            `None` (the rate is not rising).
        rise_z: `PhiInv` of the change probability at the start of the rise.
    """

    rise_learning_rate: float | None = state_field("float32", None)
    rise_z: float = state_field("float32", 0.0)


class RunawayGuard(RateGuard):
    """Stops a rate that rises without an answer of the temperature.

    Once the rate has risen by more than `factor` since it last fell, and
    the temperature answered less than a quarter of what the erf model
    predicts for that rise (`temperature.runaway_limited`), the rate may not
    rise further (it may still fall). With `anchor="coolest"` a measurement
    cooler than the rise's anchor by more than such an answer
    (`temperature.runaway_cooled`) becomes the anchor: a network that
    training cools while the rate rises (its first steps) does not read as
    unanswered; nor does a converging one, whose rise the hold is there to
    stop, so `"rise"` is the default. A measurement that resolved no change
    (`RateUpdate.resolved`: its probability is the count's floor, a bound)
    becomes the anchor too: a network too cool to read, such as one started
    far below its working rate, cannot answer, and its rise is read from the
    first measurement that sees a change. Between two measurements the rate may
    rise by `factor` at most (`temperature.limit_rise`). The automatic
    ceiling (`max_learning_rate="auto"`) belongs to this guard. The rise
    and its anchor are read as the rate times `step_scale()`, the step per
    unit rate (`keras_actcoolr.callbacks.adam_units.AdamUnits`: Adam's
    step shrinks as its gradients' signs vary, which is no runaway).

    Args:
        state: The `StateVariables` of `RunawayState`.
        factor: Rise of the rate allowed without an answer.
        epsilon: Clamp of the probabilities.
        step_scale: Callable `() -> float`, the step per unit rate after the
            measured step, or `None` (1: the rate's own units).
        anchor: `"rise"` (the rise is read from the measurement where it
            started) or `"coolest"` (above).
    """

    name = "runaway guard"

    def __init__(
        self,
        state: StateVariables,
        factor: float,
        epsilon: float,
        step_scale: Callable[[], float] | None = None,
        anchor: str = "rise",
    ) -> None:
        self.state = state
        self.factor = factor
        self.anchor = anchor
        self.epsilon = epsilon
        self.step_scale = step_scale

    def limit(self, update: RateUpdate) -> RateUpdate:
        if update.probability is None:
            return update
        rate, new_rate = update.rate, update.new_rate
        z = float(special.ndtri(np.clip(update.probability, self.epsilon, 1 - self.epsilon)))
        state = self.state.read()
        scale = 1.0 if self.step_scale is None else float(self.step_scale())
        update = update.replace(step_scale=scale)
        if new_rate <= rate:
            if state.rise_learning_rate is not None:
                self.reset()
            return update
        rising = state.rise_learning_rate is not None
        cooled = rising and self.anchor == "coolest" and T.runaway_cooled(z, state.rise_z, update.sigma, self.factor)
        # A measurement that resolved no change cannot show whether a rise was answered: the rise is read
        # from the next one that does (the rate still rises by `factor` at most between two measurements).
        if not rising or cooled or not update.resolved:
            self.state.write(rise_learning_rate=rate * scale, rise_z=z)
        elif T.runaway_limited(rate * scale, state.rise_learning_rate, z, state.rise_z, update.sigma, self.factor):
            return update.replace(new_rate=rate, drift=0.0, runaway=True)
        # Between two measurements the rate may rise by `factor` at most: the paper's update moves a
        # tenth of the way to a target rate that a large sigma puts orders of magnitude away.
        new_rate, drift = T.limit_rise(rate, new_rate, update.drift, update.every_step, self.factor)
        return update.replace(new_rate=new_rate, drift=drift)

    def reset(self) -> None:
        self.state.write(rise_learning_rate=None, rise_z=0.0)


class FinalAnneal(RateGuard):
    """Near the end of training the rate may only fall, to 0 at the last step.

    From the start of the last `share` of the steps, the new rate and its
    drift are capped by the line from the measured step's rate to 0 at the
    last step; an update whose interval reaches into that share may not
    raise the rate. It needs no state: it depends on the step and the
    curve's length only.

    Args:
        share: Float in (0, 1), the share of training at its end.
    """

    name = "final anneal"

    def __init__(self, share: float) -> None:
        self.share = share

    def limit(self, update: RateUpdate) -> RateUpdate:
        tail_start = (1.0 - self.share) * update.total_steps
        if update.step + update.every_step < tail_start:
            return update
        rate = update.rate
        if update.step < tail_start:
            return update.replace(new_rate=min(update.new_rate, rate), drift=min(update.drift, 0.0))
        remaining = max(update.total_steps - update.step, 1)
        return update.replace(
            new_rate=min(update.new_rate, rate * (remaining - 1) / remaining),
            drift=min(update.drift, -rate / remaining),
        )
