"""tf.data building blocks of the input pipelines: normalisation, flips, crops, labels, batching."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE

# Inception-style random resized crops (Szegedy et al. 2015), as torchvision's
# RandomResizedCrop: 8% to 100% of the area, aspect ratio 3/4 to 4/3.
CROP_AREA = (0.08, 1.0)
CROP_ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """`(image / 255 - mean) / std` per channel, as float32 (global colour normalisation)."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def random_flip(image: tf.Tensor) -> tf.Tensor:
    """Random horizontal flip (probability 1/2)."""
    return tf.image.random_flip_left_right(image)


def crop_window(shape: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Offset `[y, x, 0]` and size `[h, w, -1]` of a random resized crop of an image of `shape`."""
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        min_object_covered=0.0,
        aspect_ratio_range=CROP_ASPECT_RATIO,
        area_range=CROP_AREA,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def random_resized_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """A random resized crop of a decoded image, resized to `size x size` (float32, 0-255)."""
    begin, window = crop_window(tf.shape(image))
    crop = tf.slice(image, begin, window)
    return tf.image.resize(crop, (size, size), method="bilinear", antialias=True)


def random_resized_crop_jpeg(data: tf.Tensor, size: int, channels: int = 3) -> tf.Tensor:
    """`random_resized_crop` of a JPEG string, decoding only the crop."""
    begin, window = crop_window(tf.image.extract_jpeg_shape(data))
    yxhw = tf.stack([begin[0], begin[1], window[0], window[1]])
    crop = tf.image.decode_and_crop_jpeg(data, yxhw, channels=channels)
    return tf.image.resize(crop, (size, size), method="bilinear", antialias=True)


def center_crop(image: tf.Tensor, size: int, crop_fraction: float) -> tf.Tensor:
    """Resize the shorter side to `size / crop_fraction`, then take the central `size x size` (float32)."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    short = math.ceil(size / crop_fraction)
    scale = short / tf.minimum(height, width)
    new_height = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size)
    new_width = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size)
    image = tf.image.resize(image, tf.stack([new_height, new_width]), method="bilinear", antialias=True)
    top = (new_height - size) // 2
    left = (new_width - size) // 2
    return tf.slice(image, tf.stack([top, left, 0]), tf.stack([size, size, -1]))


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize to `size x size` when the image has another size (float32)."""
    if image.shape[0] == size and image.shape[1] == size:
        return tf.cast(image, tf.float32)
    return tf.image.resize(image, (size, size), method="bilinear", antialias=True)


def smooth_labels(label: tf.Tensor, num_classes: int, smoothing: float) -> tf.Tensor:
    """One-hot labels, smoothed: `one_hot * (1 - smoothing) + smoothing / num_classes`."""
    one_hot = tf.one_hot(tf.cast(label, tf.int32), num_classes, dtype=tf.float32)
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def finish(
    dataset: tf.data.Dataset,
    preprocess: Callable[[Any, Any], tuple[tf.Tensor, tf.Tensor]],
    *,
    training: bool,
    batch_size: int,
    cache: bool | str,
    shuffle_buffer: int,
    seed: int | None,
) -> tf.data.Dataset:
    """Cache the raw examples, shuffle (training), preprocess, batch and prefetch."""
    if cache:
        dataset = dataset.cache() if cache is True else dataset.cache(str(cache))
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE, deterministic=not training)
    dataset = dataset.batch(batch_size, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)
