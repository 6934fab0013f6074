"""Checks of constructor arguments, shared by the callbacks and schedules (Keras-style errors)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from keras_actcoolr import messages

__all__ = ["batching", "integer_at_least_one", "positive", "range_learning_rates", "real_in"]


def integer_at_least_one(value: Any, name: str, allow_none: bool = False) -> int | None:
    """`value` as an int >= 1 (or None when `allow_none`), or a ValueError naming `name`."""
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        none = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be an integer >= 1{none}. Received: {name}={value!r}")
    return int(value)


def positive(name: str, value: Any) -> float:
    """`value` as a positive finite float, or a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")
    return float(value)


def real_in(name: str, value: Any, low: float, high: float, low_open: bool = True, high_open: bool = True) -> float:
    """`value` as a float inside `(low, high)` (bounds closed where told), or a ValueError."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"`{name}` must be a number in {interval}. Received: {name}={value!r}")
    return float(value)


def batching(batch_size: Any, batches: Any) -> tuple[int, int | None]:
    """`(batch_size, batches)` of the analyses, validated (ValueErrors naming the argument)."""
    return (
        integer_at_least_one(batch_size, "batch_size"),
        integer_at_least_one(batches, "batches", allow_none=True),
    )


def range_learning_rates(learning_rates: Any) -> np.ndarray:
    """The rates of a range analysis as a 1-D float64 array; a warning when the erf model cannot be fitted."""
    try:
        rates = np.asarray(learning_rates, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        rates = None
    if rates is None or rates.size == 0 or np.any(~np.isfinite(rates)) or np.any(rates < 0):
        raise ValueError(
            f"`learning_rates` must be finite and >= 0, and not empty. Received: learning_rates={learning_rates!r}"
        )
    positive = np.unique(rates[rates > 0]).size
    if positive < 2:
        messages.warn(
            f"`learning_rates` holds {positive} distinct positive rate(s): fitting the erf model needs at least 2, "
            "so the analysis' `sigma`, `mu` and `residual` are None. Use `measure_temperature` for a single "
            f"rate. Received: learning_rates={learning_rates!r}",
            stacklevel=3,
        )
    return rates
