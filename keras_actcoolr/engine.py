"""The pattern-counting engine shared by the measured train step and the analysis tools.

`APTModel`'s measured step (`keras_actcoolr.models`) and `lr_range_analysis` /
`measure_temperature` (`keras_actcoolr.analysis`) count unchanged activation
patterns with the functions here: one pass of the network with given weights
(`count_patterns`), and one pass per trial of a range analysis, the network
traced once into a `tf.while_loop` (`count_trials`). This module is internal:
its names are not part of the package's public API, but they are public to
the package's modules, so none of them reaches into another's private names.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import keras
import tensorflow as tf

__all__ = [
    "accepts_training",
    "count_patterns",
    "count_trials",
    "restoring",
    "training_kwargs",
    "trial_weights",
    "unique_names",
]


def accepts_training(call: Callable) -> bool:
    """Whether a model's `call` takes a `training` argument (or `**kwargs`)."""
    parameters = inspect.signature(call).parameters
    return "training" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def training_kwargs(model: keras.Model, training: bool = False) -> dict:
    """`{"training": training}` for models whose `call` takes it, else `{}`."""
    return {"training": training} if accepts_training(model.call) else {}


def unique_names(names: Iterable[str]) -> list[str]:
    """Names made unique by suffixes `_1`, `_2`, ... on repeats (the record keys of the layers)."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


@contextlib.contextmanager
def restoring(variables: list) -> Iterator[None]:
    """Put `variables` back to their values of now when the block ends, whatever way it ends."""
    saved = [tf.identity(v.value) for v in variables]
    try:
        yield
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)


def trial_weights(before: list, steps: list, after: list, rate: tf.Tensor, step_rate: tf.Tensor) -> list:
    """The weights of the trial step at `rate`: the one definition of both range-analysis engines.

    `before` are the weights `w0` of the current state, `after` the weights
    `w1` after one real step of the model's optimizer from that state at its
    current rate `step_rate`, and `steps` the differences `w1 - w0`. The trial
    step at `rate` is that update scaled by `rate / step_rate`:

        w0 + (rate / step_rate) * (w1 - w0)

    (the ratio taken in float64, then rounded to the weights' dtype), and `w1`
    itself when `rate == step_rate`. Where the optimizer's update is
    proportional to the rate (PyTorch's SGD with or without momentum, the
    paper's setting; Adam), this is the optimizer's own step at `rate`; Keras'
    SGD with momentum adds `momentum * velocity` whatever the rate, and the
    trial scales that part too (see docs/method.md).
    """
    ratio = tf.cast(rate, tf.float64) / tf.cast(step_rate, tf.float64)

    def scaled() -> list:
        return [w0 + tf.cast(ratio, w0.dtype) * step for w0, step in zip(before, steps)]

    if not before:
        return []
    return tf.cond(tf.equal(ratio, 1.0), lambda: list(after), scaled)


def count_patterns(model: keras.Model, measurement: Any, layers: list, weights: list, state: list, x: Any) -> tf.Tensor:
    """`[layers, 4]` float64 counts of a pass with `weights` and `state`.

    The columns are (unchanged positions, positions, unchanged group
    positions, group positions): the whole-vector and the grouped counts of
    every `APTReLU` (see `keras_actcoolr.APTReLU`).

    `measurement` (a `keras_actcoolr.layers.PatternCounter` holding the
    patterns recorded before) is switched to comparing; the pass runs in
    training mode, as the measured step did.
    """
    measurement.start_compare()
    model.stateless_call(weights, state, x, **training_kwargs(model, True))
    rows = [tf.stack(measurement.layer_counts(layer) + measurement.group_counts(layer)) for layer in layers]
    return tf.stack(rows) if rows else tf.zeros((0, 4), tf.float64)


def count_trials(
    model: keras.Model,
    measurement: Any,
    layers: list,
    trials: Any,
    weights_at: Callable[[tf.Tensor], list],
    state: list,
    x: Any,
    size: int | None = None,
) -> tf.Tensor:
    """`[trials, layers, 4]` float64 counts (those of `count_patterns`) of passes compared with the patterns in `measurement`.

    The range-analysis engine of the train step and of `keras_actcoolr.analysis`:
    trial `k` runs the network on `x` with the weights `weights_at(k)` and the
    non-trainable `state`, and counts per layer the positions whose pattern
    equals the recorded one. The network is traced once, into the body of a
    `tf.while_loop` that runs the trials one after the other
    (`parallel_iterations=1`: one pass's activations in memory at a time; a
    trial starts when the previous one has counted, so `weights_at` may assign
    variables). `size`, when given, is the static number of rows (trials past
    `trials` leave rows of zeros), as XLA needs.
    """
    shape = (size, len(layers), 4) if size is not None else tf.stack([trials, len(layers), 4])
    counts = tf.zeros(shape, tf.float64)

    def body(k: tf.Tensor, counts: tf.Tensor) -> tuple:
        with tf.control_dependencies([counts]):
            weights = weights_at(k)
        row = count_patterns(model, measurement, layers, weights, state, x)
        return k + 1, tf.tensor_scatter_nd_update(counts, tf.reshape(k, (1, 1)), row[tf.newaxis])

    _, counts = tf.while_loop(lambda k, _: k < trials, body, (tf.constant(0), counts), parallel_iterations=1)
    return counts
