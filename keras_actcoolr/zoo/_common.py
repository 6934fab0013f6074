"""Building blocks shared by the networks of `keras_actcoolr.zoo`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from keras_actcoolr import validation
from keras_actcoolr.layers import APTReLU


def conv_initializer() -> keras.initializers.Initializer:
    """He et al.'s normal initialisation with the fan-out (as torchvision's ResNets and Han et al.'s PyramidNet)."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def conv(
    filters: int, kernel_size: int, strides: int = 1, name: str | None = None, **kwargs: Any
) -> keras.layers.Conv2D:
    """A bias-free convolution with "same" padding (the convolution of PyTorch's CIFAR ResNets)."""
    kwargs.setdefault("use_bias", False)
    kwargs.setdefault("kernel_initializer", conv_initializer())
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", name=name, **kwargs)


def batch_norm(name: str | None = None) -> keras.layers.BatchNormalization:
    """Batch normalisation with PyTorch's defaults (momentum 0.1 there is 0.9 here, epsilon 1e-5)."""
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def relu(name: str) -> APTReLU:
    return APTReLU(name=name)


def classifier(x: Any, num_classes: int, name: str = "logits", **kwargs: Any) -> Any:
    """Global average pooling and a linear layer: logits, no softmax."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(num_classes, name=name, **kwargs)(x)


def check_input(input_shape: Sequence[int], num_classes: int, min_size: int = 1) -> tuple[int, ...]:
    try:
        shape = tuple(validation.integer_at_least_one("input_shape", d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape!r}")
    if shape[0] < min_size or shape[1] < min_size:
        raise ValueError(
            f"This network needs inputs of at least {min_size}x{min_size}. Received: input_shape={input_shape!r}"
        )
    validation.integer_at_least_one("num_classes", num_classes)
    return shape
