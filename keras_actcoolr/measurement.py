"""The records an `APTModel` gives its measurement observers.

A measured step becomes a `Measurement`; a step measured with a range
analysis also gives its `RangeCounts`. Both are typed, immutable and read
like the dicts they replace (`record["temperature"]`, `dict(record)`), so
that callbacks, `history`, the CSV and TensorBoard writers and the plots all
read the same keys; `history` keeps `dict(record)`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np

from keras_actcoolr import temperature as T

__all__ = ["Measurement", "RangeCounts"]


class _FieldMapping(Mapping):
    """Read a dataclass like a dict of its fields; a field that is `None` is no key."""

    _KEYS: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        if key in self._KEYS:
            value = getattr(self, key)
            if value is not None:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (key for key in self._KEYS if getattr(self, key) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def as_dict(self) -> dict:
        """A plain dict of the keys (the form `history` keeps)."""
        return {key: self[key] for key in self}


@dataclasses.dataclass(frozen=True, eq=False)
class Measurement(_FieldMapping):
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
    """

    _KEYS = ("step", "learning_rate", "temperature", "layers", "dead", "positions", "saturated", "loss", "examples")

    step: int
    learning_rate: float
    temperature: float
    layers: dict[str, float]
    dead: dict[str, float]
    positions: dict[str, float]
    saturated: list[str]
    loss: float | None = None
    examples: int | None = None

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
        """The record of `[layers, 4]` counts: unchanged, positions, dead channels, channels."""
        counts = np.asarray(counts, dtype=np.float64).reshape(len(names), -1)
        temperatures = T.layer_temperature(counts[:, 0], counts[:, 1])
        dead = np.where(counts[:, 3] > 0, counts[:, 2] / np.maximum(counts[:, 3], 1.0), 0.0)
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
        )


@dataclasses.dataclass(frozen=True, eq=False)
class RangeCounts(_FieldMapping):
    """The counts of a range analysis of one batch: one step per rate of `learning_rates`.

    Attributes:
        learning_rates: `(K,)` learning rates (the Table-1 rates).
        counts: `(K, L, 2)` float64 counts per rate and layer: unchanged
            positions and positions. Analyses of several batches add up.
        layer_temperatures: `(K, L)` temperatures of the counts.
        temperatures: `(K,)` network temperatures (mean over layers).
    """

    _KEYS = ("learning_rates", "temperatures", "layer_temperatures", "counts")

    learning_rates: np.ndarray
    counts: np.ndarray

    @functools.cached_property
    def layer_temperatures(self) -> np.ndarray:
        return T.layer_temperature(self.counts[..., 0], self.counts[..., 1])

    @functools.cached_property
    def temperatures(self) -> np.ndarray:
        return self.layer_temperatures.mean(axis=1)
