"""What the data-set modules share: the description of a data set and the error for a missing one."""

from __future__ import annotations

import dataclasses

__all__ = ["DatasetNotFoundError", "DatasetSpec"]


class DatasetNotFoundError(FileNotFoundError):
    """A data set is neither prepared nor obtainable: the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one data set is read and preprocessed.

    Attributes:
        name: Our name of the data set.
        tfds_name: Its tensorflow-datasets name, or `None` (read from a directory).
        num_classes: Number of classes.
        image_size: Side of the (square) model input.
        channels: Colour channels.
        mean: Per-channel mean of the training set, on the 0-1 scale.
        std: Per-channel standard deviation of the training set, on the 0-1 scale.
        statistics_source: Where `mean` and `std` come from.
        batch_size: Default batch size (supplementary section E).
        validation_percent: Percentage of the training set held out for validation.
        train_examples: Published size of the training set (before the split).
        test_split: The split tested on.
        crop: Random resized crops for training, centre crops for testing
            (otherwise the images keep their size).
        crop_fraction: Centre crop side / resized shorter side at test time.
        label_smoothing: Smoothing of the one-hot training labels; 0 means
            sparse integer labels on every split.
        encoded: The tfds images are JPEG strings, decoded in the pipeline.
        cache: Cache the examples in memory by default.
        how_to_get: How to obtain the data set (for the error when it is missing).
    """

    name: str
    tfds_name: str | None
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    statistics_source: str
    batch_size: int
    validation_percent: int
    train_examples: int
    test_split: str = "test"
    crop: bool = False
    crop_fraction: float = 1.0
    label_smoothing: float = 0.0
    encoded: bool = False
    cache: bool = True
    how_to_get: str = ""

    @property
    def one_hot(self) -> bool:
        """Labels are one-hot (float) vectors rather than integers."""
        return self.label_smoothing > 0.0
