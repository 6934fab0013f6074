"""Input pipelines of the ActCooLR paper's data sets (supplementary section E), on tf.data.

CIFAR-10 and ImageNet come through tensorflow-datasets (the `datasets`
extra; imported when a data set is loaded, not with this package),
FashionMNIST from its original IDX files (Keras' dataset cache, the Debian
package `dataset-fashion-mnist`, or a directory: `load_fashion_mnist_arrays`),
Tiny ImageNet from a local directory. See `load` and `DATASETS`.

| data set | `load(name, ...)` | batch | augmentation | validation |
| --- | --- | --- | --- | --- |
| FashionMNIST | `"fashion_mnist"` | 64 | flips | 1% of train |
| CIFAR-10 | `"cifar10"` | 256 | flips | 1% of train |
| Tiny ImageNet | `"tiny_imagenet"`, `path=` | 128 | random resized crops 64, flips | 1% of train |
| ImageNet | `"imagenet"`, `manual_dir=` | 128 | random resized crops 224, flips, label smoothing 0.1 | 5% of train |
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from keras_actcoolr.data.datasets import (
    DATASETS,
    DatasetNotFoundError,
    DatasetSpec,
    load,
    load_splits,
    split_names,
)
from keras_actcoolr.data.fashion_mnist import (
    find_fashion_mnist,
    load_fashion_mnist_arrays,
    read_idx,
    write_fake_fashion_mnist,
    write_idx,
)
from keras_actcoolr.data.tiny_imagenet import write_fake_tiny_imagenet

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "channel_statistics",
    "find_fashion_mnist",
    "load_fashion_mnist_arrays",
    "read_idx",
    "write_idx",
    "load",
    "load_splits",
    "split_names",
    "write_fake_fashion_mnist",
    "write_fake_tiny_imagenet",
]


def channel_statistics(images: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of 0-255 images, on the 0-1 scale.

    `images` yields arrays (or tensors, or dicts with an `"image"`) of shape
    `(..., height, width, channels)`; the statistics run over every pixel of
    every image, in float64, as the constants of `DATASETS` are defined.

    Example:

    ```python
    import tensorflow_datasets as tfds
    raw = tfds.load("cifar10", split="train").map(lambda e: e["image"]).batch(1000)
    mean, std = keras_actcoolr.data.channel_statistics(raw.as_numpy_iterator())
    ```
    """
    total = total_sq = None
    count = 0
    for item in images:
        array = np.asarray(item["image"] if isinstance(item, dict) else item, dtype=np.float64) / 255.0
        pixels = array.reshape(-1, array.shape[-1])
        s, sq = pixels.sum(axis=0), np.square(pixels).sum(axis=0)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += pixels.shape[0]
    if not count:
        raise ValueError("`images` is empty.")
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
