"""Checks of arguments, shared by every public constructor and function (Keras-style errors).

Every check takes `(name, value, ...)` in that order and returns the value in
its canonical type, or raises a `ValueError` that names the argument and the
received value: "`every_step` must be an integer >= 1. Received: every_step=0".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from keras_actcoolr import messages

__all__ = [
    "batching",
    "boolean",
    "callable_or_none",
    "integer",
    "integer_at_least_one",
    "non_negative",
    "one_of",
    "positive",
    "range_learning_rates",
    "real_in",
]


def _fail(name: str, requirement: str, value: Any, allow_none: bool = False) -> None:
    none = " or None" if allow_none else ""
    raise ValueError(f"`{name}` must be {requirement}{none}. Received: {name}={value!r}")


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def integer(
    name: str, value: Any, minimum: int | None = 1, maximum: int | None = None, allow_none: bool = False
) -> int | None:
    """`value` as an int in `[minimum, maximum]` (or None when `allow_none`), or a ValueError naming `name`.

    `minimum=None` (with `maximum=None`): any integer.
    """
    if allow_none and value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        if minimum is None:
            bound = "" if maximum is None else f" <= {maximum}"
        else:
            bound = f" >= {minimum}" if maximum is None else f" in [{minimum}, {maximum}]"
        _fail(name, f"an integer{bound}", value, allow_none)
    return int(value)


def integer_at_least_one(name: str, value: Any, allow_none: bool = False) -> int | None:
    """`value` as an int >= 1 (or None when `allow_none`), or a ValueError naming `name`."""
    return integer(name, value, 1, allow_none=allow_none)


def positive(name: str, value: Any, allow_none: bool = False) -> float | None:
    """`value` as a positive finite float (or None when `allow_none`), or a ValueError naming `name`."""
    if allow_none and value is None:
        return None
    if not (_is_real(value) and value > 0):
        _fail(name, "a positive finite number", value, allow_none)
    return float(value)


def non_negative(name: str, value: Any, allow_none: bool = False) -> float | None:
    """`value` as a finite float >= 0 (or None when `allow_none`), or a ValueError naming `name`."""
    if allow_none and value is None:
        return None
    if not (_is_real(value) and value >= 0):
        _fail(name, "a finite number >= 0", value, allow_none)
    return float(value)


def real_in(
    name: str,
    value: Any,
    low: float,
    high: float,
    low_open: bool = True,
    high_open: bool = True,
    allow_none: bool = False,
) -> float | None:
    """`value` as a float inside `(low, high)` (bounds closed where told), or a ValueError naming `name`."""
    if allow_none and value is None:
        return None
    ok = _is_real(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        _fail(name, f"a number in {interval}", value, allow_none)
    return float(value)


def boolean(name: str, value: Any) -> bool:
    """`value` if it is a bool (not merely truthy), or a ValueError naming `name`."""
    if not isinstance(value, (bool, np.bool_)):
        _fail(name, "a boolean (True or False)", value)
    return bool(value)


def one_of(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """`value` if it is one of `choices`, or a ValueError naming `name` and the choices."""
    choices = tuple(choices)
    if isinstance(value, (list, dict, set)) or value not in choices:
        _fail(name, f"one of {', '.join(map(repr, choices))}", value)
    return value


def callable_or_none(name: str, value: Any, signature: str) -> Callable | None:
    """`value` if it is callable or None, or a ValueError naming `name` and the expected `signature`."""
    if value is not None and not callable(value):
        _fail(name, f"a callable `{signature}`", value, allow_none=True)
    return value


def batching(batch_size: Any, batches: Any) -> tuple[int, int | None]:
    """`(batch_size, batches)` of the analyses, validated (ValueErrors naming the argument)."""
    return (
        integer_at_least_one("batch_size", batch_size),
        integer_at_least_one("batches", batches, allow_none=True),
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
