"""The 4-layer ConvNet for FashionMNIST."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_actcoolr.models import APTModel
from keras_actcoolr.zoo._common import check_input, relu

__all__ = ["convnet4"]


def convnet4(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    name: str = "convnet4",
) -> APTModel:
    """The 4-layer ConvNet for FashionMNIST with `APTReLU` activations (supplementary Table 3).

    Four weighted layers: 5x5 convolution (32 filters), ReLU, 2x2
    max-pooling, 5x5 convolution (64 filters), ReLU, 2x2 max-pooling, a fully
    connected layer of 1024 units, ReLU, and a linear layer (logits).

    The supplementary material says only "4-layer ConvNet ... (as described
    in [7])", [7] being the Fashion-MNIST paper (Xiao et al., 2017), whose
    benchmark lists convolutional networks without fixing one. This is our
    reading: the two-convolution, two-dense network of TensorFlow's classic
    MNIST tutorial. On 28x28x1 inputs it has 832 + 51,264 + 3,212,288 +
    10,250 = 3,274,634 parameters (no published count to compare with).

    Example:

    ```python
    model = keras_actcoolr.zoo.convnet4()
    ```

    Args:
        input_shape: `(height, width, channels)`, at least 4x4.
            Defaults to `(28, 28, 1)`.
        num_classes: Integer >= 1. Defaults to `10`.
        name: Model name. Defaults to `"convnet4"`.

    Returns:
        A `keras_actcoolr.APTModel` that outputs logits.
    """
    shape = check_input(input_shape, num_classes, min_size=4)
    inputs = keras.Input(shape, name="image")
    x = keras.layers.Conv2D(32, 5, padding="same", name="conv1")(inputs)
    x = relu("conv1_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(64, 5, padding="same", name="conv2")(x)
    x = relu("conv2_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(1024, name="dense1")(x)
    x = relu("dense1_relu")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return APTModel(inputs, outputs, name=name)
