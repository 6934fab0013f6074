"""The measured train step's graph: the Keras step, the pattern counts, the range analysis's trial steps.

`APTModel.measured_train_step` runs `measured_logs` inside a replica of
`tf.distribute` (or without one); the train function
(`keras_actcoolr.models.train_function`) reads the three entries it adds to
the logs and removes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_actcoolr import engine
from keras_actcoolr import temperature as T
from keras_actcoolr.layers import measuring

__all__ = ["COUNTS_KEY", "ESTIMATE", "LOSS_KEY", "MEASURE", "RANGE_KEY", "measured_logs"]

#: The trace modes of a measured step: counts only, or counts and the range analysis's trial steps.
MEASURE = "measure"
ESTIMATE = "estimate"

COUNTS_KEY = "apt_counts"
RANGE_KEY = "apt_range_counts"
LOSS_KEY = "apt_batch_loss"


def measured_logs(
    model: keras.Model, keras_train_step: Callable[[Any], dict], data: Any, mode: str, range_rates: tf.Variable
) -> dict:
    """The logs of `keras_train_step(data)` and the counts of the step, summed over replicas.

    Args:
        model: The `APTModel`.
        keras_train_step: Keras' own train step of the model.
        data: The batch.
        mode: `MEASURE` or `ESTIMATE` (also the range analysis, of as many
            rates as `range_rates` reads when the step runs).
        range_rates: Integer variable, 0 or the number of
            `temperature.RANGE_LEARNING_RATES`.
    """
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    estimate = mode == ESTIMATE
    layers = model.apt_layers()
    trainable = list(model.trainable_variables)
    state_before = [tf.identity(v.value) for v in model.non_trainable_variables]
    weights_before = [tf.identity(v.value) for v in trainable] if estimate else None
    step_lr = tf.cast(model.optimizer.learning_rate, tf.float64) if estimate else None
    loss_state = _loss_state(model)
    range_counts = None
    with measuring() as measurement:
        logs = dict(keras_train_step(data))
        # The measured batch's own loss: what the step added to the loss tracker (sum, count).
        batch_loss = (
            tf.stack([tf.cast(v.value, tf.float64) for v in loss_state[0]]) - loss_state[1]
            if loss_state
            else tf.zeros((2,), tf.float64)
        )
        weights_after = [tf.identity(v.value) for v in trainable]
        if estimate:
            trials = _range_trials(
                model, measurement, layers, (weights_before, weights_after, step_lr), state_before, x, range_rates
            )
            counts, range_counts = trials[0], trials[1:]
        else:
            counts = engine.count_patterns(model, measurement, layers, weights_after, state_before, x)
    alive = [measurement.layer_alive(layer) for layer in layers]
    return _summed(logs, counts, batch_loss, range_counts, alive)


def _summed(logs: dict, counts: Any, batch_loss: Any, range_counts: Any, alive: list) -> dict:
    """`logs` with the counts, the batch loss and the range counts, each summed over the replicas."""
    replica = tf.distribute.get_replica_context()
    # float64 like the counts: the all-reduce packs its tensors into one.
    alive = [tf.zeros((0,), tf.float64) if a is None else tf.cast(a, tf.float64) for a in alive]
    flat_alive = tf.concat(alive, axis=0) if alive else tf.zeros((0,), tf.float64)
    if range_counts is not None:
        counts, flat_alive, batch_loss, range_counts = replica.all_reduce(
            "sum", [counts, flat_alive, batch_loss, range_counts]
        )
        logs[RANGE_KEY] = range_counts
    else:
        counts, flat_alive, batch_loss = replica.all_reduce("sum", [counts, flat_alive, batch_loss])
    logs[LOSS_KEY] = batch_loss
    # (unchanged, positions, dead, channels, group unchanged, group positions) per layer.
    logs[COUNTS_KEY] = tf.concat([counts[:, :2], _dead_counts(flat_alive, alive), counts[:, 2:]], axis=1)
    return logs


def _range_trials(
    model: keras.Model, measurement: Any, layers: list, step: tuple, state: list, x: Any, range_rates: tf.Variable
) -> tf.Tensor:
    """`[1 + K, layers, 4]` counts: the step's own, then those of the range analysis's `K` rates.

    The columns are those of `engine.count_patterns` (whole-vector, then grouped).
    `step` is `(weights before, weights after, the step's rate)`.

    Trial 0 is the pass with the weights after the step. Trial `k > 0`
    is the trial step at the `k`-th rate of `RANGE_LEARNING_RATES`
    (`engine.trial_weights`, as `lr_range_analysis` takes it):
    `w0 + (lr_k / lr) * (w1 - w0)`. How many of the rates run is read from
    `range_rates` when the step runs (0 or all), so the one traced function
    serves the steps with and without a range analysis; rows of the rates
    that did not run are zeros.
    """
    weights_before, weights_after, step_lr = step
    rates = tf.constant(T.RANGE_LEARNING_RATES, tf.float64)
    # Few large tensors rather than one per weight: each tensor the loop reads is a loop variable.
    flat_before, _ = _flatten(weights_before)
    flat_after, unflatten = _flatten(weights_after)
    steps = [w1 - w0 for w0, w1 in zip(flat_before, flat_after)]  # once, not once per rate

    def weights_at(k: tf.Tensor) -> list:
        if not weights_after:
            return []

        def interpolated() -> list:
            return engine.trial_weights(flat_before, steps, flat_after, tf.gather(rates, k - 1), step_lr)

        return unflatten(tf.cond(tf.equal(k, 0), lambda: list(flat_after), interpolated))

    trials = 1 + range_rates.read_value()
    size = 1 + len(T.RANGE_LEARNING_RATES)
    return engine.count_trials(model, measurement, layers, trials, weights_at, state, x, size=size)


def _loss_state(model: keras.Model) -> tuple[list, tf.Tensor] | None:
    """The loss tracker's `(total, count)` variables and a copy of their values, or None.

    Keras tracks the training loss in a `Mean` metric named "loss" (the first of
    `model.metrics`; Keras has no public handle on it); the difference of its
    state across a step is that step's summed loss and example count.
    """
    tracker = next((m for m in model.metrics if m.name == "loss"), None)
    if tracker is None:
        return None
    variables = {v.name: v for v in tracker.variables}
    if set(variables) != {"total", "count"}:
        return None
    pair = [variables["total"], variables["count"]]
    return pair, tf.stack([tf.cast(v.value, tf.float64) for v in pair])


def _dead_counts(flat_alive: tf.Tensor, alive: list) -> tf.Tensor:
    """`[layers, 2]` float64 (dead channels, channels) from the replica-summed `alive` vectors.

    A channel is dead on a measured batch when no replica saw it on at any position.
    """
    if not alive:
        return tf.zeros((0, 2), tf.float64)
    sizes = [tf.shape(a)[0] for a in alive]
    parts = tf.split(flat_alive, tf.stack(sizes), num=len(alive)) if len(alive) > 1 else [flat_alive]
    rows = [
        tf.stack([tf.reduce_sum(tf.cast(part <= 0, tf.float64)), tf.cast(tf.size(part), tf.float64)]) for part in parts
    ]
    return tf.stack(rows)


def _flatten(tensors: list) -> tuple[list, Callable[[list], list]]:
    """One flat tensor per dtype of `tensors`, and the function that cuts such flat tensors back."""
    groups: dict[Any, list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault(tensor.dtype, []).append(index)
    order = list(groups.values())
    shapes = [tuple(tensor.shape) for tensor in tensors]
    flat_shape = tf.constant([-1])  # one constant for all (fewer ops to trace)
    flats = [tf.concat([tf.reshape(tensors[i], flat_shape) for i in indices], 0) for indices in order]

    def unflatten(values: list) -> list:
        constants = {shape: tf.constant(shape, tf.int32) for shape in set(shapes)}
        pieces: list = [None] * len(tensors)
        for indices, flat in zip(order, values):
            for i, piece in zip(indices, tf.split(flat, [int(np.prod(shapes[i])) for i in indices])):
                pieces[i] = tf.reshape(piece, constants[shapes[i]])
        return pieces

    return flats, unflatten
