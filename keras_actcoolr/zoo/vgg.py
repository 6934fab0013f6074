"""VGG-16 with batch-norm for CIFAR."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_actcoolr.models import APTModel
from keras_actcoolr.zoo._common import batch_norm, check_input, conv_initializer, relu

__all__ = ["vgg16"]

# Filters of the 13 convolutions, "M" a 2x2 max-pooling (configuration D of Simonyan & Zisserman).
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "vgg16",
) -> APTModel:
    """VGG-16 for CIFAR-10 with batch-norm and `APTReLU` activations (supplementary Table 3).

    The 13 3x3 convolutions of configuration D (Simonyan & Zisserman, "Very
    Deep Convolutional Networks for Large-Scale Image Recognition", ICLR
    2015), each followed by batch-norm and a ReLU, five 2x2 max-poolings,
    global average pooling (a no-op on the 1x1x512 map that 32x32 images
    leave) and, as usual on CIFAR, one linear layer instead of the three
    fully connected ones (logits).

    Parameter count: the 13 convolutions of VGG-16 have 14,714,688 weights
    and biases (138,357,544 of the ImageNet network, Keras' published
    count, less its three fully connected layers, 123,642,856); batch-norm
    adds 8,448 scales and offsets and the 10-way classifier 5,130:
    14,728,266 trainable parameters, about 15M.

    Example:

    ```python
    model = keras_actcoolr.zoo.vgg16()
    ```

    Args:
        input_shape: `(height, width, channels)`, at least 32x32.
            Defaults to `(32, 32, 3)`.
        num_classes: Integer >= 1. Defaults to `10`.
        name: Model name. Defaults to `"vgg16"`.

    Returns:
        A `keras_actcoolr.APTModel` that outputs logits.
    """
    shape = check_input(input_shape, num_classes, min_size=32)
    inputs = keras.Input(shape, name="image")
    x = inputs
    block, index = 1, 1
    for item in VGG16_LAYOUT:
        if item == "M":
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
            block, index = block + 1, 1
            continue
        prefix = f"block{block}_conv{index}"
        x = keras.layers.Conv2D(item, 3, padding="same", kernel_initializer=conv_initializer(), name=prefix)(x)
        x = batch_norm(f"{prefix}_bn")(x)
        x = relu(f"{prefix}_relu")(x)
        index += 1
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return APTModel(inputs, outputs, name=name)
