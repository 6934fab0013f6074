"""`APTReLU`: a `keras.layers.ReLU` that can measure activation pattern temperature."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from keras_actcoolr import validation

__all__ = ["APTReLU"]

# One measurement at a time per thread. Under `tf.distribute.MirroredStrategy`
# every replica traces its train step in a thread of its own, so a thread-local
# measurement is a per-replica measurement.
_local = threading.local()


class PatternCounter:
    """Patterns recorded by the pass before the optimizer step, and counts of the passes after it."""

    def __init__(self) -> None:
        self.phase = "record"
        self.patterns: dict[int, list[tf.Tensor]] = {}
        self.alive: dict[int, tf.Tensor] = {}
        self.counts: dict[int, list[tuple[tf.Tensor, ...]]] = {}
        self._cursor: dict[int, int] = {}

    def record(self, layer: APTReLU, pattern: tf.Tensor, alive: tf.Tensor) -> None:
        self.patterns.setdefault(id(layer), []).append(pattern)
        previous = self.alive.get(id(layer))
        self.alive[id(layer)] = alive if previous is None else tf.maximum(previous, alive)

    def layer_alive(self, layer: APTReLU) -> tf.Tensor | None:
        """`[channels]` float32: 1 where the channel was on at some position before the step."""
        return self.alive.get(id(layer))

    def start_compare(self) -> None:
        self.phase = "compare"
        self.counts = {}
        self._cursor = {}

    def recorded(self, layer: APTReLU) -> tf.Tensor:
        calls = self.patterns.get(id(layer), [])
        index = self._cursor.get(id(layer), 0)
        if index >= len(calls):
            raise RuntimeError(f"Layer '{layer.name}' was called more often after the optimizer step than before it.")
        self._cursor[id(layer)] = index + 1
        return calls[index]

    def add_counts(
        self,
        layer: APTReLU,
        unchanged: tf.Tensor,
        positions: tf.Tensor,
        group_unchanged: tf.Tensor,
        group_positions: tf.Tensor,
    ) -> None:
        self.counts.setdefault(id(layer), []).append((unchanged, positions, group_unchanged, group_positions))

    def layer_counts(self, layer: APTReLU) -> tuple[tf.Tensor, tf.Tensor]:
        """`(unchanged, positions)` of one layer summed over its calls, as float64 scalars."""
        return self._summed(layer, 0), self._summed(layer, 1)

    def group_counts(self, layer: APTReLU) -> tuple[tf.Tensor, tf.Tensor]:
        """`(unchanged group positions, group positions)` of one layer summed over its calls (float64)."""
        return self._summed(layer, 2), self._summed(layer, 3)

    def _summed(self, layer: APTReLU, column: int) -> tf.Tensor:
        calls = self.counts.get(id(layer), [])
        if not calls:
            return tf.constant(0.0, tf.float64)
        return tf.add_n([call[column] for call in calls])


#: Channels per group of the grouped measurement: one packed byte (see `APTReLU`).
GROUP_CHANNELS = 8

# Eight bytes that are each 0 or 1, read as one uint64 word and multiplied by this constant,
# put their eight bits in the top byte of the product, each in a place of its own and without
# carries: a bijection of the 256 byte patterns on either byte order (numpy.packbits's bit order
# on little-endian machines; tests/test_performance.py checks all 256).
_PACK_MULTIPLIER = 0x8040201008040201


def _packed_bytes(bits: int | None) -> int | None:
    """Bytes per position for `bits` bits: 1, 2, 4 or a multiple of 8, so that they form whole words."""
    if bits is None:
        return None
    needed = -(-bits // 8)
    return next(size for size in (1, 2, 4) if needed <= size) if needed <= 4 else 8 * -(-needed // 8)


def _pack_bits(bits: tf.Tensor) -> tf.Tensor:
    """`[..., channels]` zeros and ones (`uint8`) to `[..., bytes]` `uint8`, eight channels to a byte."""
    size = _packed_bytes(bits.shape[-1])
    if size is None:  # Channels unknown when traced: pad to whole 8-byte words.
        padding = tf.math.floormod(-tf.shape(bits)[-1], 64)
    else:
        padding = 8 * size - bits.shape[-1]
    if size is None or padding:
        bits = tf.pad(bits, [[0, 0]] * (bits.shape.rank - 1) + [[0, padding]])
    octets = tf.reshape(bits, tf.concat([tf.shape(bits)[:-1], [-1 if size is None else size, 8]], axis=0))
    words = tf.bitcast(octets, tf.uint64)
    top_bytes = tf.bitwise.right_shift(words * tf.constant(_PACK_MULTIPLIER, tf.uint64), tf.constant(56, tf.uint64))
    return tf.cast(top_bytes, tf.uint8)


def _unchanged(before: tf.Tensor, after: tf.Tensor) -> tf.Tensor:
    """Whether each position's packed pattern is the same, compared one machine word at a time."""
    size = before.shape[-1]
    if size in (1, 2, 4, 8):
        word = {1: None, 2: tf.uint16, 4: tf.uint32, 8: tf.uint64}[size]
        view = (lambda p: tf.squeeze(p, -1)) if word is None else (lambda p: tf.bitcast(p, word))
        return tf.equal(view(before), view(after))
    words = [tf.bitcast(tf.reshape(p, tf.concat([tf.shape(p)[:-1], [-1, 8]], 0)), tf.uint64) for p in (before, after)]
    return tf.reduce_all(tf.equal(*words), axis=-1)


def _groups_unchanged(before: tf.Tensor, after: tf.Tensor, groups: Any, planes: int) -> tf.Tensor:
    """`[positions..., groups]` bool: whether each group of `GROUP_CHANNELS` channels kept its pattern.

    A packed byte holds one group of one bit-plane. With `planes == 2` the
    bytes are the two planes one after the other (each padded to the same
    size): a group is unchanged when its byte is equal in both. The padding
    bytes after the first `groups` bytes of a plane are left out.
    """
    equal = tf.equal(before, after)
    if planes == 2:
        size = before.shape[-1] // 2 if before.shape[-1] is not None else tf.shape(before)[-1] // 2
        equal = tf.logical_and(equal[..., :size], equal[..., size:])
    return equal[..., :groups]


@contextlib.contextmanager
def measuring(measurement: PatternCounter | None = None) -> Iterator[PatternCounter]:
    """Within this context, `APTReLU` layers record patterns (then compare, see `PatternCounter`)."""
    previous = getattr(_local, "measurement", None)
    measurement = PatternCounter() if measurement is None else measurement
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

    Besides this whole-vector count (the paper's), the layer counts the same
    on groups of `GROUP_CHANNELS = 8` consecutive channels along `axis`: a
    *group position* is (example, spatial location, group), unchanged when
    the patterns of its (up to) 8 channels are; with `U_g` unchanged out of
    `N_g = N * ceil(C / 8)`, the grouped temperature is
    `T_g = -log2(max(U_g, 0.5) / N_g)`. It equals `T` for `C <= 8` and,
    unlike `T`, does not saturate on wide layers with few positions (a
    1280-channel layer at 1x1, batch 16, has `N = 16`): see
    `docs/method.md#wide-layers-the-grouped-measurement`. Both counts come
    from the same comparison of the packed patterns (one byte is one group).

    Outside a measurement the layer costs what `keras.layers.ReLU` costs. The
    pattern of the pass before the step is kept packed along `axis`, eight
    channels to a `uint8` byte (one bit per activation; two with
    `max_value`, which adds the piece `z >= max_value`), only for the
    duration of the measured train step, per replica under `tf.distribute`.

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
        self.axis = validation.integer("axis", axis, minimum=None)

    def build(self, input_shape: tuple) -> None:
        rank = len(input_shape)
        if rank < 2:
            raise ValueError(
                f"APTReLU needs inputs of rank >= 2 (batch and channels). Received: input_shape={input_shape!r}"
            )
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(
                f"`axis` must name a non-batch axis of the input of rank {rank}. Received: axis={self.axis!r}"
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        outputs = super().call(inputs)
        measurement = getattr(_local, "measurement", None)
        if measurement is not None:
            pattern = self._pattern(inputs)
            if measurement.phase == "record":
                measurement.record(self, pattern, self._alive(inputs))
            else:
                recorded = measurement.recorded(self)
                unchanged = _unchanged(recorded, pattern)
                positions = tf.cast(tf.size(unchanged), tf.float64)
                groups_unchanged = _groups_unchanged(
                    recorded, pattern, self._groups(inputs), 1 if self.max_value is None else 2
                )
                measurement.add_counts(
                    self,
                    tf.reduce_sum(tf.cast(unchanged, tf.float64)),
                    positions,
                    tf.reduce_sum(tf.cast(groups_unchanged, tf.float64)),
                    tf.cast(tf.size(groups_unchanged), tf.float64),
                )
        return outputs

    def _alive(self, inputs: tf.Tensor) -> tf.Tensor:
        """`[channels]` float32: 1 for a channel on (above the threshold) at some position, else 0."""
        inputs = tf.stop_gradient(tf.convert_to_tensor(inputs))
        rank = inputs.shape.rank
        axis = self.axis % rank
        on = inputs > tf.cast(self.threshold, inputs.dtype)
        return tf.cast(tf.reduce_any(on, axis=[d for d in range(rank) if d != axis]), tf.float32)

    def _groups(self, inputs: Any) -> Any:
        """`ceil(channels / GROUP_CHANNELS)`: the groups of one position (a tensor if unknown when traced)."""
        inputs = tf.convert_to_tensor(inputs)
        channels = inputs.shape[self.axis]
        if channels is None:
            channels = tf.shape(inputs)[self.axis % inputs.shape.rank]
        return -(-channels // GROUP_CHANNELS)

    def _pattern(self, inputs: tf.Tensor) -> tf.Tensor:
        """The linear piece of every unit, packed along `axis`: `uint8`, shape `[positions..., bytes]`.

        Byte `g` holds channels `8g .. 8g+7` (group `g`). With `max_value` the
        two bit-planes are packed separately, each padded to whole words, and
        put one after the other: byte `g` of either plane is group `g`.
        """
        inputs = tf.stop_gradient(tf.convert_to_tensor(inputs))
        planes = [inputs > tf.cast(self.threshold, inputs.dtype)]
        if self.max_value is not None:
            # Equal pairs (z > threshold, z >= max_value) are equal piece indices (their sum), and
            # conversely: (1, 0) and (0, 1) cannot both occur for one layer's threshold and max_value.
            planes.append(inputs >= tf.cast(self.max_value, inputs.dtype))
        rank = inputs.shape.rank
        axis = self.axis % rank
        if axis != rank - 1:
            planes = [tf.transpose(bits, [d for d in range(rank) if d != axis] + [axis]) for bits in planes]
        packed = [_pack_bits(tf.cast(bits, tf.uint8)) for bits in planes]
        return packed[0] if len(packed) == 1 else tf.concat(packed, axis=-1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"axis": self.axis})
        return config
