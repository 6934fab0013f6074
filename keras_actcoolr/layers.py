"""`APTReLU`: a `keras.layers.ReLU` that can measure activation pattern temperature."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import keras
import tensorflow as tf

__all__ = ["APTReLU"]

# One measurement at a time per thread. Under `tf.distribute.MirroredStrategy`
# every replica traces its train step in a thread of its own, so a thread-local
# measurement is a per-replica measurement.
_local = threading.local()


class _Measurement:
    """Patterns recorded by the pass before the optimizer step, and counts of the passes after it."""

    def __init__(self) -> None:
        self.phase = "record"
        self.patterns: dict[int, list[tf.Tensor]] = {}
        self.counts: dict[int, list[tuple[tf.Tensor, tf.Tensor]]] = {}
        self._cursor: dict[int, int] = {}

    def record(self, layer: "APTReLU", pattern: tf.Tensor) -> None:
        self.patterns.setdefault(id(layer), []).append(pattern)

    def start_compare(self) -> None:
        self.phase = "compare"
        self.counts = {}
        self._cursor = {}

    def recorded(self, layer: "APTReLU") -> tf.Tensor:
        calls = self.patterns.get(id(layer), [])
        index = self._cursor.get(id(layer), 0)
        if index >= len(calls):
            raise RuntimeError(
                f"Layer '{layer.name}' was called more often after the optimizer step than before it."
            )
        self._cursor[id(layer)] = index + 1
        return calls[index]

    def add_counts(self, layer: "APTReLU", unchanged: tf.Tensor, positions: tf.Tensor) -> None:
        self.counts.setdefault(id(layer), []).append((unchanged, positions))

    def layer_counts(self, layer: "APTReLU") -> tuple[tf.Tensor, tf.Tensor]:
        """`(unchanged, positions)` of one layer summed over its calls, as float64 scalars."""
        calls = self.counts.get(id(layer), [])
        if not calls:
            zero = tf.constant(0.0, tf.float64)
            return zero, zero
        return tf.add_n([u for u, _ in calls]), tf.add_n([n for _, n in calls])


@contextlib.contextmanager
def measuring(measurement: _Measurement | None = None) -> Iterator[_Measurement]:
    """Within this context, `APTReLU` layers record patterns (then compare, see `_Measurement`)."""
    previous = getattr(_local, "measurement", None)
    measurement = _Measurement() if measurement is None else measurement
    _local.measurement = measurement
    try:
        yield measurement
    finally:
        _local.measurement = previous


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class APTReLU(keras.layers.ReLU):
    """ReLU layer that measures its activation pattern temperature.

    A drop-in replacement for `keras.layers.ReLU`: it outputs exactly what
    `keras.layers.ReLU` outputs with the same arguments. When an
    `keras_actcoolr.APTModel` measures, the layer compares the linear piece
    every unit sits on before and after one optimizer step, on the same
    batch. For one layer, with `U` the positions (example x spatial location)
    whose whole pattern vector along `axis` did not change out of `N`:

    ```python
    pattern = (z > threshold) + (z >= max_value)   # 0, 1 or 2
    T = -log2(max(U, 0.5) / N)
    ```

    Outside a measurement the layer costs what `keras.layers.ReLU` costs. The
    pattern of the pass before the step is kept as a `uint8` tensor (one
    byte per activation) only for the duration of the measured train step,
    per replica under `tf.distribute`.

    Reference: "ActCooLR: High-Level Learning Rate Schedules using
    Activation Pattern Temperature".

    Example:

    ```python
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3)(inputs)
    x = keras_actcoolr.APTReLU()(x)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    model = keras_actcoolr.APTModel(inputs, outputs)
    ```

    Args:
        max_value: Float >= 0. Maximum activation value. `None` means
            unlimited. Defaults to `None`.
        negative_slope: Float >= 0. Negative slope coefficient.
            Defaults to `0.0`.
        threshold: Float >= 0. Threshold value for thresholded activation.
            Defaults to `0.0`.
        axis: Integer, the channel axis: positions whose whole vector of
            patterns along this axis is unchanged count as unchanged.
            Defaults to `-1` (channels last).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: A tensor of rank >= 2 (batch first).
    """

    def __init__(
        self,
        max_value: float | None = None,
        negative_slope: float = 0.0,
        threshold: float = 0.0,
        axis: int = -1,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_value=max_value, negative_slope=negative_slope, threshold=threshold, **kwargs)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ValueError(f"`axis` must be an integer. Received: axis={axis}")
        self.axis = axis

    def build(self, input_shape: tuple) -> None:
        rank = len(input_shape)
        if rank < 2:
            raise ValueError(
                f"APTReLU needs inputs of rank >= 2 (batch and channels). Received: input_shape={input_shape}"
            )
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(
                f"`axis` must name a non-batch axis of the input of rank {rank}. Received: axis={self.axis}"
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        outputs = super().call(inputs)
        measurement = getattr(_local, "measurement", None)
        if measurement is not None:
            pattern = self._pattern(inputs)
            if measurement.phase == "record":
                measurement.record(self, pattern)
            else:
                before = measurement.recorded(self)
                unchanged = tf.reduce_all(tf.equal(before, pattern), axis=self.axis)
                positions = tf.cast(tf.size(unchanged), tf.float64)
                measurement.add_counts(
                    self, tf.reduce_sum(tf.cast(unchanged, tf.float64)), positions
                )
        return outputs

    def _pattern(self, inputs: tf.Tensor) -> tf.Tensor:
        """Index of the linear piece every unit sits on, as `uint8`."""
        inputs = tf.stop_gradient(tf.convert_to_tensor(inputs))
        pattern = tf.cast(inputs > tf.cast(self.threshold, inputs.dtype), tf.uint8)
        if self.max_value is not None:
            pattern += tf.cast(inputs >= tf.cast(self.max_value, inputs.dtype), tf.uint8)
        return pattern

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"axis": self.axis})
        return config
