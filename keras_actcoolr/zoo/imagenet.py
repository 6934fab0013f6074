"""ImageNet ResNet-50 from `keras.applications`, converted."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_actcoolr.models import APTModel, convert
from keras_actcoolr.zoo._common import check_input

__all__ = ["resnet50"]


def resnet50(
    input_shape: Sequence[int] = (224, 224, 3),
    num_classes: int = 1000,
    name: str = "resnet50",
) -> APTModel:
    """ImageNet ResNet-50 with `APTReLU` activations (supplementary Table 3).

    `keras_actcoolr.convert(keras.applications.ResNet50(weights=None, ...))`
    with a linear classifier (`classifier_activation=None`: logits, like the
    other networks of `zoo`). Randomly initialised; no weights are downloaded.

    Parameter count: 25,636,712 with batch-norm's moving statistics
    (`model.count_params()`), 25,583,592 trainable: the 25.6M of Keras'
    table of applications (keras.io/api/applications).

    Example:

    ```python
    model = keras_actcoolr.zoo.resnet50()
    ```

    Args:
        input_shape: `(height, width, channels)`, at least 32x32.
            Defaults to `(224, 224, 3)`.
        num_classes: Integer >= 1. Defaults to `1000`.
        name: Model name. Defaults to `"resnet50"`.

    Returns:
        A `keras_actcoolr.APTModel` that outputs logits.
    """
    shape = check_input(input_shape, num_classes, min_size=32)
    base = keras.applications.ResNet50(weights=None, input_shape=shape, classes=num_classes, classifier_activation=None)
    return convert(base, name=name)
