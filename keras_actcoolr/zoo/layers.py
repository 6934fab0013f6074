"""Small parameter-free or scalar layers that the paper's networks need."""

from __future__ import annotations

from typing import Any

import keras

from keras_actcoolr import validation

__all__ = ["ChannelZeroPadding", "ScalarBias", "ScalarScale"]


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class ChannelZeroPadding(keras.layers.Layer):
    """Appends zero channels on both sides of the last axis (channels last).

    The parameter-free "option A" shortcut of He et al. (2016) for CIFAR
    ResNets, and the shortcut of PyramidNet (Han et al., 2017), both pad the
    identity with zero channels when the residual branch is wider:

    ```python
    outputs = concatenate([zeros(..., before), inputs, zeros(..., after)], axis=-1)
    ```

    Example:

    ```python
    x = keras.Input((8, 8, 16))
    y = keras_actcoolr.zoo.ChannelZeroPadding(8, 8)(x)   # (None, 8, 8, 32)
    ```

    Args:
        before: Integer >= 0, zero channels put before the input's.
            Defaults to `0`.
        after: Integer >= 0, zero channels put after the input's.
            Defaults to `0`.
        **kwargs: Base layer keyword arguments, such as `name`.
    """

    def __init__(self, before: int = 0, after: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.before = validation.integer("before", before, minimum=0)
        self.after = validation.integer("after", after, minimum=0)

    def call(self, inputs: Any) -> Any:
        rank = len(inputs.shape)
        return keras.ops.pad(inputs, [[0, 0]] * (rank - 1) + [[self.before, self.after]])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        channels = input_shape[-1]
        return (*input_shape[:-1], None if channels is None else channels + self.before + self.after)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"before": self.before, "after": self.after})
        return config


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class ScalarBias(keras.layers.Layer):
    """Adds one trainable scalar to its input (Fixup's scalar bias).

    ```python
    outputs = inputs + bias      # bias initialised to 0
    ```

    Reference: H. Zhang, Y. N. Dauphin, T. Ma, "Fixup Initialization:
    Residual Learning Without Normalization", ICLR 2019.

    Example:

    ```python
    y = keras_actcoolr.zoo.ScalarBias()(keras.Input((8, 8, 16)))
    ```

    Args:
        **kwargs: Base layer keyword arguments, such as `name`.
    """

    def build(self, input_shape: tuple) -> None:
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    def call(self, inputs: Any) -> Any:
        return inputs + keras.ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class ScalarScale(keras.layers.Layer):
    """Multiplies its input by one trainable scalar (Fixup's multiplier).

    ```python
    outputs = inputs * scale     # scale initialised to 1
    ```

    Reference: H. Zhang, Y. N. Dauphin, T. Ma, "Fixup Initialization:
    Residual Learning Without Normalization", ICLR 2019.

    Example:

    ```python
    y = keras_actcoolr.zoo.ScalarScale()(keras.Input((8, 8, 16)))
    ```

    Args:
        **kwargs: Base layer keyword arguments, such as `name`.
    """

    def build(self, input_shape: tuple) -> None:
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, inputs: Any) -> Any:
        return inputs * keras.ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape
