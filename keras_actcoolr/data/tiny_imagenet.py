"""Tiny ImageNet read from a local `tiny-imagenet-200` directory."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from keras_actcoolr.data._spec import DatasetNotFoundError, DatasetSpec

__all__ = ["tiny_imagenet_examples", "write_fake_tiny_imagenet"]

# The fixed validation subset of the training images: the permutation drawn with this seed, always.
_VALIDATION_SEED = 0


def _check(path: str, spec: DatasetSpec) -> None:
    needed = [
        os.path.join(path, "wnids.txt"),
        os.path.join(path, "train"),
        os.path.join(path, "val", "val_annotations.txt"),
    ]
    missing = [p for p in needed if not os.path.exists(p)]
    if missing:
        raise DatasetNotFoundError(
            f"The data set 'tiny_imagenet' is not available in path={path}: {', '.join(missing)} missing. "
            f"{spec.how_to_get}"
        )


def _files(path: str, split: str, validation_percent: int) -> tuple[list[str], list[int]]:
    with open(os.path.join(path, "wnids.txt")) as f:
        wnids = [line.strip() for line in f if line.strip()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    if split == "test":
        files, labels = [], []
        with open(os.path.join(path, "val", "val_annotations.txt")) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 2:
                    files.append(os.path.join(path, "val", "images", parts[0]))
                    labels.append(index[parts[1].strip()])
        return files, labels
    files, labels = [], []
    for wnid in wnids:
        directory = os.path.join(path, "train", wnid, "images")
        for name in sorted(os.listdir(directory)):
            files.append(os.path.join(directory, name))
            labels.append(index[wnid])
    order = np.random.RandomState(_VALIDATION_SEED).permutation(len(files))
    held_out = int(round(len(files) * validation_percent / 100))
    chosen = order[len(files) - held_out :] if split == "validation" else order[: len(files) - held_out]
    chosen = np.sort(chosen)
    return [files[i] for i in chosen], [labels[i] for i in chosen]


def tiny_imagenet_examples(
    path: str | os.PathLike, split: str, spec: DatasetSpec, validation_percent: int | None = None
) -> tf.data.Dataset:
    """Decoded `{"image": uint8 (64, 64, 3), "label": int64}` examples of one split.

    `"train"` and `"validation"` divide the 100,000 training images: the
    validation part is a fixed `validation_percent` % of them (a permutation
    with a fixed seed, the same on every machine); `"test"` is the labelled
    `val` directory (10,000 images; the `test` directory has no labels).
    Classes are numbered in the order of `wnids.txt`.
    """
    path = os.fspath(path)
    _check(path, spec)
    percent = spec.validation_percent if validation_percent is None else validation_percent
    files, labels = _files(path, split, percent)

    def read(file: tf.Tensor, label: tf.Tensor) -> dict:
        # Some Tiny ImageNet images are greyscale JPEGs: decode every image to 3 channels.
        image = tf.io.decode_jpeg(tf.io.read_file(file), channels=3)
        return {"image": image, "label": label}

    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(files, tf.string), np.asarray(labels, np.int64)))
    return dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)


def write_fake_tiny_imagenet(
    directory: str | os.PathLike,
    classes: int = 3,
    per_class: int = 4,
    val_per_class: int = 2,
    size: int = 64,
    seed: int = 0,
) -> str:
    """Write a small random data set with Tiny ImageNet's layout (for tests and `--smoke` runs).

    Returns the path of the `tiny-imagenet-200` directory written in `directory`.
    """
    root = os.path.join(os.fspath(directory), "tiny-imagenet-200")
    rng = np.random.default_rng(seed)
    wnids = [f"n{index:08d}" for index in range(classes)]
    os.makedirs(os.path.join(root, "val", "images"), exist_ok=True)
    with open(os.path.join(root, "wnids.txt"), "w") as f:
        f.write("\n".join(wnids) + "\n")

    def write(file: str) -> None:
        image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        tf.io.write_file(file, tf.io.encode_jpeg(image))

    lines = []
    for wnid in wnids:
        os.makedirs(os.path.join(root, "train", wnid, "images"), exist_ok=True)
        for index in range(per_class):
            write(os.path.join(root, "train", wnid, "images", f"{wnid}_{index}.JPEG"))
        for index in range(val_per_class):
            name = f"val_{wnid}_{index}.JPEG"
            write(os.path.join(root, "val", "images", name))
            lines.append(f"{name}\t{wnid}\t0\t0\t{size - 1}\t{size - 1}\n")
    with open(os.path.join(root, "val", "val_annotations.txt"), "w") as f:
        f.writelines(lines)
    return root
