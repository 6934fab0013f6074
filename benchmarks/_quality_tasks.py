"""Tasks of `benchmarks/quality.py`: data sets that ship with scikit-learn, a teacher task, tiny Keras models.

Each task is a `Task`: a name, whether it is a *development* task (one the
controller's defaults may be chosen on) or *held out* (never looked at while
choosing them), a loader of fixed train / validation / test splits, and a
builder of a plain Keras model (stock layers, ReLU activations) that
`keras_actcoolr.convert` can clone. scikit-learn is imported when a loader
runs, never at import time.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import keras
import numpy as np

#: Seed of every train / validation / test split and of the teacher network: the data never change with the run seed.
DATA_SEED = 0

DEVELOPMENT = "development"
HELD_OUT = "held-out"


@dataclasses.dataclass(frozen=True)
class Data:
    """Fixed splits of one task; `x_*` float32, `y_*` int64 class indices."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


@dataclasses.dataclass(frozen=True)
class Task:
    """One benchmark task.

    Attributes:
        name: Identifier used on the command line and in the results.
        description: One line for the tables.
        role: `"development"` or `"held-out"`.
        load: Returns the task's `Data` (cached: every run of the task trains on the same arrays).
        build: Returns a new plain Keras model for an input shape and a number of classes.
        chance: `"uniform"` (chance is `1 / num_classes`) or `"majority"` (the
            share of the most frequent class in the test split).
        batch_size: Batch size of every run of the task.
        epochs: Default number of epochs.
    """

    name: str
    description: str
    role: str
    load: Callable[[], Data]
    build: Callable[[tuple[int, ...], int], keras.Model]
    chance: str
    batch_size: int
    epochs: int

    def chance_accuracy(self, data: Data) -> float:
        """Accuracy of a network that has learnt nothing (see `chance`)."""
        if self.chance == "uniform":
            return 1.0 / data.num_classes
        return float(np.bincount(data.y_test, minlength=data.num_classes).max() / len(data.y_test))

    def chance_loss(self, data: Data) -> float:
        """Cross-entropy of a network that has learnt nothing: the entropy of the training labels' class shares."""
        return label_entropy(data.y_train, data.num_classes)


def label_entropy(labels: np.ndarray, num_classes: int) -> float:
    """`-sum(p * ln p)` over the class shares `p` of `labels`: the least loss without looking at the input."""
    shares = np.bincount(labels, minlength=num_classes) / len(labels)
    shares = shares[shares > 0]
    return float(-np.sum(shares * np.log(shares)))


def split(x: np.ndarray, y: np.ndarray, fractions: tuple[float, float] = (0.6, 0.2), seed: int = DATA_SEED) -> tuple:
    """Stratified train / validation / test split: `fractions` of each class for train and validation, the rest test.

    Stratified so that a small test split keeps the class shares of the whole set.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        parts[0].append(members[:n_train])
        parts[1].append(members[n_train : n_train + n_val])
        parts[2].append(members[n_train + n_val :])
    # Shuffle across classes, so that no order is left in the arrays.
    indices = [rng.permutation(np.concatenate(p)) for p in parts]
    return tuple(array for index in indices for array in (x[index], y[index]))


@functools.cache
def load_digits() -> Data:
    """scikit-learn's 1797 digits as 8x8x1 images in [0, 1]; 60/20/20 stratified split."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    return Data(*split(x, digits.target.astype("int64")), num_classes=10)


@functools.cache
def load_digits_features() -> Data:
    """`load_digits`'s splits with each 8x8 image as a vector of 64 features in [0, 1] (for an MLP)."""
    digits = load_digits()

    def flat(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1)

    return dataclasses.replace(
        digits, x_train=flat(digits.x_train), x_val=flat(digits.x_val), x_test=flat(digits.x_test)
    )


@functools.cache
def load_breast_cancer() -> Data:
    """scikit-learn's 569 breast-cancer cases, 30 features standardized with the training split's mean and std."""
    from sklearn.datasets import load_breast_cancer as sklearn_breast_cancer

    bunch = sklearn_breast_cancer()
    x_train, y_train, x_val, y_val, x_test, y_test = split(bunch.data, bunch.target.astype("int64"))
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)

    def standardize(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype("float32")

    return Data(standardize(x_train), y_train, standardize(x_val), y_val, standardize(x_test), y_test, num_classes=2)


TEACHER_INPUTS = 8
TEACHER_HIDDEN = 16
TEACHER_CLASSES = 4
#: Train, validation and test sizes. With fewer training points the student fits them and generalizes worse.
TEACHER_SIZES = (3000, 1000, 1000)


def teacher_logits(x: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Logits of a ReLU MLP with the given `(kernel, bias)` layers."""
    h = x
    for kernel, bias in weights[:-1]:
        h = np.maximum(h @ kernel + bias, 0.0)
    kernel, bias = weights[-1]
    return h @ kernel + bias


def teacher_labels(x: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Class index of a ReLU MLP with the given `(kernel, bias)` layers: argmax of its logits."""
    return np.argmax(teacher_logits(x, weights), axis=1).astype("int64")


def teacher_weights(seed: int = DATA_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """A fixed random teacher `TEACHER_INPUTS -> TEACHER_HIDDEN -> TEACHER_CLASSES` with balanced classes.

    He-normal kernels; the output biases are then shifted until each class
    takes about the same share of Gaussian inputs (multiplicative updates of
    the class shares, 100 rounds on 20000 points), so that no class is rare.
    """
    rng = np.random.default_rng(seed + 1000)
    sizes = (TEACHER_INPUTS, TEACHER_HIDDEN, TEACHER_CLASSES)
    weights = [
        (rng.normal(0.0, np.sqrt(2.0 / n_in), (n_in, n_out)), np.zeros(n_out))
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    ]
    kernel, bias = weights[-1]
    logits = teacher_logits(rng.normal(size=(20000, TEACHER_INPUTS)), weights)
    for _ in range(100):
        shares = np.bincount(np.argmax(logits + bias, axis=1), minlength=TEACHER_CLASSES) / len(logits)
        bias = bias - 0.5 * np.log(np.maximum(shares, 1e-3) * TEACHER_CLASSES)
    weights[-1] = (kernel, bias)
    return weights


@functools.cache
def load_teacher() -> Data:
    """Gaussian inputs labelled by a fixed random teacher MLP; classes balanced exactly.

    The labels are a deterministic function of the inputs that a student of
    the teacher's shape can represent, so 100% test accuracy is attainable: the
    test accuracy is the agreement with the teacher. Points are drawn from a
    pool and kept class by class until each split holds the same number of
    each class.
    """
    rng = np.random.default_rng(DATA_SEED)
    weights = teacher_weights()
    per_class = [size // TEACHER_CLASSES for size in TEACHER_SIZES]
    needed = sum(per_class)
    pool_x = rng.normal(size=(40 * needed, TEACHER_INPUTS))
    pool_y = teacher_labels(pool_x, weights)
    counts = np.bincount(pool_y, minlength=TEACHER_CLASSES)
    if counts.min() < needed:
        raise ValueError(f"The teacher's rarest class is too rare for balanced splits. Received: counts={counts}")
    chosen = [np.flatnonzero(pool_y == label)[:needed] for label in range(TEACHER_CLASSES)]
    arrays = []
    start = 0
    for count in per_class:
        index = rng.permutation(np.concatenate([c[start : start + count] for c in chosen]))
        arrays += [pool_x[index].astype("float32"), pool_y[index]]
        start += count
    return Data(*arrays, num_classes=TEACHER_CLASSES)


# ---------------------------------------------------------------- models

#: Batch-norm moving-average momentum. Keras's 0.99 averages over about 100 steps, too slow for runs of
#: 250 steps whose weights keep growing: the inference statistics lag and test accuracy falls far below
#: training accuracy. 0.9 is PyTorch's default (its `momentum=0.1`).
BN_MOMENTUM = 0.9


def cnn(input_shape: tuple[int, ...], num_classes: int, batch_norm: bool) -> keras.Model:
    """Three 3x3 convolutions (16, 32, 32 channels) with ReLU, one max-pool, global average pool, Dense."""
    inputs = keras.Input(input_shape)
    x = inputs
    for index, filters in enumerate((16, 32, 32)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = keras.layers.ReLU()(x)
        if index == 1:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="cnn_bn" if batch_norm else "cnn")


def resnet(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """A stem and two basic residual blocks (16 channels, then 32 at stride 2 with a 1x1 projection), all with BN."""

    def conv_bn(x: keras.KerasTensor, filters: int, kernel: int = 3, strides: int = 1) -> keras.KerasTensor:
        x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
        return keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x)

    def block(x: keras.KerasTensor, filters: int, strides: int) -> keras.KerasTensor:
        y = keras.layers.ReLU()(conv_bn(x, filters, strides=strides))
        y = conv_bn(y, filters)
        shortcut = x if strides == 1 and x.shape[-1] == filters else conv_bn(x, filters, kernel=1, strides=strides)
        return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))

    inputs = keras.Input(input_shape)
    x = keras.layers.ReLU()(conv_bn(inputs, 16))
    x = block(x, 16, 1)
    x = block(x, 32, 2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="resnet")


def mlp(input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> keras.Model:
    """Two hidden Dense layers of `width` ReLU units, then a Dense layer of logits."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(width, activation="relu")(inputs)
    x = keras.layers.Dense(width, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="mlp")


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "digits_cnn",
            "digits 8x8, CNN without normalization",
            HELD_OUT,
            load_digits,
            functools.partial(cnn, batch_norm=False),
            "uniform",
            batch_size=64,
            epochs=15,
        ),
        Task(
            "digits_cnn_bn",
            "digits 8x8, CNN with BatchNormalization",
            DEVELOPMENT,
            load_digits,
            functools.partial(cnn, batch_norm=True),
            "uniform",
            batch_size=64,
            epochs=15,
        ),
        Task(
            "digits_resnet",
            "digits 8x8, residual network with BatchNormalization",
            HELD_OUT,
            load_digits,
            resnet,
            "uniform",
            batch_size=64,
            epochs=15,
        ),
        Task(
            "digits_mlp",
            "digits 8x8 as 64 features, MLP",
            HELD_OUT,
            load_digits_features,
            mlp,
            "uniform",
            batch_size=64,
            epochs=15,
        ),
        Task(
            "breast_cancer_mlp",
            "breast cancer (30 standardized features), MLP",
            HELD_OUT,
            load_breast_cancer,
            mlp,
            "majority",
            batch_size=32,
            epochs=20,
        ),
        Task(
            "teacher_mlp",
            "labels of a fixed random teacher MLP (8 inputs, 16 hidden, 4 classes), MLP student",
            DEVELOPMENT,
            load_teacher,
            mlp,
            "uniform",
            batch_size=128,
            epochs=15,
        ),
    )
}
