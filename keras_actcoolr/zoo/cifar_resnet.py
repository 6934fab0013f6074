"""CIFAR ResNets of He et al. (2016) and the ResNet-32 variants of supplementary Figure 1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from keras_actcoolr import validation
from keras_actcoolr.models import APTModel
from keras_actcoolr.zoo._common import batch_norm, check_input, classifier, conv, relu
from keras_actcoolr.zoo.layers import ChannelZeroPadding, ScalarBias, ScalarScale

__all__ = [
    "cifar_resnet",
    "resnet20",
    "resnet32",
    "resnet32_fixup",
    "resnet32_no_shortcut",
    "resnet56",
    "resnet110",
]

_VARIANTS = ("standard", "fixup", "no_shortcut")
_WIDTHS = (16, 32, 64)


def _option_a_shortcut(x: Any, filters: int, strides: int, name: str) -> Any:
    """He et al.'s option A: subsample by `strides`, pad the new channels with zeros (no parameters)."""
    if strides > 1:
        x = keras.layers.AveragePooling2D(pool_size=1, strides=strides, name=f"{name}_subsample")(x)
    extra = filters - x.shape[-1]
    if extra > 0:
        x = ChannelZeroPadding(extra // 2, extra - extra // 2, name=f"{name}_pad")(x)
    return x


def _basic_block(x: Any, filters: int, strides: int, name: str, shortcut: bool) -> Any:
    y = conv(filters, 3, strides, name=f"{name}_conv1")(x)
    y = batch_norm(f"{name}_bn1")(y)
    y = relu(f"{name}_relu1")(y)
    y = conv(filters, 3, name=f"{name}_conv2")(y)
    y = batch_norm(f"{name}_bn2")(y)
    if shortcut:
        y = keras.layers.Add(name=f"{name}_add")([y, _option_a_shortcut(x, filters, strides, name)])
    return relu(f"{name}_relu2")(y)


def _fixup_block(x: Any, filters: int, strides: int, name: str, branches: int) -> Any:
    # Zhang et al. (2019), Fixup for CIFAR ResNets: scalar biases before each
    # convolution and activation, a scalar multiplier, the first convolution of
    # the branch scaled by branches ** -1/2 (m = 2 layers per branch), the last one zero.
    first = keras.initializers.VarianceScaling(2.0 / branches, mode="fan_out", distribution="untruncated_normal")
    shifted = ScalarBias(name=f"{name}_bias1a")(x)
    y = conv(filters, 3, strides, name=f"{name}_conv1", kernel_initializer=first)(shifted)
    y = ScalarBias(name=f"{name}_bias1b")(y)
    y = relu(f"{name}_relu1")(y)
    y = ScalarBias(name=f"{name}_bias2a")(y)
    y = conv(filters, 3, name=f"{name}_conv2", kernel_initializer="zeros")(y)
    y = ScalarScale(name=f"{name}_scale")(y)
    y = ScalarBias(name=f"{name}_bias2b")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, _option_a_shortcut(shifted, filters, strides, name)])
    return relu(f"{name}_relu2")(y)


def cifar_resnet(
    depth: int,
    variant: str = "standard",
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    name: str | None = None,
) -> APTModel:
    """A CIFAR ResNet of He et al. (2016), depth `6n + 2`, with `APTReLU` activations.

    A 3x3 convolution with 16 filters, three stages of `n` basic blocks
    (two 3x3 convolutions with batch-norm) with 16, 32 and 64 filters on
    32x32, 16x16 and 8x8 maps, global average pooling and a linear layer
    (logits). Shortcuts are option A of the paper (identity, subsampled and
    padded with zero channels where the shape changes): the networks have no
    shortcut parameters, as in He et al.'s CIFAR experiments. Every ReLU is a
    `keras_actcoolr.APTReLU` named `stage{s}_block{b}_relu{1,2}` (and `stem_relu`).

    Published parameter counts (He et al., "Deep Residual Learning for Image
    Recognition", CVPR 2016, Table 6): ResNet-20 0.27M, ResNet-32 0.46M,
    ResNet-44 0.66M, ResNet-56 0.85M, ResNet-110 1.7M. They count the
    trainable parameters (convolutions, batch-norm scales and offsets, the
    linear layer), not batch-norm's moving statistics: compare them with
    `sum(w.size for w in model.trainable_weights)`, not `model.count_params()`.

    Variants (supplementary Figure 1 of the ActCooLR paper):

    - `"standard"`: as above.
    - `"fixup"`: no batch-norm; Fixup initialisation (Zhang et al., "Fixup
      Initialization: Residual Learning Without Normalization", ICLR 2019):
      scalar biases before every convolution, activation and the classifier,
      a scalar multiplier per branch, the first convolution of each branch
      He-initialised and scaled by `L ** -0.5` (`L = 3n` branches), the
      second convolution and the linear layer initialised to zero.
    - `"no_shortcut"`: the same network without the identity shortcuts.

    Example:

    ```python
    model = keras_actcoolr.zoo.cifar_resnet(32)
    model.compile(
        optimizer=keras.optimizers.SGD(keras_actcoolr.ActCooLRSchedule(0.1), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ```

    Args:
        depth: Integer `6n + 2` (20, 32, 44, 56, 110, ...).
        variant: `"standard"`, `"fixup"` or `"no_shortcut"`.
            Defaults to `"standard"`.
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        num_classes: Integer >= 1. Defaults to `10`.
        name: Model name. Defaults to `"resnet{depth}"` plus the variant.

    Returns:
        A `keras_actcoolr.APTModel` that outputs logits.
    """
    try:
        valid = validation.integer("depth", depth, minimum=8) % 6 == 2
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"`depth` must be 6n + 2 with n >= 1 (20, 32, 56, 110, ...). Received: depth={depth!r}")
    validation.one_of("variant", variant, _VARIANTS)
    shape = check_input(input_shape, num_classes)
    blocks = (depth - 2) // 6
    fixup = variant == "fixup"
    inputs = keras.Input(shape, name="image")
    x = conv(_WIDTHS[0], 3, name="stem_conv")(inputs)
    x = ScalarBias(name="stem_bias")(x) if fixup else batch_norm("stem_bn")(x)
    x = relu("stem_relu")(x)
    for stage, filters in enumerate(_WIDTHS, start=1):
        for block in range(1, blocks + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            block_name = f"stage{stage}_block{block}"
            if fixup:
                x = _fixup_block(x, filters, strides, block_name, branches=3 * blocks)
            else:
                x = _basic_block(x, filters, strides, block_name, shortcut=variant == "standard")
    if fixup:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = ScalarBias(name="logits_bias")(x)
        outputs = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="logits")(x)
    else:
        outputs = classifier(x, num_classes)
    suffix = "" if variant == "standard" else f"_{variant}"
    return APTModel(inputs, outputs, name=name or f"resnet{depth}{suffix}")


def resnet20(**kwargs: Any) -> APTModel:
    """CIFAR ResNet-20 (0.27M parameters, He et al. 2016 Table 6). See `cifar_resnet`."""
    return cifar_resnet(20, **kwargs)


def resnet32(**kwargs: Any) -> APTModel:
    """CIFAR ResNet-32 (0.46M parameters, He et al. 2016 Table 6). See `cifar_resnet`."""
    return cifar_resnet(32, **kwargs)


def resnet56(**kwargs: Any) -> APTModel:
    """CIFAR ResNet-56 (0.85M parameters, He et al. 2016 Table 6). See `cifar_resnet`."""
    return cifar_resnet(56, **kwargs)


def resnet110(**kwargs: Any) -> APTModel:
    """CIFAR ResNet-110 (1.7M parameters, He et al. 2016 Table 6). See `cifar_resnet`."""
    return cifar_resnet(110, **kwargs)


def resnet32_fixup(**kwargs: Any) -> APTModel:
    """ResNet-32 with Fixup initialisation and no batch-norm (supplementary Figure 1). See `cifar_resnet`."""
    return cifar_resnet(32, variant="fixup", **kwargs)


def resnet32_no_shortcut(**kwargs: Any) -> APTModel:
    """ResNet-32 without shortcut connections (supplementary Figure 1). See `cifar_resnet`."""
    return cifar_resnet(32, variant="no_shortcut", **kwargs)
