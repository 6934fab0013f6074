"""The networks of the ActCooLR paper as Keras Functional models with `APTReLU` activations.

Every builder returns a `keras_actcoolr.APTModel` that outputs logits (use a
loss with `from_logits=True`). `get(name, **kwargs)` builds one by its name in
`NETWORKS`. Published parameter counts (in the docstrings, with their sources)
count trainable parameters: compare them with `count_parameters(model)`.

| name | network | input | published parameters |
| --- | --- | --- | --- |
| `convnet4` | 4-layer ConvNet (FashionMNIST) | 28x28x1 | none (3.27M here) |
| `resnet20`, `resnet32`, `resnet56`, `resnet110` | CIFAR ResNets, option A | 32x32x3 | 0.27M, 0.46M, 0.85M, 1.7M |
| `resnet32_fixup`, `resnet32_pyramid`, `resnet32_no_shortcut` | Figure 1 variants | 32x32x3 | none |
| `resnet18` | CIFAR ResNet-18 | 32x32x3 | 11.2M |
| `vgg16` | VGG-16 with batch-norm | 32x32x3 | about 15M |
| `pyramidnet110` | PyramidNet-110, alpha 48 | 32x32x3 | 1.7M |
| `pyramidnet41` | PyramidNet-41 (Tiny ImageNet) | 64x64x3 | none |
| `resnet50` | ImageNet ResNet-50 (`keras.applications`) | 224x224x3 | 25.6M |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from keras_actcoolr.models import APTModel
from keras_actcoolr.zoo.cifar_resnet import (
    cifar_resnet,
    resnet20,
    resnet32,
    resnet32_fixup,
    resnet32_no_shortcut,
    resnet56,
    resnet110,
)
from keras_actcoolr.zoo.convnet import convnet4
from keras_actcoolr.zoo.imagenet import resnet50
from keras_actcoolr.zoo.layers import ChannelZeroPadding, ScalarBias, ScalarScale
from keras_actcoolr.zoo.pyramidnet import pyramid_resnet32, pyramidnet, pyramidnet41, pyramidnet110
from keras_actcoolr.zoo.resnet18 import resnet18
from keras_actcoolr.zoo.vgg import vgg16

__all__ = [
    "NETWORKS",
    "ChannelZeroPadding",
    "ScalarBias",
    "ScalarScale",
    "cifar_resnet",
    "convnet4",
    "count_parameters",
    "get",
    "pyramid_resnet32",
    "pyramidnet",
    "pyramidnet41",
    "pyramidnet110",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet32_fixup",
    "resnet32_no_shortcut",
    "resnet50",
    "resnet56",
    "resnet110",
    "vgg16",
]

#: Builders by name: each takes `input_shape=`, `num_classes=` and `name=`.
NETWORKS: dict[str, Callable[..., APTModel]] = {
    "convnet4": convnet4,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet32_fixup": resnet32_fixup,
    "resnet32_pyramid": pyramid_resnet32,
    "resnet32_no_shortcut": resnet32_no_shortcut,
    "resnet18": resnet18,
    "vgg16": vgg16,
    "pyramidnet110": pyramidnet110,
    "pyramidnet41": pyramidnet41,
    "resnet50": resnet50,
}


def get(name: str, **kwargs: Any) -> APTModel:
    """Build the network `name` of `NETWORKS` (keyword arguments go to its builder)."""
    if name not in NETWORKS:
        raise ValueError(f"Unknown network {name!r}: choose one of {sorted(NETWORKS)}. Received: name={name!r}")
    return NETWORKS[name](**kwargs)


def count_parameters(model: keras.Model) -> int:
    """Number of trainable parameters (the figure papers publish; no batch-norm moving statistics)."""
    return int(sum(int(keras.ops.size(weight)) for weight in model.trainable_weights))
