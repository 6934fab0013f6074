"""`RangeAnalysis`, the one result of every learning-rate range analysis, and the base of the typed records.

The analyses inside `fit` (`APTModel` gives them to its observers), the pool
of analyses that `ActCooLR` fits sigma to, `keras_actcoolr.lr_range_analysis`
and `keras_actcoolr.measure_temperature` all return a `RangeAnalysis`: the
counts of one trial step per learning rate, the temperatures computed from
them, and the erf fit where one was made.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from keras_actcoolr import temperature as T

__all__ = ["DEFAULT_MEASURE", "MEASURES", "RangeAnalysis", "Record", "fit_range"]

#: The temperature measurements a controller can follow: `"grouped"` (patterns of groups of
#: `keras_actcoolr.layers.GROUP_CHANNELS` channels) and `"vector"` (the paper's whole pattern vector).
MEASURES = ("grouped", "vector")

#: `ActCooLR(measure=...)` and `DynamicActCooLR(measure=...)` default.
DEFAULT_MEASURE = "vector"


class Record(Mapping):
    """A frozen dataclass that also reads like a dict of its keys; a key whose value is `None` is absent.

    `KEYS` names the keys: fields, or properties. Mapping access
    (`record["temperature"]`, `dict(record)`, `"loss" in record`) is the form
    `history`, the CSV and JSON writers and older code read; code of the
    package reads the attributes.
    """

    KEYS: tuple[str, ...] = ()
    #: Keys read from an attribute of another name: `{key: attribute}`.
    KEY_ATTRIBUTES: dict[str, str] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self.KEYS:
            value = getattr(self, self.KEY_ATTRIBUTES.get(key, key))
            if value is not None:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (key for key in self.KEYS if getattr(self, self.KEY_ATTRIBUTES.get(key, key)) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def as_dict(self) -> dict:
        """A plain dict of the keys (the form `history` keeps)."""
        return {key: self[key] for key in self}


def fit_range(learning_rates: np.ndarray, temperatures: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """`(sigma, mu, rms residual in probability)` of the erf model fitted to `temperatures`, or Nones when
    `keras_actcoolr.temperature.fit_erf_model` cannot fit it."""
    try:
        sigma, mu = T.fit_erf_model(learning_rates, temperatures)
    except ValueError:
        return None, None, None
    residuals = T.erf_probability(learning_rates, sigma, mu) - T.temperature_to_probability(temperatures)
    return sigma, mu, float(np.sqrt(np.mean(residuals**2)))


def _one_rate(learning_rates: np.ndarray, values: np.ndarray | None) -> Any:
    """`values[0]` (a float when a scalar) for an analysis of one rate; `None` for more rates or no values."""
    if values is None or len(learning_rates) != 1:
        return None
    return float(values[0]) if np.ndim(values[0]) == 0 else values[0]


def _per_layer_of_one_rate(values: Callable[[Any], np.ndarray | None], what: str) -> property:
    """A property: `{layer name: what}` of an analysis of one rate with `layer_names`, else `None`."""

    def read(analysis: RangeAnalysis) -> dict[str, float] | None:
        row = _one_rate(analysis.learning_rates, values(analysis))
        if analysis.layer_names is None or row is None:
            return None
        return {name: float(value) for name, value in zip(analysis.layer_names, row)}

    return property(read, doc=f"`{{layer name: {what}}}` of an analysis of one rate with `layer_names`, else `None`.")


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True, eq=False)
class RangeAnalysis(Record):
    """A learning-rate range analysis: the counts of one trial step per learning rate, and what follows.

    Counts are exact sums over the measured examples, so analyses of several
    batches add up (`combined`), and temperatures are computed from the sums.
    The same type is given to `fit`'s observers (`on_measurement`), kept by
    `ActCooLR`'s sigma pool, and returned by `keras_actcoolr.lr_range_analysis`
    (with the erf fit) and `keras_actcoolr.measure_temperature` (one rate).

    Example:

    ```python
    result = keras_actcoolr.lr_range_analysis(model, (x_train, y_train), batches=8)
    result.temperatures, result.layer("conv1_relu"), result.sigma, result.predicted_learning_rate(3.03)
    single = keras_actcoolr.measure_temperature(model, (x_train, y_train), learning_rate=0.1)
    single.temperature, single.layers
    ```

    Attributes:
        learning_rates: `(K,)` learning rates.
        counts: `(K, L, 2)` float64 counts per rate and layer: unchanged
            positions and positions (the paper's whole-vector counts). A
            `(K, L, 4)` array is split: its last two columns are `group_counts`.
        group_counts: `(K, L, 2)` counts of group positions (groups of
            `keras_actcoolr.layers.GROUP_CHANNELS` channels), or `None`.
        layer_names: Names of the `APTReLU` layers in model order, or `None`
            (the analyses inside `fit`).
        examples: Examples measured, or `None`.
        batches: Batches measured (`ActCooLR`'s pool), or `None`.
        sigma, mu: The erf model fitted to the positive rates' network
            temperatures (`fitted`), or `None` (not fitted, or no fit).
        residual: Root mean square of that fit's residuals in probability, or `None`.
        group_sigma, group_mu: The erf model fitted to `group_temperatures`, or `None`.
        measured: `"vector"` or `"grouped"`, which counts `counts` holds when
            chosen with `measure`; key `"measure"`. `None` otherwise.
        step_temperature: For an analysis inside `fit`, the network
            temperature of the analysed step itself (`ActCooLR` sets it), or `None`.

    Derived (properties, `None` where they do not apply): `layer_temperatures`
    `(K, L)`, `temperatures` `(K,)`, `group_layer_temperatures`,
    `group_temperatures`; and for an analysis of one rate, the fields of
    `measure_temperature`'s result: `learning_rate`, `temperature`, `layers`,
    `unchanged`, `positions` (`{layer name: value}`) and their `group_` forms.

    Mapping access: every attribute above that is not `None` is also a key
    (`result["sigma"]`, `dict(result)`). Deprecated: read the attributes; the
    keys stay for one release, for the code that read the dicts this type
    replaces (`RangeCounts`, `ActCooLR.range_analysis`, `measure_temperature`'s dict).
    """

    KEYS = (
        "learning_rates",
        "temperatures",
        "layer_temperatures",
        "counts",
        "group_temperatures",
        "group_layer_temperatures",
        "group_counts",
        "layer_names",
        "examples",
        "batches",
        "sigma",
        "mu",
        "residual",
        "group_sigma",
        "group_mu",
        "measure",
        "step_temperature",
        "learning_rate",
        "temperature",
        "layers",
        "unchanged",
        "positions",
        "group_temperature",
        "group_layers",
        "group_unchanged",
        "group_positions",
    )
    KEY_ATTRIBUTES = {"measure": "measured"}

    learning_rates: np.ndarray
    counts: np.ndarray
    group_counts: np.ndarray | None = None
    layer_names: tuple[str, ...] | None = None
    examples: int | None = None
    batches: int | None = None
    sigma: float | None = None
    mu: float | None = None
    residual: float | None = None
    group_sigma: float | None = None
    group_mu: float | None = None
    measured: str | None = None
    step_temperature: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "learning_rates", np.asarray(self.learning_rates, dtype=np.float64).ravel())
        counts = np.asarray(self.counts, dtype=np.float64)
        if counts.ndim == 3 and counts.shape[-1] == 4:
            counts, group_counts = counts[..., :2], counts[..., 2:]
            if self.group_counts is None:
                object.__setattr__(self, "group_counts", group_counts)
        object.__setattr__(self, "counts", counts)
        if self.group_counts is not None:
            object.__setattr__(self, "group_counts", np.asarray(self.group_counts, dtype=np.float64))
        if self.layer_names is not None:
            object.__setattr__(self, "layer_names", tuple(self.layer_names))

    # -- derived temperatures

    @functools.cached_property
    def layer_temperatures(self) -> np.ndarray:
        """`(K, L)` temperature of each layer at each rate."""
        return T.layer_temperature(self.counts[..., 0], self.counts[..., 1])

    @functools.cached_property
    def temperatures(self) -> np.ndarray:
        """`(K,)` network temperature (the mean over layers) at each rate."""
        return self.layer_temperatures.mean(axis=1)

    @functools.cached_property
    def group_layer_temperatures(self) -> np.ndarray | None:
        """`(K, L)` grouped temperatures, or `None` without grouped counts."""
        if self.group_counts is None:
            return None
        return T.layer_temperature(self.group_counts[..., 0], self.group_counts[..., 1])

    @property
    def group_temperatures(self) -> np.ndarray | None:
        """`(K,)` grouped network temperatures, or `None`."""
        layers = self.group_layer_temperatures
        return None if layers is None else layers.mean(axis=1)

    # -- one rate (the fields of `measure_temperature`'s result)

    @property
    def learning_rate(self) -> float | None:
        """The rate of an analysis of one rate, else `None`."""
        return _one_rate(self.learning_rates, self.learning_rates)

    @property
    def temperature(self) -> float | None:
        """The network temperature of an analysis of one rate, else `None`."""
        return _one_rate(self.learning_rates, self.temperatures)

    @property
    def group_temperature(self) -> float | None:
        """The grouped network temperature of an analysis of one rate, else `None`."""
        return _one_rate(self.learning_rates, self.group_temperatures)

    layers = _per_layer_of_one_rate(lambda a: a.layer_temperatures, "temperature")
    unchanged = _per_layer_of_one_rate(lambda a: a.counts[..., 0], "unchanged positions")
    positions = _per_layer_of_one_rate(lambda a: a.counts[..., 1], "positions compared")
    group_layers = _per_layer_of_one_rate(lambda a: a.group_layer_temperatures, "grouped temperature")
    group_unchanged = _per_layer_of_one_rate(
        lambda a: None if a.group_counts is None else a.group_counts[..., 0], "unchanged group positions"
    )
    group_positions = _per_layer_of_one_rate(
        lambda a: None if a.group_counts is None else a.group_counts[..., 1], "group positions"
    )

    # -- what callers do with an analysis

    def measure(self, measure: str) -> RangeAnalysis:
        """The analysis of one measure: its `counts` are those of `measure` (`"vector"` or `"grouped"`).

        Raises:
            ValueError: for another `measure`, or `"grouped"` without grouped counts.
        """
        if measure == "vector" or (measure == "grouped" and self.group_counts is not None):
            counts = self.counts if measure == "vector" else self.group_counts
            common = dict(layer_names=self.layer_names, examples=self.examples, batches=self.batches)
            return RangeAnalysis(self.learning_rates, counts, measured=measure, **common)
        raise ValueError(
            f'`measure` must be one of {MEASURES} ("grouped" needs grouped counts). Received: measure={measure!r}'
        )

    def fitted(self) -> RangeAnalysis:
        """This analysis with the erf model fitted to its positive rates: `sigma`, `mu`, `residual`, and
        `group_sigma`, `group_mu` with grouped counts (each `None` when it cannot be fitted)."""
        positive = self.learning_rates > 0
        sigma, mu, residual = fit_range(self.learning_rates[positive], self.temperatures[positive])
        group_sigma = group_mu = None
        if self.group_counts is not None:
            group_sigma, group_mu, _ = fit_range(self.learning_rates[positive], self.group_temperatures[positive])
        return self.replace(sigma=sigma, mu=mu, residual=residual, group_sigma=group_sigma, group_mu=group_mu)

    def combined(self, other: RangeAnalysis) -> RangeAnalysis:
        """The analysis of both sets of batches: counts, `examples` and `batches` add up (`None` counts as 0).

        Raises:
            ValueError: when the rates or the count shapes differ.
        """
        if not np.array_equal(self.learning_rates, other.learning_rates) or self.counts.shape != other.counts.shape:
            raise ValueError("Only analyses at the same learning rates of the same layers add up.")
        groups = None
        if self.group_counts is not None and other.group_counts is not None:
            groups = self.group_counts + other.group_counts
        return RangeAnalysis(
            self.learning_rates,
            self.counts + other.counts,
            groups,
            layer_names=self.layer_names,
            examples=(self.examples or 0) + (other.examples or 0),
            batches=(self.batches or 0) + (other.batches or 0),
            measured=self.measured,
        )

    def replace(self, **changes: Any) -> RangeAnalysis:
        """A copy with the fields in `changes` replaced (`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    def layer(self, name: str) -> np.ndarray:
        """`(K,)` temperatures of one layer.

        Raises:
            ValueError: without `layer_names`, or for a name not among them.
        """
        if self.layer_names is None or name not in self.layer_names:
            raise ValueError(f"`name` must be one of the analysed layers {self.layer_names}. Received: name={name!r}")
        return self.layer_temperatures[:, self.layer_names.index(name)]

    def probabilities(self) -> np.ndarray:
        """`(K,)` network change probabilities."""
        return T.temperature_to_probability(self.temperatures)

    def predicted_learning_rate(self, temperature: float) -> float:
        """The learning rate whose step the fitted erf model expects at `temperature`.

        Raises:
            ValueError: when the analysis has no fit (`sigma` is `None`).
        """
        if self.sigma is None or self.mu is None:
            raise ValueError("The erf model could not be fitted to this analysis.")
        return float(T.erf_learning_rate(T.temperature_to_probability(temperature), self.sigma, self.mu))

    def as_dict(self) -> dict:
        """Plain Python values (lists and floats), for JSON or CSV: every key, `None` where absent."""
        return {key: _plain(self[key]) if key in self else None for key in self.KEYS}
