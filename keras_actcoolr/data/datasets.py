"""The paper's data sets as tf.data pipelines (supplementary section E)."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from keras_actcoolr import validation
from keras_actcoolr.data import _pipeline as P
from keras_actcoolr.data._spec import DatasetNotFoundError, DatasetSpec
from keras_actcoolr.data.fashion_mnist import fashion_mnist_split
from keras_actcoolr.data.fashion_mnist import how_to_get as _fashion_mnist_how_to_get
from keras_actcoolr.data.tiny_imagenet import tiny_imagenet_examples

__all__ = ["DATASETS", "DatasetNotFoundError", "DatasetSpec", "load", "load_splits", "split_names"]

SPLITS = ("train", "validation", "test")

_TFDS_DOWNLOAD = (
    "tensorflow-datasets downloads and prepares it on first use (`download=True`, the default; "
    "`--data-dir` on the command line) into `data_dir` (default ~/tensorflow_datasets). "
    "Without internet access, prepare it on a machine that has it with "
    "`tfds build {tfds_name} --data_dir DIR` and copy DIR over, then pass `data_dir=DIR`."
)

DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        tfds_name=None,
        num_classes=10,
        image_size=28,
        channels=1,
        mean=(0.2860,),
        std=(0.3530,),
        statistics_source=(
            "mean and standard deviation of all 60,000 x 28 x 28 training pixels (Xiao et al. 2017's "
            "data), the values used throughout the PyTorch community"
        ),
        batch_size=64,
        validation_percent=1,
        train_examples=60_000,
        how_to_get=_fashion_mnist_how_to_get(),
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        tfds_name="cifar10",
        num_classes=10,
        image_size=32,
        channels=3,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        statistics_source=(
            "per-channel mean and standard deviation of all 50,000 x 32 x 32 training pixels "
            "(the often quoted (0.2023, 0.1994, 0.2010) is the mean of per-image deviations, not "
            "the global one)"
        ),
        batch_size=256,
        validation_percent=1,
        train_examples=50_000,
        how_to_get=_TFDS_DOWNLOAD.format(tfds_name="cifar10"),
    ),
    "tiny_imagenet": DatasetSpec(
        name="tiny_imagenet",
        tfds_name=None,
        num_classes=200,
        image_size=64,
        channels=3,
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2770, 0.2691, 0.2821),
        statistics_source=(
            "per-channel mean and standard deviation of the 100,000 training images, as commonly "
            "quoted for Tiny ImageNet (check them on your copy with `keras_actcoolr.data.channel_statistics`)"
        ),
        batch_size=128,
        validation_percent=1,
        train_examples=100_000,
        test_split="val",
        crop=True,
        crop_fraction=1.0,
        how_to_get=(
            "Tiny ImageNet is read from a local directory: download tiny-imagenet-200.zip "
            "(http://cs231n.stanford.edu/tiny-imagenet-200.zip), unzip it and pass the "
            "`tiny-imagenet-200` directory as `path=` (`--tiny-imagenet-dir` on the command line). "
            "It must hold wnids.txt, train/<wnid>/images/*.JPEG, val/val_annotations.txt and val/images/."
        ),
    ),
    "imagenet": DatasetSpec(
        name="imagenet",
        tfds_name="imagenet2012",
        num_classes=1000,
        image_size=224,
        channels=3,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        statistics_source="the ImageNet training-set statistics used by torchvision and most ImageNet code",
        batch_size=128,
        # Supplementary section E: "a random subset of about 5% (~64,143) images extracted from the train data set".
        validation_percent=5,
        train_examples=1_281_167,
        test_split="validation",
        crop=True,
        crop_fraction=0.875,
        label_smoothing=0.1,
        encoded=True,
        cache=False,
        how_to_get=(
            "ImageNet (ILSVRC 2012) cannot be downloaded automatically. Get ILSVRC2012_img_train.tar "
            "and ILSVRC2012_img_val.tar from https://image-net.org (registration required), put both "
            "files in one directory and pass it as `manual_dir=` (`--manual-dir` on the command line): "
            "tensorflow-datasets then prepares the data set once into `data_dir` (hours; about 300 GB free)."
        ),
    ),
}

_IMAGENET_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}: choose one of {sorted(DATASETS)}. Received: name={name!r}")
    return DATASETS[name]


def split_names(name: str, validation_percent: int | None = None) -> dict[str, str]:
    """The source split of `"train"`, `"validation"` and `"test"`.

    For the tfds data sets these are tfds split strings: the validation split
    is the last `validation_percent` % of the training set, fixed, and the
    training split the rest, for example
    `{"train": "train[:99%]", "validation": "train[99%:]", "test": "test"}`.
    """
    spec = _spec(name)
    percent = spec.validation_percent if validation_percent is None else validation_percent
    percent = validation.integer("validation_percent", percent, minimum=0, maximum=99)
    keep = 100 - percent
    return {"train": f"train[:{keep}%]", "validation": f"train[{keep}%:]", "test": spec.test_split}


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "keras_actcoolr.data needs tensorflow-datasets: install the `datasets` extra, "
            '`pip install "keras_actcoolr[datasets]"` (or `pip install tensorflow-datasets`).'
        ) from error
    return tfds


def _missing(spec: DatasetSpec, where: str, detail: str = "") -> DatasetNotFoundError:
    message = f"The data set '{spec.name}' is not available in {where}. {spec.how_to_get}"
    if detail:
        message += f" ({detail})"
    return DatasetNotFoundError(message)


def _tfds_examples(
    spec: DatasetSpec,
    split: str,
    *,
    data_dir: str | os.PathLike | None,
    download: bool,
    manual_dir: str | os.PathLike | None,
    training: bool,
    seed: int | None,
) -> tf.data.Dataset:
    tfds = _import_tfds()
    builder = tfds.builder(spec.tfds_name, data_dir=None if data_dir is None else os.fspath(data_dir))
    where = f"data_dir={os.fspath(data_dir) if data_dir is not None else '~/tensorflow_datasets (the default)'}"
    decoders = {"image": tfds.decode.SkipDecoding()} if spec.encoded else None

    def read() -> tf.data.Dataset:
        return builder.as_dataset(
            split=split,
            decoders=decoders,
            shuffle_files=training,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )

    try:
        return read()
    except AssertionError as error:  # tfds: "could not find data in ..."
        if not download:
            raise _missing(spec, where, "download=False") from error
    if spec.name == "imagenet":
        directory = None if manual_dir is None else os.fspath(manual_dir)
        if directory is None or not all(os.path.exists(os.path.join(directory, f)) for f in _IMAGENET_FILES):
            raise _missing(spec, where, f"manual_dir={directory} does not hold {' and '.join(_IMAGENET_FILES)}")
    download_config = tfds.download.DownloadConfig(manual_dir=None if manual_dir is None else os.fspath(manual_dir))
    try:
        builder.download_and_prepare(download_config=download_config)
    except (AssertionError, OSError, tfds.download.DownloadError) as error:
        raise _missing(spec, where, f"preparing it failed: {type(error).__name__}: {error}") from error
    return read()


def load(
    name: str,
    split: str = "train",
    *,
    batch_size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    manual_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    image_size: int | None = None,
    augment: bool | None = None,
    validation_percent: int | None = None,
    cache: bool | str | None = None,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
) -> tf.data.Dataset:
    """One split of a data set of the paper as a batched, prefetched `tf.data.Dataset`.

    Follows section E of the ActCooLR supplementary material. Every image is
    normalised per channel with the training set's statistics (`DATASETS[name]`):

    ```python
    image = (image / 255 - mean) / std          # float32
    ```

    - `"fashion_mnist"` (its four original IDX files, read with NumPy from
      `path`, else from Keras' dataset cache `~/.keras/datasets/fashion-mnist`
      (`$KERAS_HOME/datasets/fashion-mnist`), else from
      `/usr/share/datasets/fashion-mnist`, where the Debian package
      `dataset-fashion-mnist` installs them; tensorflow-datasets is not
      needed; `data_dir` and `download` do not apply: nothing is downloaded),
      `"cifar10"` (tensorflow-datasets): random horizontal flips when
      training; batch sizes 64 and 256.
    - `"imagenet"` (tensorflow-datasets `imagenet2012`, from the manual
      download directory `manual_dir`): random resized crops to 224x224 and
      flips when training, and label smoothing 0.1 (one-hot labels,
      `y = one_hot * 0.9 + 0.1 / 1000`; validation and test labels are plain
      one-hot); testing on the central 224x224 crop of the image resized to a
      shorter side of 256; batch size 128. The test split is the official
      validation set (50,000 images); the paper's validation set is about 5%
      of the training set.
    - `"tiny_imagenet"` (a local `tiny-imagenet-200` directory, `path`):
      random resized crops to 64x64 and flips when training, the whole 64x64
      image at test time; batch size 128; the test split is its labelled
      `val` directory.

    Splits: `"train"` and `"validation"` divide the training set, the
    validation part being a fixed `validation_percent` % (1%; 5% for ImageNet)
    taken from its end (`split_names`), and `"test"` is the data set's test split.
    Labels are integers (`int64`), or smoothed one-hot vectors (`float32`) for
    ImageNet. Raw examples are cached in memory (not ImageNet's, by default)
    before shuffling and augmentation.

    Example:

    ```python
    train = keras_actcoolr.data.load("cifar10", "train")
    for images, labels in train.take(1):
        images.shape      # (256, 32, 32, 3)
    ```

    Args:
        name: `"fashion_mnist"`, `"cifar10"`, `"tiny_imagenet"` or `"imagenet"`.
        split: `"train"`, `"validation"` or `"test"`. Defaults to `"train"`.
        batch_size: Integer >= 1, or `None` for the paper's. Defaults to `None`.
        data_dir: tensorflow-datasets data directory, or `None` for its
            default. Defaults to `None`.
        download: Boolean, let tensorflow-datasets download and prepare a
            missing data set (for ImageNet: prepare it from `manual_dir`).
            Defaults to `True`.
        manual_dir: ImageNet's manual download directory (holding
            ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar).
            Defaults to `None`.
        path: Tiny ImageNet's `tiny-imagenet-200` directory, or the directory
            of Fashion-MNIST's IDX files (`None`: search Keras' cache and the
            Debian package's directory). Defaults to `None`.
        image_size: Side of the output images, or `None` for the data set's
            (`DATASETS[name].image_size`): the crop size where there are
            crops, otherwise images are resized. Defaults to `None`.
        augment: Boolean, flips and random crops (and label smoothing), or
            `None` for "on the training split". Defaults to `None`.
        validation_percent: Integer in [0, 100), or `None` for the data
            set's. Defaults to `None`.
        cache: `True` (in memory), a file name, `False`, or `None` for the
            data set's default. Defaults to `None`.
        shuffle_buffer: Integer >= 1, shuffle buffer of the training split.
            Defaults to `10000`.
        seed: Integer seed of the shuffling, or `None`. Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches.

    Raises:
        DatasetNotFoundError: when the data set is not available, with how to get it.
        ValueError: for a bad argument, or a corrupt Fashion-MNIST IDX file.
    """
    spec = _spec(name)
    validation.one_of("split", split, SPLITS)
    batch_size = validation.integer_at_least_one("batch_size", spec.batch_size if batch_size is None else batch_size)
    size = validation.integer_at_least_one("image_size", spec.image_size if image_size is None else image_size)
    training = split == "train"
    augment = training if augment is None else bool(augment)
    cache = spec.cache if cache is None else cache
    source = split_names(name, validation_percent)[split]

    if spec.name == "fashion_mnist":
        percent = spec.validation_percent if validation_percent is None else validation_percent
        images, labels = fashion_mnist_split(split, percent, path)
        examples = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    elif spec.tfds_name is None:
        if path is None:
            raise _missing(spec, "path=None")
        examples = tiny_imagenet_examples(path, split, spec, validation_percent=validation_percent)
    else:
        examples = _tfds_examples(
            spec, source, data_dir=data_dir, download=download, manual_dir=manual_dir, training=training, seed=seed
        )
    preprocess = _preprocessor(spec, size, augment)
    return P.finish(
        examples,
        preprocess,
        training=training,
        batch_size=batch_size,
        cache=cache,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
    )


def _preprocessor(spec: DatasetSpec, size: int, augment: bool) -> Any:
    def preprocess(example: dict) -> tuple[tf.Tensor, tf.Tensor]:
        image = example["image"]
        if spec.encoded and augment:
            image = P.random_resized_crop_jpeg(image, size, spec.channels)
        else:
            if spec.encoded:
                image = tf.io.decode_jpeg(image, channels=spec.channels)
            if spec.crop and augment:
                image = P.random_resized_crop(image, size)
            elif spec.crop:
                image = P.center_crop(image, size, spec.crop_fraction)
            else:
                image = P.resize(image, size)
        if augment:
            image = P.random_flip(image)
        image = P.normalize(image, spec.mean, spec.std)
        image = tf.ensure_shape(image, (size, size, spec.channels))
        label = example["label"]
        if spec.one_hot:
            label = P.smooth_labels(label, spec.num_classes, spec.label_smoothing if augment else 0.0)
        else:
            label = tf.cast(label, tf.int64)
        return image, label

    return preprocess


def load_splits(name: str, **kwargs: Any) -> dict[str, tf.data.Dataset]:
    """`{"train": ..., "validation": ..., "test": ...}`: `load` of each split with the same arguments."""
    return {split: load(name, split, **kwargs) for split in SPLITS}
