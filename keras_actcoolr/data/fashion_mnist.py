"""Fashion-MNIST from its original IDX files (gzip-compressed or not), read with NumPy.

The files are looked for, in this order, in the directory the user passes
(`path=`), in Keras' dataset cache (where `keras.datasets.fashion_mnist.load_data()`
downloads them: `$KERAS_HOME/datasets/fashion-mnist`, by default
`~/.keras/datasets/fashion-mnist`, or `/tmp/.keras/...` when the home
directory is not writable) and where the Debian package `dataset-fashion-mnist`
installs them (`/usr/share/datasets/fashion-mnist`).
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from keras_actcoolr import validation
from keras_actcoolr.data._spec import DatasetNotFoundError

__all__ = [
    "FASHION_MNIST_FILES",
    "fashion_mnist_directories",
    "find_fashion_mnist",
    "load_fashion_mnist_arrays",
    "read_idx",
    "write_fake_fashion_mnist",
    "write_idx",
]

#: The four files, by role.
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: Where the Debian package `dataset-fashion-mnist` puts the files.
DEBIAN_DIRECTORY = "/usr/share/datasets/fashion-mnist"

HOW_TO_GET = (
    "Fashion-MNIST is read from its four IDX files ({files}, gzip-compressed or not). Get them either "
    "with the Debian/Ubuntu package (`sudo apt-get install dataset-fashion-mnist`, into {debian}), or "
    'with Keras on a machine with internet access (`python -c "import keras; '
    'keras.datasets.fashion_mnist.load_data()"`, into {keras_cache}), or download them from '
    "https://github.com/zalandoresearch/fashion-mnist and pass their directory as `path=` "
    "(`--fashion-mnist-dir` on the command line)."
)

# IDX type codes (http://yann.lecun.com/exdb/mnist/): code -> big-endian NumPy dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def keras_cache_directory() -> str:
    """Keras' Fashion-MNIST cache directory, as `keras.datasets.fashion_mnist.load_data` computes it."""
    if "KERAS_HOME" in os.environ:
        base = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    return os.path.join(os.path.expanduser(base), "datasets", "fashion-mnist")


def fashion_mnist_directories() -> list[str]:
    """The directories searched when no `path` is given: Keras' cache, then the Debian package's."""
    return [keras_cache_directory(), DEBIAN_DIRECTORY]


def how_to_get() -> str:
    """How to obtain the files (the text of the error when they are missing)."""
    return HOW_TO_GET.format(
        files=", ".join(FASHION_MNIST_FILES.values()), debian=DEBIAN_DIRECTORY, keras_cache=keras_cache_directory()
    )


def _file_in(directory: str, name: str) -> str | None:
    for candidate in (name, name + ".gz"):
        full = os.path.join(directory, candidate)
        if os.path.isfile(full):
            return full
    return None


def find_fashion_mnist(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The paths of the four IDX files: in `path` if given, else in the first directory that has them all.

    Args:
        path: A directory holding the four files (each raw or `.gz`), or
            `None` to search `fashion_mnist_directories()`.

    Returns:
        `{"train_images": ..., "train_labels": ..., "test_images": ..., "test_labels": ...}`.

    Raises:
        DatasetNotFoundError: when a file is missing, naming the missing files,
            the directories searched and how to get the files.
    """
    directories = [os.fspath(path)] if path is not None else fashion_mnist_directories()
    missing_by_directory = []
    for directory in directories:
        found = {role: _file_in(directory, name) for role, name in FASHION_MNIST_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
        missing = [FASHION_MNIST_FILES[role] + "(.gz)" for role, file in found.items() if file is None]
        missing_by_directory.append(f"{directory} lacks {', '.join(missing)}")
    raise DatasetNotFoundError(
        f"The data set 'fashion_mnist' is not available: {'; '.join(missing_by_directory)}. {how_to_get()}"
    )


def read_idx(file: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzip-compressed when its name ends in `.gz`) as a NumPy array in native byte order.

    The format: two zero bytes, a type code (0x08 unsigned byte, 0x09 signed
    byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of
    dimensions, then each dimension as a big-endian int32, then the data,
    big-endian, in C order.

    Args:
        file: Path of the file.

    Returns:
        The array (`uint8` for Fashion-MNIST's files).

    Raises:
        ValueError: when the file is not a valid IDX file (bad magic number,
            unknown type, or a size that does not match its dimensions).
    """
    name = os.fspath(file)
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(name, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"Cannot read the IDX file {name}: {type(error).__name__}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"{name} is not an IDX file: its magic number is {raw[:4].hex() or 'missing'} (expected 0000 followed "
            f"by a type code among {', '.join(f'{c:02x}' for c in _IDX_TYPES)} and the number of dimensions)."
        )
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name} is truncated: {len(raw)} bytes, shorter than its header ({header} bytes).")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{name} is corrupt: its header gives dimensions {shape} ({expected} bytes with the header), "
            f"but it has {len(raw)} bytes."
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(file: str | os.PathLike, array: np.ndarray) -> str:
    """Write `array` as an IDX file (gzip-compressed when `file` ends in `.gz`); the inverse of `read_idx`.

    Used by the tests and benchmarks to make small Fashion-MNIST-like directories.

    Args:
        file: Path of the file.
        array: An array whose dtype is one of the IDX types (`uint8` for images and labels).

    Returns:
        The path written.
    """
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_TYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"`array` must have an IDX dtype ({sorted(map(str, codes))}). Received: dtype={array.dtype}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=_IDX_TYPES[codes[dtype]]).tobytes()
    name = os.fspath(file)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(name, "wb") as handle:
        handle.write(payload)
    return name


def load_fashion_mnist_arrays(
    path: str | os.PathLike | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST as NumPy arrays, like `keras.datasets.fashion_mnist.load_data()`, from local IDX files.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = keras_actcoolr.data.load_fashion_mnist_arrays()
    x_train.shape   # (60000, 28, 28), uint8
    ```

    Args:
        path: Directory of the four IDX files, or `None` to search Keras'
            cache and the Debian package's directory (`find_fashion_mnist`).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: `uint8` images `(N, 28, 28)` and `uint8` labels `(N,)`.

    Raises:
        DatasetNotFoundError: when the files are not found (with how to get them).
        ValueError: when a file is corrupt, or images and labels do not match.
    """
    files = find_fashion_mnist(path)
    arrays = {role: read_idx(file) for role, file in files.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST {part} files do not match: images {images.shape} in {files[f'{part}_images']}, "
                f"labels {labels.shape} in {files[f'{part}_labels']} (expected (N, height, width) and (N,))."
            )
    return (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])


def validation_count(examples: int, validation_percent: int) -> int:
    """Number of training examples held out for validation: `round(examples * validation_percent / 100)`."""
    return int(round(examples * validation_percent / 100))


def fashion_mnist_split(
    split: str, validation_percent: int, path: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`(images (N, 28, 28, 1) uint8, labels (N,) int64)` of one split; validation is the end of the training set."""
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist_arrays(path)
    if split == "test":
        images, labels = x_test, y_test
    else:
        keep = len(x_train) - validation_count(len(x_train), validation_percent)
        images, labels = (x_train[:keep], y_train[:keep]) if split == "train" else (x_train[keep:], y_train[keep:])
    return images[..., None], labels.astype(np.int64)


def write_fake_fashion_mnist(
    directory: str | os.PathLike, train: int = 600, test: int = 100, seed: int = 0, gz: bool = True
) -> str:
    """Write a small Fashion-MNIST-like directory of random 28x28 images (labels `index % 10`) for tests and smoke runs.

    Example:

    ```python
    path = keras_actcoolr.data.write_fake_fashion_mnist("/tmp/fake-fmnist", train=300, test=50)
    train = keras_actcoolr.data.load("fashion_mnist", "train", path=path)
    ```

    Args:
        directory: Created if missing.
        train: Integer >= 1, training images. Defaults to `600`.
        test: Integer >= 1, test images. Defaults to `100`.
        seed: Seed of the pixels. Defaults to `0`.
        gz: Boolean, write gzip-compressed files. Defaults to `True`.

    Returns:
        The directory, to pass as `path=`.
    """
    validation.integer_at_least_one("train", train)
    validation.integer_at_least_one("test", test)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for part, count in (("train", train), ("test", test)):
        write_idx(
            os.path.join(directory, FASHION_MNIST_FILES[f"{part}_images"] + suffix),
            rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8),
        )
        write_idx(
            os.path.join(directory, FASHION_MNIST_FILES[f"{part}_labels"] + suffix),
            (np.arange(count) % 10).astype(np.uint8),
        )
    return directory
