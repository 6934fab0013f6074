"""Typed controller state kept as optimizer variables: the one helper for the schedule and every controller part.

Each part of a controller (the rate of `ActCooLRSchedule`, the sigma
estimator, the collapse and runaway guards) declares its state as a
dataclass of named fields, each made with `state_field` (its dtype, default
and shape), and registers it with `register_state` (controller parts) or
allocates it itself (`StateVariables`, the rate). The variables live in the
optimizer, so checkpoints, `BackupAndRestore` and `.keras` files keep them;
each is named `actcoolr_<part>_<field>`.

An optional field (default `None`) reads `None` until set: "unknown"
(sigma not estimated, start temperature not chosen, loss not measured) is
`None`, never a number standing for it. In the variable it is stored as NaN,
the only place where that encoding exists.

`APTModel.compile` creates the state of every registered part at compile
time, in a fixed order (the rate, then the parts sorted by name), so that a
saved file (Keras saves optimizer variables by position) loads into a model
compiled anew. Files written by release 0.2.0, which kept 17 scalars in one
list, load through `load_optimizer_variables`, which maps them onto the
named state.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any, Generic, TypeVar

import keras
import numpy as np

from keras_actcoolr.temperature import RANGE_LEARNING_RATES

__all__ = [
    "RANGE_COUNTS",
    "ControllerState",
    "StateVariables",
    "controller_state",
    "load_optimizer_variables",
    "register_state",
    "registered_parts",
    "unregister_state",
    "state_field",
]

#: The shape of a field that holds pooled range-analysis counts: `[rates, layers, 2]`, known at compile.
RANGE_COUNTS = "range_counts"

S = TypeVar("S")

_REGISTRY: dict[str, type] = {}
_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def state_field(dtype: str, default: Any = None, shape: tuple | str | None = None) -> Any:
    """A field of a part's typed state.

    Args:
        dtype: `"float32"`, `"float64"`, `"int64"` or `"bool"` (kept as int64).
        default: The value before anything is stored; `None` makes the field
            optional (a float that reads `None` until set).
        shape: `None` for a scalar, or `RANGE_COUNTS` for the pooled
            range-analysis counts (`[rates, layers, 2]`, allocated only when
            the number of layers is known; reads `None` otherwise).

    Returns:
        A `dataclasses.field` carrying the dtype and shape.
    """
    if shape is not None:
        return dataclasses.field(default=None, metadata={"dtype": dtype, "shape": shape})
    return dataclasses.field(default=default, metadata={"dtype": dtype, "shape": None})


def register_state(part: str) -> Any:
    """Class decorator: register a controller part's state dataclass under `part` (its variables' prefix).

    Every registered part gets its variables when an `APTModel` is
    compiled with an `ActCooLRSchedule`, whichever controller then runs:
    the layout of a saved file cannot depend on the callbacks of a later fit.
    """

    def register(state_type: type) -> type:
        if not dataclasses.is_dataclass(state_type):
            raise ValueError(f"`register_state` takes a dataclass. Received: {state_type!r}")
        _REGISTRY[part] = state_type
        return state_type

    return register


def unregister_state(part: str) -> None:
    """Remove a registered part (models compiled afterwards do not get its variables)."""
    _REGISTRY.pop(part, None)


def registered_parts() -> dict[str, type]:
    """The registered parts, in the order of their variables (sorted by name)."""
    return {name: _REGISTRY[name] for name in sorted(_REGISTRY)}


class StateVariables(Generic[S]):
    """The variables of one part's typed state, created in an optimizer.

    Args:
        optimizer: The optimizer that applies the updates (not a `LossScaleOptimizer`).
        part: The part's name, the variables' prefix (`actcoolr_<part>_<field>`).
        state_type: The part's state dataclass (fields made with `state_field`).
        defaults: Defaults replacing the dataclass's, by field name.
        layers: The number of `APTReLU` layers, for `RANGE_COUNTS` fields, or `None`.
    """

    def __init__(
        self, optimizer: Any, part: str, state_type: type[S], defaults: dict | None = None, layers: int | None = None
    ) -> None:
        self.part = part
        self.state_type = state_type
        self._fields = {f.name: f for f in dataclasses.fields(state_type)}
        self._variables: dict[str, Any] = {}
        defaults = defaults or {}
        for name, field in self._fields.items():
            shape, dtype = field.metadata["shape"], field.metadata["dtype"]
            if shape == RANGE_COUNTS:
                if layers is None:
                    continue
                shape, initial = (len(RANGE_LEARNING_RATES), int(layers), 2), "zeros"
            else:
                value = defaults.get(name, field.default)
                shape, initial = (), keras.initializers.Constant(math.nan if value is None else value)
            self._variables[name] = optimizer.add_variable(
                shape=shape,
                dtype="int64" if dtype == "bool" else dtype,
                initializer=initial,
                aggregation="only_first_replica",
                name=f"actcoolr_{part}_{name}",
            )

    @property
    def variables(self) -> list:
        """The variables, in the order of the fields."""
        return list(self._variables.values())

    def read(self) -> S:
        """The state as a `state_type` instance, read from the variables."""
        return self.state_type(**{name: self.get(name) for name in self._variables})

    def get(self, name: str) -> Any:
        """One field, read from its variable (`None` for an unset optional field or missing counts)."""
        field = self._fields[name]
        variable = self._variables.get(name)
        if variable is None:
            return None
        # `.value.numpy()` (a TensorFlow read) costs half of `keras.ops.convert_to_numpy`.
        value = variable.value.numpy()
        if field.metadata["shape"] is not None:
            return np.array(value)
        if field.metadata["dtype"] == "bool":
            return bool(value)
        if field.metadata["dtype"] == "int64":
            return int(value)
        return None if field.default is None and math.isnan(value) else float(value)

    def write(self, **values: Any) -> None:
        """Store fields (eagerly, in cross-replica context); `None` for an optional field.

        Raises:
            ValueError: for a field the state does not have, or `None` for a
                field that is not optional.
        """
        for name, value in values.items():
            field = self._fields.get(name)
            if field is None:
                raise ValueError(f"The {self.part} state has no field {name!r}. Fields: {sorted(self._fields)}")
            if name not in self._variables:
                continue  # the pooled counts of a state created without the layer count
            if value is None and field.default is not None:
                raise ValueError(f"`{name}` of the {self.part} state is not optional. Received: {name}=None")
            if field.metadata["shape"] is not None:
                value = np.asarray(value, dtype=field.metadata["dtype"])
            self._variables[name].assign(math.nan if value is None else value)


class ControllerState:
    """The state of every registered controller part of one optimizer (see `controller_state`)."""

    def __init__(self, optimizer: Any, layers: int | None) -> None:
        self.parts = {
            name: StateVariables(optimizer, name, state_type, layers=layers)
            for name, state_type in registered_parts().items()
        }

    def __getitem__(self, part: str) -> StateVariables:
        return self.parts[part]

    @property
    def variables(self) -> list:
        return [v for part in self.parts.values() for v in part.variables]


def controller_state(optimizer: Any, layers: int | None = None, create: bool = False) -> ControllerState | None:
    """The controller state of an optimizer (or of the one it wraps), created once if `create`."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    state = _STATES.get(optimizer)
    if state is None and create:
        state = _STATES[optimizer] = ControllerState(optimizer, layers)
    return state


# ------------------------------------------------------------ files of 0.2.0

#: The 17 scalars that release 0.2.0 kept, in its order, then (with the layer count) the pooled counts.
LEGACY_0_2_0 = (
    "anchor_step",
    "anchor_learning_rate",
    "drift",
    "min_learning_rate",
    "max_learning_rate",
    "sigma",
    "collapses",
    "loss_average",
    "loss_count",
    "loss_reference",
    "loss_minimum",
    "rise_learning_rate",
    "rise_z",
    "start_temperature",
    "pool_examples",
    "pool_batches",
    "pool_done",
)


def _from_0_2_0(old: dict) -> dict[str, dict]:
    """The 0.2.0 values by their meaning in the named state (its sentinels become `None`)."""
    sigma = old["sigma"] if old["sigma"] > 0 else None
    ceiling = old["max_learning_rate"]
    guarded = math.isfinite(ceiling) and ceiling < float(RANGE_LEARNING_RATES[-1])
    return {
        "rate": {k: old[k] for k in LEGACY_0_2_0[:5]},
        "sigma": {
            "sigma": sigma,
            "start_temperature": old["start_temperature"] if old["start_temperature"] > 0 else None,
            "ceiling": ceiling if guarded and sigma is not None and old["collapses"] == 0 else None,
            "pool_examples": old["pool_examples"],
            "pool_batches": old["pool_batches"],
            "pool_done": bool(old["pool_done"]),
            "pool_counts": old.get("pool_counts"),
        },
        "collapse": {
            "collapses": old["collapses"],
            "ceiling": ceiling if math.isfinite(ceiling) and old["collapses"] > 0 else None,
            **{k: None if math.isnan(old[k]) else old[k] for k in ("loss_average", "loss_reference", "loss_minimum")},
            "loss_count": old["loss_count"],
        },
        "runaway": {
            "rise_learning_rate": old["rise_learning_rate"] if old["rise_learning_rate"] > 0 else None,
            "rise_z": old["rise_z"],
        },
    }


def load_optimizer_variables(optimizer: Any, store: Any, rate: StateVariables, load: Any) -> None:
    """Load an optimizer's variables from a weights store: its own layout, or that of release 0.2.0.

    `load` is the optimizer's own `load_own_variables` (Keras': by position,
    all or nothing). A store of 0.2.0 holds the 17 scalars and the pooled
    counts where this layout holds the named state: its values are mapped
    onto the named fields, the variables before and after it by position.
    """
    variables = list(optimizer.variables)
    state = controller_state(optimizer)
    block = rate.variables + ([] if state is None else state.variables)
    ids = [id(v) for v in variables]
    if not block or id(block[0]) not in ids:
        return load(store)
    start = ids.index(id(block[0]))
    legacy = len(LEGACY_0_2_0) + (0 if state is None or "pool_counts" not in _names(state["sigma"]) else 1)
    if len(store.keys()) != len(variables) - len(block) + legacy or state is None:
        return load(store)
    old = {key: np.array(store[str(start + i)]).item() for i, key in enumerate(LEGACY_0_2_0)}
    if legacy > len(LEGACY_0_2_0):
        old["pool_counts"] = np.array(store[str(start + len(LEGACY_0_2_0))])
    for index, variable in enumerate(variables):
        if index < start:
            variable.assign(store[str(index)])
        elif index >= start + len(block):
            variable.assign(store[str(index - len(block) + legacy)])
    for part, values in _from_0_2_0(old).items():
        (rate if part == "rate" else state[part]).write(**values)


def _names(part: StateVariables) -> list[str]:
    return [v.name.removeprefix(f"actcoolr_{part.part}_") for v in part.variables]
