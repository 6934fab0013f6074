"""ResNet-18 for CIFAR (basic blocks, 3x3 stem, no max-pooling)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from keras_actcoolr.models import APTModel
from keras_actcoolr.zoo._common import batch_norm, check_input, classifier, conv, relu

__all__ = ["resnet18"]


def _basic_block(x: Any, filters: int, strides: int, name: str) -> Any:
    y = conv(filters, 3, strides, name=f"{name}_conv1")(x)
    y = batch_norm(f"{name}_bn1")(y)
    y = relu(f"{name}_relu1")(y)
    y = conv(filters, 3, name=f"{name}_conv2")(y)
    y = batch_norm(f"{name}_bn2")(y)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, 1, strides, name=f"{name}_shortcut_conv")(x)
        shortcut = batch_norm(f"{name}_shortcut_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return relu(f"{name}_relu2")(y)


def resnet18(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "resnet18",
) -> APTModel:
    """ResNet-18 for CIFAR-10 with `APTReLU` activations (supplementary Table 2).

    He et al.'s ImageNet ResNet-18 (basic blocks, two per stage, 64, 128,
    256 and 512 filters, post-activation) adapted to 32x32 inputs the usual
    way: a 3x3 stride-1 stem with 64 filters and no max-pooling, strides
    1, 2, 2, 2, global average pooling and a linear layer (logits).
    Shortcuts are option B (a 1x1 convolution with batch-norm where the shape
    changes), as in the ImageNet network.

    Parameter count: the ImageNet ResNet-18 has 11,689,512 (torchvision's
    published count). This CIFAR version replaces the 7x7 stem
    (9,408 weights) with a 3x3 one (1,728) and the 1000-way classifier
    (513,000) with a 10-way one (5,130): 11,173,962, that is 11.2M, the
    figure usually quoted for CIFAR ResNet-18 (trainable parameters).

    Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for
    Image Recognition", CVPR 2016.

    Example:

    ```python
    model = keras_actcoolr.zoo.resnet18()
    ```

    Args:
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        num_classes: Integer >= 1. Defaults to `10`.
        name: Model name. Defaults to `"resnet18"`.

    Returns:
        A `keras_actcoolr.APTModel` that outputs logits.
    """
    shape = check_input(input_shape, num_classes)
    inputs = keras.Input(shape, name="image")
    x = conv(64, 3, name="stem_conv")(inputs)
    x = batch_norm("stem_bn")(x)
    x = relu("stem_relu")(x)
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in (1, 2):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, filters, strides, f"stage{stage}_block{block}")
    outputs = classifier(x, num_classes)
    return APTModel(inputs, outputs, name=name)
