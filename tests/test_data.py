"""keras_actcoolr.data: pipeline shapes, dtypes, normalisation, augmentation, labels and splits, on mock data."""

import ast
import os
import re
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_actcoolr import data

tfds = pytest.importorskip("tensorflow_datasets")

PACKAGE = Path(__file__).resolve().parent.parent / "keras_actcoolr"

# Supplementary section E of the ActCooLR paper: batch sizes.
PAPER_BATCH = {"fashion_mnist": 64, "cifar10": 256, "imagenet": 128, "tiny_imagenet": 128}
# Published training-set statistics (0-1 scale): FashionMNIST and CIFAR-10 computed over all
# training pixels, ImageNet's as torchvision uses them.
PUBLISHED_MEAN = {"fashion_mnist": [0.2860], "cifar10": [0.4914, 0.4822, 0.4465], "imagenet": [0.485, 0.456, 0.406]}
PUBLISHED_STD = {"fashion_mnist": [0.3530], "cifar10": [0.2470, 0.2435, 0.2616], "imagenet": [0.229, 0.224, 0.225]}


def first_batch(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def examples_by_split(make, sizes):
    """An `as_dataset_fn` for `tfds.testing.mock_data` that honours split slicing.

    `make(split_name, indices)` returns the examples (a dict of arrays) of those indices
    of the named split; `sizes` gives each split's length.
    """
    infos = {name: types.SimpleNamespace(num_examples=n) for name, n in sizes.items()}

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        instruction = tfds.core.ReadInstruction.from_spec(split) if isinstance(split, str) else split
        (absolute,) = instruction.to_absolute(infos)
        indices = np.arange(sizes[absolute.splitname])[absolute.from_ : absolute.to]
        return tf.data.Dataset.from_tensor_slices(make(absolute.splitname, indices))

    return as_dataset


def test_no_module_imports_tensorflow_datasets_at_import_time():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(name.split(".")[0] == "tensorflow_datasets" for name in names), path.name


class TestShapesAndDtypes:
    @pytest.mark.parametrize(
        "name, shape, label_shape, label_dtype",
        [
            ("cifar10", (32, 32, 3), (), np.int64),
            ("imagenet", (224, 224, 3), (1000,), np.float32),
        ],
    )
    @pytest.mark.parametrize("split", ["train", "validation", "test"])
    def test_tfds_pipelines(self, name, shape, label_shape, label_dtype, split):
        batch = 4 if name == "imagenet" else None
        with tfds.testing.mock_data(num_examples=PAPER_BATCH[name] + 3):
            images, labels = first_batch(data.load(name, split, batch_size=batch))
        size = batch or PAPER_BATCH[name]  # the paper's batch size by default
        assert images.shape == (size, *shape) and images.dtype == np.float32
        assert labels.shape == (size, *label_shape) and labels.dtype == label_dtype
        assert np.all(np.isfinite(images))

    @pytest.mark.parametrize("split", ["train", "validation", "test"])
    def test_tiny_imagenet(self, tmp_path, split):
        path = data.write_fake_tiny_imagenet(tmp_path, classes=3, per_class=10)
        images, labels = first_batch(data.load("tiny_imagenet", split, path=path, batch_size=4, validation_percent=10))
        assert images.shape == (3 if split == "validation" else 4, 64, 64, 3) and images.dtype == np.float32
        assert labels.dtype == np.int64 and set(labels) <= {0, 1, 2}

    def test_tiny_imagenet_default_batch(self, tmp_path):
        path = data.write_fake_tiny_imagenet(tmp_path, classes=2, per_class=70, val_per_class=1, size=8)
        images, _ = first_batch(data.load("tiny_imagenet", "train", path=path, image_size=8))
        assert images.shape == (PAPER_BATCH["tiny_imagenet"], 8, 8, 3)

    @pytest.mark.parametrize("name, size", [("cifar10", 8), ("imagenet", 32)])
    def test_image_size_override(self, name, size):
        with tfds.testing.mock_data(num_examples=4):
            images, _ = first_batch(data.load(name, "train", batch_size=4, image_size=size))
        assert images.shape[1:3] == (size, size)


class TestNormalisation:
    @pytest.mark.parametrize("name", ["cifar10"])
    def test_matches_numpy_on_mock_data(self, name):
        with tfds.testing.mock_data(num_examples=40):
            raw = np.stack([example["image"] for example in tfds.load(name, split="test").as_numpy_iterator()])
            images, _ = first_batch(data.load(name, "test", batch_size=40))
        mean, std = np.array(PUBLISHED_MEAN[name]), np.array(PUBLISHED_STD[name])
        expected = (raw.astype(np.float64) / 255.0 - mean) / std
        np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)
        # Statistics of the pipeline's output, per channel, against NumPy's of the raw pixels.
        raw_mean = (raw / 255.0).reshape(-1, raw.shape[-1]).mean(axis=0)
        raw_std = (raw / 255.0).reshape(-1, raw.shape[-1]).std(axis=0)
        out = images.reshape(-1, images.shape[-1]).astype(np.float64)
        np.testing.assert_allclose(out.mean(axis=0), (raw_mean - mean) / std, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.std(axis=0), raw_std / std, rtol=1e-5)

    def test_imagenet_centre_crop_of_a_constant_image(self):
        # Resizing and cropping a one-colour image leaves its colour: the output is the
        # normalised colour (up to JPEG's rounding of 1/255).
        colour = np.array([200, 100, 50], np.uint8)

        def make(split, indices):
            jpeg = tf.io.encode_jpeg(np.tile(colour, (37, 53, 1))).numpy()
            return {"image": np.array([jpeg] * len(indices)), "label": indices.astype(np.int64) % 1000}

        fn = examples_by_split(make, {"train": 20, "validation": 8})
        with tfds.testing.mock_data(as_dataset_fn=fn):
            for split in ("train", "test"):
                images, _ = first_batch(data.load("imagenet", split, batch_size=4))
                expected = (colour / 255.0 - np.array(PUBLISHED_MEAN["imagenet"])) / np.array(PUBLISHED_STD["imagenet"])
                np.testing.assert_allclose(images, np.broadcast_to(expected, images.shape), atol=2.0 / 255 / 0.224)

    def test_channel_statistics_matches_numpy(self):
        rng = np.random.default_rng(0)
        batches = [rng.integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8) for _ in range(3)]
        mean, std = data.channel_statistics(batches)
        pixels = np.concatenate(batches).reshape(-1, 3) / 255.0
        np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-9)


class TestAugmentation:
    def test_no_augmentation_on_test_split(self):
        with tfds.testing.mock_data(num_examples=8):
            first, _ = first_batch(data.load("cifar10", "test", batch_size=8))
            second, _ = first_batch(data.load("cifar10", "test", batch_size=8))
        np.testing.assert_array_equal(first, second)

    def test_random_resized_crops_differ_and_have_the_crop_size(self, tmp_path):
        path = data.write_fake_tiny_imagenet(tmp_path, classes=1, per_class=1, val_per_class=1)
        train = data.load("tiny_imagenet", "train", path=path, batch_size=1, validation_percent=0)
        crops = [first_batch(train)[0] for _ in range(4)]
        assert all(c.shape == (1, 64, 64, 3) for c in crops)
        assert any(not np.allclose(crops[0], c) for c in crops[1:])
        test = data.load("tiny_imagenet", "test", path=path, batch_size=1)
        file = os.path.join(path, "val", "images", "val_n00000000_0.JPEG")
        decoded = tf.io.decode_jpeg(tf.io.read_file(file)).numpy()
        expected = (decoded / 255.0 - np.array([0.4802, 0.4481, 0.3975])) / np.array([0.2770, 0.2691, 0.2821])
        np.testing.assert_allclose(first_batch(test)[0][0], expected, atol=1e-5)  # whole 64x64 image at test time


class TestCachingAndPrefetching:
    @pytest.mark.parametrize("cache, reads", [(None, 1), (False, 2)])
    def test_raw_examples_are_read_once(self, cache, reads):
        calls = []

        def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
            def generate():
                calls.append(split)
                for index in range(8):
                    yield {"image": np.full((32, 32, 3), index, np.uint8), "label": np.int64(index)}

            signature = {
                "image": tf.TensorSpec((32, 32, 3), tf.uint8),
                "label": tf.TensorSpec((), tf.int64),
            }
            return tf.data.Dataset.from_generator(generate, output_signature=signature)

        with tfds.testing.mock_data(as_dataset_fn=as_dataset):
            dataset = data.load("cifar10", "test", batch_size=4, cache=cache)
        first = [labels.numpy().tolist() for _, labels in dataset]
        second = [labels.numpy().tolist() for _, labels in dataset]
        assert first == second == [[0, 1, 2, 3], [4, 5, 6, 7]]
        assert len(calls) == reads
        assert "Prefetch" in type(dataset).__name__


class TestLabels:
    def test_imagenet_label_smoothing(self):
        with tfds.testing.mock_data(num_examples=8):
            _, train = first_batch(data.load("imagenet", "train", batch_size=8, image_size=32))
            _, test = first_batch(data.load("imagenet", "test", batch_size=8, image_size=32))
        high, low = 1 - 0.1 + 0.1 / 1000, 0.1 / 1000  # weight 0.1 over 1000 classes
        for row in train:
            assert np.sum(np.isclose(row, high)) == 1 and np.sum(np.isclose(row, low)) == 999
        np.testing.assert_allclose(train.sum(axis=1), 1.0, rtol=1e-6)
        assert set(np.unique(test)) == {0.0, 1.0} and np.all(test.sum(axis=1) == 1.0)

    def test_imagenet_labels_keep_the_class(self):
        def make(split, indices):
            jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()
            return {"image": np.array([jpeg] * len(indices)), "label": (indices * 7 % 1000).astype(np.int64)}

        with tfds.testing.mock_data(as_dataset_fn=examples_by_split(make, {"train": 100, "validation": 4})):
            _, labels = first_batch(data.load("imagenet", "validation", batch_size=5, image_size=8))
        # validation = train[95%:] = examples 95..99
        np.testing.assert_array_equal(labels.argmax(axis=1), np.arange(95, 100) * 7 % 1000)


class TestSplits:
    def test_split_strings(self):
        assert data.split_names("cifar10") == {"train": "train[:99%]", "validation": "train[99%:]", "test": "test"}
        assert data.split_names("fashion_mnist")["validation"] == "train[99%:]"
        imagenet = {"train": "train[:95%]", "validation": "train[95%:]", "test": "validation"}  # seed: about 5%
        assert data.split_names("imagenet") == imagenet

    @pytest.mark.parametrize("name, percent", [("cifar10", 1), ("imagenet", 5)])
    def test_validation_is_a_fixed_disjoint_part_of_train(self, name, percent):
        n = 400

        def make(split, indices):
            if name == "imagenet":
                image = np.array([tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()] * len(indices))
            else:
                channels = 1 if name == "fashion_mnist" else 3
                image = np.zeros((len(indices), 8, 8, channels), np.uint8)
            return {"image": image, "label": indices.astype(np.int64)}

        def indices(split):
            dataset = data.load(name, split, batch_size=1000, image_size=8)
            labels = np.concatenate([batch[1].numpy() for batch in dataset])
            return labels.argmax(axis=1) if labels.ndim == 2 else labels

        with tfds.testing.mock_data(as_dataset_fn=examples_by_split(make, {"train": n, "test": 10, "validation": 10})):
            train, validation = indices("train"), indices("validation")
            again = indices("validation")
        assert len(validation) == n * percent // 100
        assert len(train) + len(validation) == n
        assert set(train) | set(validation) == set(range(n))
        np.testing.assert_array_equal(np.sort(validation), np.sort(again))  # fixed, not re-drawn

    @pytest.mark.parametrize(
        "name, train_examples, expected",
        [("cifar10", 50_000, 500)],  # 1% of the published training set
    )
    def test_validation_size_on_the_real_data_sets(self, name, train_examples, expected):
        split = tfds.core.ReadInstruction.from_spec(data.split_names(name)["validation"])
        (absolute,) = split.to_absolute({"train": types.SimpleNamespace(num_examples=train_examples)})
        assert train_examples - absolute.from_ == expected

    def test_imagenet_validation_is_about_the_seeds_64143(self):
        split = tfds.core.ReadInstruction.from_spec(data.split_names("imagenet")["validation"])
        (absolute,) = split.to_absolute({"train": types.SimpleNamespace(num_examples=1_281_167)})
        assert abs((1_281_167 - absolute.from_) / 64_143 - 1) < 0.01

    def test_empty_validation_split(self, tmp_path):
        path = data.write_fake_tiny_imagenet(tmp_path, classes=2, per_class=3, size=8)
        assert list(data.load("tiny_imagenet", "validation", path=path, image_size=8)) == []

    def test_tiny_imagenet_splits(self, tmp_path):
        path = data.write_fake_tiny_imagenet(tmp_path, classes=4, per_class=25, val_per_class=3, size=8)

        def labels(split):
            dataset = data.load("tiny_imagenet", split, path=path, batch_size=1000, image_size=8)
            return np.concatenate([batch[1].numpy() for batch in dataset])

        train, validation, test = labels("train"), labels("validation"), labels("test")
        assert len(validation) == 1 and len(train) == 99  # 1% of 100
        assert np.bincount(test).tolist() == [3, 3, 3, 3]  # the labelled val directory
        np.testing.assert_array_equal(labels("validation"), validation)


class TestMissingData:
    def test_tfds_data_set_not_downloaded(self, tmp_path):
        with pytest.raises(data.DatasetNotFoundError, match="tfds build cifar10") as info:
            data.load("cifar10", data_dir=tmp_path, download=False)
        assert isinstance(info.value, FileNotFoundError)
        assert str(tmp_path) in str(info.value)

    def test_imagenet_without_the_manual_files(self, tmp_path):
        with pytest.raises(data.DatasetNotFoundError, match="ILSVRC2012_img_train.tar.*manual_dir"):
            data.load("imagenet", data_dir=tmp_path / "tfds", manual_dir=tmp_path)

    @pytest.mark.parametrize("path", [None, "missing"])
    def test_tiny_imagenet_directory_missing(self, tmp_path, path):
        with pytest.raises(data.DatasetNotFoundError, match="tiny-imagenet-200"):
            data.load("tiny_imagenet", path=None if path is None else tmp_path / path)

    def test_unknown_names(self):
        with pytest.raises(ValueError, match="Unknown data set"):
            data.load("mnist")
        with pytest.raises(ValueError, match="split"):
            data.load("cifar10", "val")

    @pytest.mark.parametrize(
        "call, message",
        [
            (
                lambda: data.load("cifar10", "val"),
                "`split` must be one of 'train', 'validation', 'test'. Received: split='val'",
            ),
            (
                lambda: data.load("cifar10", batch_size=0),
                "`batch_size` must be an integer >= 1. Received: batch_size=0",
            ),
            (
                lambda: data.load("cifar10", image_size=True),
                "`image_size` must be an integer >= 1. Received: image_size=True",
            ),
            (
                lambda: data.split_names("cifar10", 100),
                "`validation_percent` must be an integer in [0, 99]. Received: validation_percent=100",
            ),
            (
                lambda: data.split_names("cifar10", 2.5),
                "`validation_percent` must be an integer in [0, 99]. Received: validation_percent=2.5",
            ),
            (
                lambda: data.write_fake_fashion_mnist("unused", train=0),
                "`train` must be an integer >= 1. Received: train=0",
            ),
            (
                lambda: data.write_fake_fashion_mnist("unused", test=None),
                "`test` must be an integer >= 1. Received: test=None",
            ),
        ],
    )
    def test_argument_errors_name_the_argument(self, call, message):
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
