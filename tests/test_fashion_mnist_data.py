"""Fashion-MNIST from IDX files: parsing, search, errors, normalisation, flips and splits, on small files of our own."""

import gzip
import os
import struct

import numpy as np
import pytest

from keras_actcoolr import data
from keras_actcoolr.data import fashion_mnist as fm

MEAN, STD = 0.2860, 0.3530  # the published statistics of the 60,000 training images
NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def images_of(n, offset=0):
    """`n` 28x28 uint8 images, image i holding (7 (offset + i) + k) mod 256 at flat position k, except pixel
    (27, 13), which holds 100 + (offset + i) // 256: no two alike (up to 256 * 156 images), none symmetric."""
    ids = np.arange(offset, offset + n)
    images = ((ids[:, None] * 7 + np.arange(28 * 28)[None, :]) % 256).reshape(n, 28, 28)
    images[:, 27, 13] = 100 + ids // 256
    return images.astype(np.uint8)


def idx_bytes(array, type_code=0x08):
    """An IDX file by hand: 0, 0, type, ndim, big-endian int32 dimensions, the bytes."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_dir(directory, n_train=400, n_test=30, gz=True):
    os.makedirs(directory, exist_ok=True)
    arrays = {
        "train_images": images_of(n_train),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": images_of(n_test, offset=1000),
        "test_labels": ((np.arange(n_test) + 3) % 10).astype(np.uint8),
    }
    for role, array in arrays.items():
        path = os.path.join(directory, NAMES[role] + (".gz" if gz else ""))
        with (gzip.open if gz else open)(path, "wb") as file:
            file.write(idx_bytes(array))
    return arrays


def batches(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


class TestReadIdx:
    @pytest.mark.parametrize("gz", [True, False])
    def test_arrays(self, tmp_path, gz):
        arrays = write_dir(tmp_path, n_train=5, n_test=3, gz=gz)
        (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist_arrays(tmp_path)
        assert x_train.shape == (5, 28, 28) and x_train.dtype == np.uint8
        np.testing.assert_array_equal(x_train, arrays["train_images"])
        np.testing.assert_array_equal(y_train, [0, 1, 2, 3, 4])
        np.testing.assert_array_equal(x_test, arrays["test_images"])
        np.testing.assert_array_equal(y_test, [3, 4, 5])
        # Pixel (row 1, column 2) of image 2: (7 * 2 + 28 + 2) mod 256 = 44.
        assert x_train[2, 1, 2] == 44

    def test_big_endian_wider_types(self, tmp_path):
        values = np.array([[1, -2, 300], [65536, -70000, 7]], dtype=np.int64)
        header = bytes([0, 0, 0x0C, 2]) + struct.pack(">II", 2, 3)
        path = tmp_path / "ints-idx2-int"
        path.write_bytes(header + b"".join(struct.pack(">i", int(v)) for v in values.ravel()))
        np.testing.assert_array_equal(data.read_idx(path), values)

    def test_write_idx_is_the_inverse(self, tmp_path):
        array = images_of(3)
        path = data.write_idx(tmp_path / "x.gz", array)
        with gzip.open(path, "rb") as file:
            assert file.read() == idx_bytes(array)
        np.testing.assert_array_equal(data.read_idx(path), array)

    def test_corrupt_magic_number(self, tmp_path):
        path = tmp_path / "bad"
        path.write_bytes(b"\x12\x34\x08\x03" + bytes(12))
        with pytest.raises(ValueError, match="magic number is 12340803"):
            data.read_idx(path)

    def test_unknown_type_code(self, tmp_path):
        path = tmp_path / "bad"
        path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 2) + bytes(2))
        with pytest.raises(ValueError, match="not an IDX file"):
            data.read_idx(path)

    def test_truncated_data(self, tmp_path):
        path = tmp_path / "short"
        path.write_bytes(idx_bytes(images_of(2))[:-10])
        # The header says 16 + 2 * 784 = 1584 bytes; the file has 10 fewer.
        with pytest.raises(ValueError, match=r"corrupt: .*\(2, 28, 28\) \(1584 bytes.*1574 bytes"):
            data.read_idx(path)

    def test_not_gzip(self, tmp_path):
        path = tmp_path / "x.gz"
        path.write_bytes(idx_bytes(images_of(1)))
        with pytest.raises(ValueError, match="Cannot read the IDX file"):
            data.read_idx(path)

    def test_images_and_labels_of_different_lengths(self, tmp_path):
        write_dir(tmp_path, n_train=5, n_test=3, gz=False)
        (tmp_path / NAMES["test_labels"]).write_bytes(idx_bytes(np.zeros(4, np.uint8)))
        with pytest.raises(ValueError, match="test files do not match"):
            data.load_fashion_mnist_arrays(tmp_path)


class TestSearch:
    def test_keras_cache_respects_keras_home(self, tmp_path, monkeypatch):
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
        assert fm.keras_cache_directory() == str(tmp_path / "kh" / "datasets" / "fashion-mnist")
        write_dir(tmp_path / "kh" / "datasets" / "fashion-mnist", n_train=4, n_test=2)
        monkeypatch.setattr(fm, "DEBIAN_DIRECTORY", str(tmp_path / "nothing"))
        (x_train, _), _ = data.load_fashion_mnist_arrays()
        np.testing.assert_array_equal(x_train, images_of(4))

    def test_debian_directory_when_no_cache(self, tmp_path, monkeypatch):
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
        write_dir(tmp_path / "debian", n_train=3, n_test=2, gz=True)
        monkeypatch.setattr(fm, "DEBIAN_DIRECTORY", str(tmp_path / "debian"))
        (x_train, _), _ = data.load_fashion_mnist_arrays()
        assert len(x_train) == 3

    def test_missing_files_name_both_ways_to_get_them(self, tmp_path, monkeypatch):
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
        monkeypatch.setattr(fm, "DEBIAN_DIRECTORY", str(tmp_path / "no-debian"))
        with pytest.raises(data.DatasetNotFoundError) as info:
            data.load("fashion_mnist", "train")
        message = str(info.value)
        assert "apt-get install dataset-fashion-mnist" in message
        assert "keras.datasets.fashion_mnist.load_data()" in message
        assert "path=" in message
        assert str(tmp_path / "empty" / "datasets" / "fashion-mnist") in message
        assert str(tmp_path / "no-debian") in message
        assert isinstance(info.value, FileNotFoundError)

    def test_given_directory_missing_one_file(self, tmp_path):
        write_dir(tmp_path, n_train=3, n_test=2)
        os.remove(tmp_path / (NAMES["test_labels"] + ".gz"))
        with pytest.raises(data.DatasetNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\(\.gz\)"):
            data.load_fashion_mnist_arrays(tmp_path)


class TestPipeline:
    def test_test_split_is_normalised_as_numpy_does(self, tmp_path):
        arrays = write_dir(tmp_path, n_train=20, n_test=30)
        images, labels = batches(data.load("fashion_mnist", "test", path=tmp_path))
        raw = arrays["test_images"][..., None].astype(np.float64)
        assert images.shape == (30, 28, 28, 1) and images.dtype == np.float32
        np.testing.assert_allclose(images, (raw / 255.0 - MEAN) / STD, rtol=1e-5, atol=1e-5)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, (np.arange(30) + 3) % 10)
        # Statistics of the output against NumPy's of the raw pixels.
        np.testing.assert_allclose(images.mean(), ((raw / 255.0).mean() - MEAN) / STD, rtol=1e-5)
        np.testing.assert_allclose(images.std(), (raw / 255.0).std() / STD, rtol=1e-5)

    def test_paper_batch_size(self, tmp_path):
        write_dir(tmp_path, n_train=150, n_test=2)
        first = next(iter(data.load("fashion_mnist", "train", path=tmp_path)))
        assert first[0].shape == (64, 28, 28, 1)

    def test_training_images_are_flipped_or_not(self, tmp_path):
        arrays = write_dir(tmp_path, n_train=400, n_test=2)
        images, labels = batches(data.load("fashion_mnist", "train", path=tmp_path, seed=1, cache=False))
        assert len(images) == 396
        normalised = (arrays["train_images"][..., None] / 255.0 - MEAN) / STD
        same = mirrored = 0
        for image in images:
            matches = np.all(np.isclose(normalised, image, atol=1e-5), axis=(1, 2, 3))
            flips = np.all(np.isclose(normalised[:, :, ::-1], image, atol=1e-5), axis=(1, 2, 3))
            assert matches.sum() + flips.sum() == 1
            same += int(matches.any())
            mirrored += int(flips.any())
        assert same + mirrored == 396
        assert 140 < mirrored < 256  # 396 fair coin flips: mean 198, sd 10
        # Shuffled: not the file order.
        assert not np.array_equal(labels, np.arange(396) % 10)

    def test_splits_are_fixed_and_disjoint(self, tmp_path):
        write_dir(tmp_path, n_train=400, n_test=30)

        def source_indices(split):
            images, _ = batches(data.load("fashion_mnist", split, path=tmp_path, augment=False, cache=False))
            # Each output back on the 0-255 scale, matched to the nearest training image of the file.
            raw = (images * STD + MEAN) * 255.0
            table = images_of(400).reshape(400, -1).astype(np.float64)
            return sorted(int(np.argmin(np.abs(table - r.reshape(1, -1)).max(axis=1))) for r in raw)

        train, validation = source_indices("train"), source_indices("validation")
        # 1% of 400 = 4, the last four of the training file.
        assert validation == [396, 397, 398, 399]
        assert train == list(range(396))
        assert source_indices("validation") == validation
        test_images, _ = batches(data.load("fashion_mnist", "test", path=tmp_path))
        assert len(test_images) == 30

    def test_validation_percent_and_image_size(self, tmp_path):
        write_dir(tmp_path, n_train=200, n_test=2)
        images, _ = batches(
            data.load("fashion_mnist", "validation", path=tmp_path, validation_percent=5, image_size=12)
        )
        assert images.shape == (10, 12, 12, 1)  # 5% of 200

    def test_validation_size_of_the_real_data_set(self):
        # 1% of the published 60,000 training images.
        assert fm.validation_count(data.DATASETS["fashion_mnist"].train_examples, 1) == 600


@pytest.mark.slow
def test_the_real_files_where_installed():
    try:
        (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist_arrays()
    except data.DatasetNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    pixels = x_train.astype(np.float64) / 255.0
    spec = data.DATASETS["fashion_mnist"]
    assert pixels.mean() == pytest.approx(spec.mean[0], abs=5e-5)
    assert pixels.std() == pytest.approx(spec.std[0], abs=5e-5)
    validation = data.load("fashion_mnist", "validation")
    assert sum(int(x.shape[0]) for x, _ in validation) == 600
