"""`TemperatureLogger`: records, CSV and TensorBoard summaries of the measurements, under any schedule."""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np
import tensorflow as tf

from keras_actcoolr import engine
from keras_actcoolr.callbacks.base import MeasuringCallback
from keras_actcoolr.measurement import Measurement
from keras_actcoolr.records import RangeAnalysis

__all__ = ["TemperatureLogger", "heat_map_image"]


class TemperatureLogger(MeasuringCallback):
    """Measures activation pattern temperatures under any learning-rate schedule.

    It does not change the learning rate. Every `every_step` optimizer steps
    the `APTModel` measures, and `history` gets a record (the dict of a
    `keras_actcoolr.measurement.Measurement`):

    ```python
    {"step": int, "learning_rate": float, "temperature": float,
     "layers": {layer name: float}, "dead": {layer name: float},
     "positions": {layer name: float}, "saturated": [layer name, ...],
     "loss": float, "examples": int,      # these two when Keras tracks the loss
     "group_temperature": float, "group_layers": {layer name: float},
     "group_positions": {layer name: float}, "group_saturated": [layer name, ...]}
    ```

    `temperature`, `layers`, `positions` and `saturated` are the paper's
    whole-vector measurement; the `group_` keys are the same for the
    grouped measurement (patterns of groups of 8 channels, see
    `keras_actcoolr.APTReLU`), equal to the paper's for layers of at most 8
    channels.

    With `csv_path`, every record is also a CSV row (`step`, `learning_rate`,
    `temperature`, then one column per layer, then `dead/<layer>` columns,
    then `group_temperature` and `group/<layer>` columns). With `log_dir`, TensorBoard gets
    the scalars `learning_rate`, `temperature/network`,
    `temperature/<layer>`, `group_temperature/network` and
    `group_temperature/<layer>` at every measurement, and at each epoch end the
    image `temperature/heat_map` of all records so far (layers top to bottom,
    steps left to right, dark is cold; supplementary Figure 1).

    Example:

    ```python
    logger = keras_actcoolr.TemperatureLogger(every_step=10, csv_path="apt.csv", log_dir="logs")
    model.fit(x, y, epochs=2, callbacks=[logger])
    logger.history[-1]["layers"]
    ```

    Args:
        every_step: Integer >= 1, measure on optimizer steps that are
            multiples of it. Defaults to `10`.
        csv_path: Path of a CSV file to write, or `None`. Defaults to `None`.
        log_dir: TensorBoard log directory, or `None`. Defaults to `None`.
        append: Boolean, append to an existing CSV file (for a resumed run)
            instead of overwriting it. Defaults to `False`.
    """

    def __init__(
        self,
        every_step: int = 10,
        csv_path: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = None,
        append: bool = False,
    ) -> None:
        super().__init__(every_step)
        self.csv_path = None if csv_path is None else os.fspath(csv_path)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.append = bool(append)
        self._csv_file: Any = None
        self._csv_writer: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.csv_path is not None:
            exists = self.append and os.path.exists(self.csv_path) and os.path.getsize(self.csv_path) > 0
            self._csv_file = open(self.csv_path, "a" if self.append else "w", newline="")
            self._csv_writer = csv.writer(self._csv_file)
            if not exists:
                names = [layer.name for layer in self.model.apt_layers()]

                names = engine.unique_names(names)
                self._csv_writer.writerow(
                    [
                        "step",
                        "learning_rate",
                        "temperature",
                        *names,
                        *(f"dead/{name}" for name in names),
                        "group_temperature",
                        *(f"group/{name}" for name in names),
                    ]
                )
        if self.log_dir is not None and self._writer is None:
            try:
                import tensorboard  # noqa: F401  (tf.summary needs it at write time)
            except ImportError as error:
                raise ImportError(
                    "TemperatureLogger(log_dir=...) writes TensorBoard summaries and needs the "
                    "`tensorboard` package: pip install 'keras_actcoolr[tensorboard]'"
                ) from error
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_measurement(self, record: Measurement, range_analysis: RangeAnalysis | None) -> None:
        super().on_measurement(record, range_analysis)
        names = list(record.layers)
        if self._csv_writer is not None:
            group_layers = record.group_layers or {}
            self._csv_writer.writerow(
                [
                    record.step,
                    record.learning_rate,
                    record.temperature,
                    *record.layers.values(),
                    *(record.dead.get(name, 0.0) for name in names),
                    "" if record.group_temperature is None else record.group_temperature,
                    *(group_layers.get(name, "") for name in names),
                ]
            )
            self._csv_file.flush()
        if self._writer is not None:
            with self._writer.as_default(step=record.step):
                tf.summary.scalar("learning_rate", record.learning_rate)
                tf.summary.scalar("temperature/network", record.temperature)
                for name, value in record.layers.items():
                    tf.summary.scalar(f"temperature/{name}", value)
                for name, value in record.dead.items():
                    tf.summary.scalar(f"dead/{name}", value)
                if record.group_temperature is not None:
                    tf.summary.scalar("group_temperature/network", record.group_temperature)
                    for name, value in record.group_layers.items():
                        tf.summary.scalar(f"group_temperature/{name}", value)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._writer is not None and self.history:
            with self._writer.as_default(step=epoch):
                tf.summary.image("temperature/heat_map", heat_map_image(self.history)[None])
            self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        super().on_train_end(logs)
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = self._csv_writer = None
        if self._writer is not None:
            self._writer.flush()


# Anchors of the viridis colour map, from cold (0) to hot (1).
_COLOURS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]]) / 255.0


def heat_map_image(records: list[dict], pixels: int = 8) -> np.ndarray:
    """`(layers * pixels, steps, 3)` float image of the layer temperatures of `records`.

    Rows are layers (first layer on top), columns are records, colours run
    from cold (dark violet, 0) to the hottest value of the records (yellow).
    """
    records = [r for r in records if "layers" in r]
    names = list(records[0]["layers"])
    values = np.array([[r["layers"].get(name, 0.0) for r in records] for name in names], dtype=np.float64)
    top = values.max() if values.size and values.max() > 0 else 1.0
    scaled = np.clip(values / top, 0.0, 1.0) * (len(_COLOURS) - 1)
    low = np.floor(scaled).astype(int).clip(0, len(_COLOURS) - 2)
    fraction = (scaled - low)[..., None]
    image = _COLOURS[low] * (1 - fraction) + _COLOURS[low + 1] * fraction
    return np.repeat(image, pixels, axis=0).astype(np.float32)
