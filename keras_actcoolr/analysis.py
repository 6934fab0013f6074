"""Temperature against learning rate at the current state, and temperature over a whole data set.

Both tools take one optimizer step from the model's current state, at the
optimizer's current rate, and measure the trial step at each rate asked for:
that update scaled by `rate / current rate` (`engine.trial_weights`, the trial
step of `ActCooLR`'s analyses too; docs/method.md#the-trial-step). They put
every variable back afterwards (weights, optimizer slots and iterations,
batch-norm statistics, seed states): calling them changes nothing.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_actcoolr import engine, validation
from keras_actcoolr import temperature as T
from keras_actcoolr.layers import PatternCounter, measuring
from keras_actcoolr.models import require_apt_model
from keras_actcoolr.records import RangeAnalysis, fit_range

__all__ = ["RangeAnalysis", "fit_range", "lr_range_analysis", "measure_temperature"]


def _unpack(batch: Any) -> tuple[Any, Any, Any]:
    if isinstance(batch, (tuple, list)):
        return keras.utils.unpack_x_y_sample_weight(tuple(batch))
    return batch, None, None


def _iterate(data: Any, batch_size: int, batches: int | None) -> Iterator[tuple[Any, Any, Any]]:
    """Batches `(x, y, sample_weight)` of a `tf.data.Dataset` or of arrays `x` / `(x, y[, sw])`."""
    if isinstance(data, tf.data.Dataset):
        dataset = data
    elif isinstance(data, (tuple, list)):
        dataset = tf.data.Dataset.from_tensor_slices(tuple(data)).batch(batch_size)
    elif isinstance(data, (np.ndarray, tf.Tensor)):
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(batch_size)
    else:
        raise TypeError(
            "`data` must be a batched tf.data.Dataset, an array `x`, or a tuple `(x, y)` / "
            f"`(x, y, sample_weight)` of arrays. Received: data of type {type(data).__name__}"
        )
    if batches is not None:
        dataset = dataset.take(batches)
    for batch in dataset:
        yield _unpack(batch)


class _Runner:
    """The traced functions of the analyses for one model (traced once per input shape).

    `_step` takes one real step of the model's optimizer from the current
    state at its current rate; `_record` keeps the patterns of a measurement
    batch before the step; `_trial` then loops over the rates in the graph,
    each iteration counting the unchanged patterns of the trial step at its
    rate (`engine.trial_weights`, `engine.count_trials`).
    """

    def __init__(self, model: keras.Model) -> None:
        require_apt_model(model, "The range analysis")
        if getattr(model, "optimizer", None) is None:
            raise ValueError("The analyses take optimizer steps: compile the model first.")
        self.model = model
        self.optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        self.layers = model.apt_layers()
        self._step = tf.function(self._step_fn, reduce_retracing=True)
        self._record = tf.function(self._record_fn, reduce_retracing=True)
        self._trial = tf.function(self._trial_fn, reduce_retracing=True)

    # -- traced pieces

    def _training_kwargs(self) -> dict:
        return engine.training_kwargs(self.model, True)

    def _step_fn(self, x: Any, y: Any, sample_weight: Any) -> tuple:
        """`(rate, weights after)`: one step of the optimizer at its current rate, from the current state."""
        model = self.model
        rate = tf.cast(self.optimizer.learning_rate, tf.float64)  # before the step: the rate it takes
        with tf.GradientTape() as tape:
            y_pred = model(x, **self._training_kwargs())
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        gradients = tape.gradient(loss, model.trainable_variables)
        with tf.control_dependencies([rate]):
            self.optimizer.apply(gradients, model.trainable_variables)
        return rate, [tf.identity(v.value) for v in model.trainable_variables]

    def _record_fn(self, x: Any, weights: list, state: list) -> list:
        with measuring() as measurement:
            self.model.stateless_call(weights, state, x, **self._training_kwargs())
        return [measurement.patterns.get(id(layer), []) for layer in self.layers]

    def _trial_fn(
        self, x: Any, patterns: list, before: list, after: list, step_rate: tf.Tensor, state: list, rates: tf.Tensor
    ) -> tf.Tensor:
        """`[K, L, 4]` counts of the trial step at each rate of `rates`, the network traced once for all."""
        model = self.model
        steps = [w1 - w0 for w0, w1 in zip(before, after)]  # once, not once per rate

        def weights_at(k: tf.Tensor) -> list:
            return engine.trial_weights(before, steps, after, tf.gather(rates, k), step_rate)

        measurement = PatternCounter()
        measurement.patterns = {id(layer): list(calls) for layer, calls in zip(self.layers, patterns)}
        with measuring(measurement):
            return engine.count_trials(model, measurement, self.layers, tf.shape(rates)[0], weights_at, state, x)

    # -- eager driver

    def counts(
        self,
        learning_rates: Sequence[float],
        step_batch: tuple[Any, Any, Any],
        measure_batches: Iterable[tuple[Any, Any, Any]],
    ) -> tuple[np.ndarray, int, float]:
        """`(K, L, 4)` counts (those of `engine.count_patterns`) summed over the measurement batches, their number of examples, the step's rate."""
        model, optimizer = self.model, self.optimizer
        x, y, sample_weight = step_batch
        if y is None:
            raise ValueError("The batch of the optimizer step needs targets: give `(x, y)` batches.")
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        before = [tf.identity(v.value) for v in model.trainable_variables]
        state = [tf.identity(v.value) for v in model.non_trainable_variables]
        counts = np.zeros((len(learning_rates), len(self.layers), 4))
        rates = tf.constant(np.asarray(learning_rates, dtype=np.float64))
        examples = 0
        with engine.restoring(list(model.variables) + list(optimizer.variables)):
            step_rate, after = self._step(x, y, sample_weight)
            step_rate = float(step_rate)
            if not (math.isfinite(step_rate) and step_rate > 0):
                raise ValueError(
                    "The trial steps are the optimizer's step at its current learning rate, scaled to each "
                    "rate, and the current rate must be a positive finite number to scale it. Compile the "
                    f"model with a positive learning rate. Received: optimizer.learning_rate={step_rate!r}"
                )
            for mx, _, _ in measure_batches:
                patterns = self._record(mx, before, state)
                examples += int(tf.shape(tf.nest.flatten(mx)[0])[0])
                counts += np.asarray(
                    self._trial(mx, patterns, before, after, tf.constant(step_rate, tf.float64), state, rates),
                    dtype=np.float64,
                )
        return counts, examples, step_rate


#: One runner (its traced functions) per model, dropped with the model.
_RUNNERS: weakref.WeakKeyDictionary[keras.Model, _Runner] = weakref.WeakKeyDictionary()


def _runner(model: keras.Model) -> _Runner:
    runner = _RUNNERS.get(model)
    if runner is None:
        runner = _RUNNERS[model] = _Runner(model)
    return runner


def _layer_names(model: keras.Model) -> tuple[str, ...]:
    return tuple(engine.unique_names(layer.name for layer in model.apt_layers()))


def _step_and_measure_batches(
    data: Any, step_data: Any, batch_size: int, batches: int | None
) -> tuple[tuple[Any, Any, Any], Iterable[tuple[Any, Any, Any]]]:
    batch_size, batches = validation.batching(batch_size, batches)
    measure_batches = list(_iterate(data, batch_size, batches))
    if not measure_batches:
        raise ValueError("`data` has no batch to measure on.")
    step_batch = measure_batches[0] if step_data is None else next(_iterate(step_data, batch_size, 1))
    return step_batch, measure_batches


def lr_range_analysis(
    model: keras.Model,
    data: Any,
    learning_rates: Sequence[float] = T.RANGE_LEARNING_RATES,
    step_data: Any = None,
    batch_size: int = 32,
    batches: int | None = 1,
) -> RangeAnalysis:
    """Temperature of the trial step at each learning rate, from the model's current state.

    The model takes one step of its own optimizer (its slots and iterations
    as they are now) on the step batch at the optimizer's current rate `lr`.
    The trial step at rate `lr_k` is that update scaled by `lr_k / lr`:
    weights `w0 + (lr_k / lr) * (w1 - w0)` (`w1` itself at `lr_k == lr`), the
    definition of the analyses inside `fit` too. Where the update is
    proportional to the rate (PyTorch's SGD with or without momentum, the
    paper's setting; Adam) this is the optimizer's own step at `lr_k`; Keras'
    SGD with momentum adds `momentum * velocity` whatever the rate, and the
    trial step scales that part too (docs/method.md#the-trial-step). The
    patterns before and after each trial step are compared on the
    measurement batches, with the batch-norm and dropout state of now.
    Afterwards every variable of the model and the optimizer is put back, bit
    for bit. The network is traced once for all the rates: a loop inside the
    traced function measures one rate after the other (the engine of
    `ActCooLR`'s range analyses). Then the erf model is fitted to the network
    temperatures (supplementary Figure 3).

    Example:

    ```python
    result = keras_actcoolr.lr_range_analysis(model, (x_train, y_train), batches=8)
    result.sigma, result.mu, result.predicted_learning_rate(3.03)
    ```

    Args:
        model: A compiled `keras_actcoolr.APTModel`.
        data: Batched `tf.data.Dataset` of `(x, y)`, or arrays `(x, y)`.
        learning_rates: Rates to try: finite numbers >= 0. The erf model is
            fitted to the positive ones and needs at least 2 distinct
            positive rates; with fewer, a warning, and `sigma`, `mu` and
            `residual` are None (use `measure_temperature` for one rate).
            Defaults to `RANGE_LEARNING_RATES` (Table 1).
        step_data: Data whose first batch is the step's batch. Defaults to `None`
            (the first batch of `data`).
        batch_size: Integer >= 1, batch size for arrays. Defaults to `32`.
        batches: Integer >= 1, number of batches of `data` to measure on, or
            `None` for all. Defaults to `1`.

    Returns:
        A `keras_actcoolr.RangeAnalysis` with its erf fit (`sigma`, `mu`,
        `residual`, `group_sigma`, `group_mu`), `layer_names` and `examples`.

    Raises:
        ValueError: for empty or non-finite or negative `learning_rates`, a
            `batch_size` or `batches` that is not an integer >= 1, `data`
            without a batch (the message names the argument), or an optimizer
            whose current learning rate is not a positive finite number (the
            trial steps scale its step).
    """
    learning_rates = validation.range_learning_rates(learning_rates)
    step_batch, measure_batches = _step_and_measure_batches(data, step_data, batch_size, batches)
    counts, examples, _ = _runner(model).counts(learning_rates, step_batch, measure_batches)
    return RangeAnalysis(learning_rates, counts, layer_names=_layer_names(model), examples=examples).fitted()


def measure_temperature(
    model: keras.Model,
    data: Any,
    learning_rate: float | None = None,
    step_data: Any = None,
    batch_size: int = 32,
    batches: int | None = None,
) -> RangeAnalysis:
    """Temperature of one optimizer step, measured over many batches (a whole data set).

    The model takes one step at the optimizer's current rate on the first
    batch of `step_data` (default: of `data`); the step measured is the trial
    step at `learning_rate` (that update scaled by `learning_rate / current
    rate`, as in `lr_range_analysis`; the step itself when `learning_rate` is
    `None`). Then, batch
    by batch, the patterns with the weights before and after the step are
    computed just in time and compared, so the patterns of the whole data set
    are never held in memory (supplementary section H). Counts are summed over
    the batches. The model and optimizer state is put back afterwards.

    Example:

    ```python
    result = keras_actcoolr.measure_temperature(model, (x_train, y_train), learning_rate=0.1)
    result.temperature, result.layers
    ```

    Args:
        model: A compiled `keras_actcoolr.APTModel`.
        data: Batched `tf.data.Dataset`, arrays `x`, or `(x, y)`; keep the
            batch size constant (batch-norm uses batch statistics).
        learning_rate: Finite number >= 0 (Python or NumPy scalar), the rate
            of the step. Defaults to `None` (the optimizer's).
        step_data: Data whose first batch is the step's batch. Defaults to `None`.
        batch_size: Integer >= 1, batch size for arrays. Defaults to `32`.
        batches: Integer >= 1, number of batches of `data`, or `None` for all.
            Defaults to `None`.

    Returns:
        A `keras_actcoolr.RangeAnalysis` of the one rate: `learning_rate`,
        `temperature`, `examples`, the per-layer dictionaries `layers`,
        `unchanged` and `positions`, and the grouped counterparts
        `group_temperature`, `group_layers`, `group_unchanged`,
        `group_positions` (groups of `keras_actcoolr.layers.GROUP_CHANNELS`
        channels, see `keras_actcoolr.APTReLU`). It replaces the dict of
        earlier releases, whose keys it still reads (`result["temperature"]`,
        deprecated: read `result.temperature`).

    Raises:
        ValueError: for a `learning_rate` that is not a finite number >= 0,
            a `batch_size` or `batches` that is not an integer >= 1, `data`
            without a batch (the message names the argument), or an optimizer
            whose current learning rate is not a positive finite number (the
            trial step scales its step).
    """
    if learning_rate is None:
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            raise ValueError("measure_temperature takes an optimizer step: compile the model first.")
        learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    learning_rate = validation.non_negative("learning_rate", learning_rate)
    step_batch, measure_batches = _step_and_measure_batches(data, step_data, batch_size, batches)
    counts, examples, _ = _runner(model).counts([learning_rate], step_batch, measure_batches)
    return RangeAnalysis([learning_rate], counts, layer_names=_layer_names(model), examples=examples)
