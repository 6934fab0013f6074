"""The records an `APTModel` gives its measurement observers.

A measured step becomes a `Measurement`; a step measured with a range
analysis also gives its `keras_actcoolr.RangeAnalysis`
(`keras_actcoolr.records`). Both are typed and immutable; code reads their
attributes. They also read like the dicts they replaced
(`record["temperature"]`, `dict(record)`), the form `history`, the CSV and
TensorBoard writers and the plots keep; `history` keeps `dict(record)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_actcoolr import temperature as T
from keras_actcoolr import validation
from keras_actcoolr.records import DEFAULT_MEASURE, MEASURES, RangeAnalysis, Record

__all__ = ["DEFAULT_MEASURE", "MEASURES", "Measurement", "RangeAnalysis", "RangeCounts"]

#: Deprecated alias of `keras_actcoolr.RangeAnalysis` (the analyses inside `fit` and those of
#: `lr_range_analysis` are one type now); kept for one release.
RangeCounts = RangeAnalysis


@dataclasses.dataclass(frozen=True, eq=False)
class Measurement(Record):
    """One measured step: temperatures of the step's own update, per layer and for the network.

    Attributes:
        step: The optimizer step (`optimizer.iterations` before the step).
        learning_rate: The rate of that step.
        temperature: The network temperature, the mean of the layers'.
        layers: `{layer name: temperature}` in model order.
        dead: `{layer name: share of channels off at every position of the batch}`.
        positions: `{layer name: N}`, the positions compared.
        saturated: Names of the layers with fewer than
            `keras_actcoolr.temperature.SATURATION_COUNT` unchanged positions.
        loss: The measured batch's loss, or `None` (then no key).
        examples: The batch's number of examples, or `None` (then no key).
        group_temperature: The network's grouped temperature, the mean of
            `group_layers` (`None`: no key, for records made from the four
            whole-vector columns only).
        group_layers: `{layer name: grouped temperature}`: the same formula
            on group positions (example x spatial location x group of
            `keras_actcoolr.layers.GROUP_CHANNELS` channels), see
            `keras_actcoolr.APTReLU`.
        group_positions: `{layer name: N_g}`, the group positions compared.
        group_saturated: Names of the layers with fewer than `SATURATION_COUNT`
            unchanged group positions.
    """

    KEYS = (
        "step",
        "learning_rate",
        "temperature",
        "layers",
        "dead",
        "positions",
        "saturated",
        "loss",
        "examples",
        "group_temperature",
        "group_layers",
        "group_positions",
        "group_saturated",
    )

    step: int
    learning_rate: float
    temperature: float
    layers: dict[str, float]
    dead: dict[str, float]
    positions: dict[str, float]
    saturated: list[str]
    loss: float | None = None
    examples: int | None = None
    group_temperature: float | None = None
    group_layers: dict[str, float] | None = None
    group_positions: dict[str, float] | None = None
    group_saturated: list[str] | None = None

    def measure(self, measure: str) -> tuple[dict[str, float], dict[str, float], list[str]]:
        """`(layers, positions, saturated)` of `measure`: `"vector"` (the paper's) or `"grouped"`.

        Raises:
            ValueError: for another `measure`, or `"grouped"` on a record
                without grouped counts.
        """
        if measure == "vector":
            return self.layers, self.positions, self.saturated
        if measure == "grouped" and self.group_layers is not None:
            return self.group_layers, self.group_positions, self.group_saturated
        raise ValueError(
            f'`measure` must be one of {MEASURES} ("grouped" needs a record with grouped counts). '
            f"Received: measure={measure!r}"
        )

    @classmethod
    def from_counts(
        cls,
        step: int,
        learning_rate: float,
        names: list[str],
        counts: np.ndarray,
        loss: float | None = None,
        examples: int | None = None,
    ) -> Measurement:
        """The record of `[layers, 6]` counts: unchanged, positions, dead channels, channels, unchanged
        group positions, group positions (`[layers, 4]`: no grouped keys)."""
        counts = np.asarray(counts, dtype=np.float64).reshape(len(names), -1)
        temperatures = T.layer_temperature(counts[:, 0], counts[:, 1])
        dead = np.where(counts[:, 3] > 0, counts[:, 2] / np.maximum(counts[:, 3], 1.0), 0.0)
        grouped: dict = {}
        if counts.shape[1] >= 6:
            group_temperatures = T.layer_temperature(counts[:, 4], counts[:, 5])
            grouped = dict(
                group_temperature=float(np.mean(group_temperatures)) if len(names) else 0.0,
                group_layers={name: float(t) for name, t in zip(names, group_temperatures)},
                group_positions={name: float(c[5]) for name, c in zip(names, counts)},
                group_saturated=[name for name, c in zip(names, counts) if T.is_saturated(c[4], c[5])],
            )
        return cls(
            step=int(step),
            learning_rate=float(learning_rate),
            temperature=float(np.mean(temperatures)) if len(names) else 0.0,
            layers={name: float(t) for name, t in zip(names, temperatures)},
            dead={name: float(d) for name, d in zip(names, dead)},
            positions={name: float(c[1]) for name, c in zip(names, counts)},
            saturated=[name for name, c in zip(names, counts) if T.is_saturated(c[0], c[1])],
            loss=None if loss is None else float(loss),
            examples=int(examples) if examples else None,
            **grouped,
        )


def check_measure(measure: Any) -> str:
    """`measure` if it is one of `MEASURES`.

    Raises:
        ValueError: naming the argument and the received value otherwise.
    """
    return validation.one_of("measure", measure, MEASURES)


def record_measure(record: Mapping, measure: str) -> tuple[dict, dict, list]:
    """`(layers, positions, saturated)` of a record (a `Measurement`, or its dict in `history`) for `measure`.

    Raises:
        ValueError: `"grouped"` on a record without grouped keys.
    """
    if isinstance(record, Measurement) and (measure == "vector" or record.group_layers is not None):
        return record.measure(measure)
    if measure == "vector":
        return record["layers"], record.get("positions", {}), list(record.get("saturated", ()))
    if "group_layers" not in record:
        raise ValueError(
            "measure='grouped' needs records with grouped temperatures (`group_layers`), as "
            "`APTModel` makes them; this record has none. Use measure='vector'."
        )
    return record["group_layers"], record.get("group_positions", {}), list(record.get("group_saturated", ()))


def range_measure(range_analysis: Mapping, measure: str) -> Mapping:
    """The range analysis of `measure`: a `RangeAnalysis` whose `counts` are that measure's.

    A mapping that is no `RangeAnalysis` (a dict of one) is returned as it is for `"vector"`.
    """
    if isinstance(range_analysis, RangeAnalysis):
        return range_analysis.measure(measure)
    if measure == "vector":
        return range_analysis
    if "group_counts" not in range_analysis:
        raise ValueError("measure='grouped' needs a range analysis with grouped counts (`group_counts`).")
    return RangeAnalysis(range_analysis["learning_rates"], range_analysis["group_counts"], measured="grouped")
