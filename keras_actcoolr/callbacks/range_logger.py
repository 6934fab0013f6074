"""`RangeAnalysisLogger`: a learning-rate range analysis at the end of chosen epochs."""

from __future__ import annotations

from typing import Any

import keras

from keras_actcoolr import temperature as T
from keras_actcoolr import validation
from keras_actcoolr.analysis import lr_range_analysis

__all__ = ["RangeAnalysisLogger"]


class RangeAnalysisLogger(keras.callbacks.Callback):
    """Runs `lr_range_analysis` during training, every `every_epochs` epochs, under any schedule.

    It reproduces the paper's analyses along training (supplementary Figures
    2-4): the temperature the network would have for each learning rate of the
    grid, at several points of a run. The analysis changes no state.

    `history` holds `{"epoch", "step", "learning_rate", "analysis"}` records,
    `analysis` being a `keras_actcoolr.RangeAnalysis` (network and per-layer
    temperatures, so the last layer's course is `analysis.layer_temperatures[:, -1]`).

    Example:

    ```python
    ranges = keras_actcoolr.RangeAnalysisLogger((x_train[:512], y_train[:512]), every_epochs=5)
    model.fit(x_train, y_train, epochs=20, callbacks=[ranges])
    ```

    Args:
        data: Data of the analyses (see `lr_range_analysis`).
        every_epochs: Integer >= 1, run after every this many epochs.
            Defaults to `1`.
        at_train_begin: Boolean, also run before the first epoch.
            Defaults to `True`.
        learning_rates: The grid: finite rates >= 0, at least 2 of them
            positive for the erf fit (with fewer, a warning, and the
            analyses' `sigma` is None). Defaults to `RANGE_LEARNING_RATES`.
        batch_size: Integer >= 1, batch size for arrays. Defaults to `32`.
        batches: Integer >= 1 or `None` (all), number of batches measured.
            Defaults to `1`.

    Raises:
        ValueError: for an argument out of its range (the message names it
            and the received value).
    """

    def __init__(
        self,
        data: Any,
        every_epochs: int = 1,
        at_train_begin: bool = True,
        learning_rates: Any = T.RANGE_LEARNING_RATES,
        batch_size: int = 32,
        batches: int | None = 1,
    ) -> None:
        super().__init__()
        self.data = data
        self.every_epochs = validation.integer_at_least_one("every_epochs", every_epochs)
        self.at_train_begin = validation.boolean("at_train_begin", at_train_begin)
        # Checked now rather than at the first analysis, in the middle of `fit`.
        self.learning_rates = validation.range_learning_rates(learning_rates)
        self.batch_size, self.batches = validation.batching(batch_size, batches)
        self.history: list[dict] = []

    def _analyse(self, epoch: int) -> None:
        optimizer = self.model.optimizer
        self.history.append(
            {
                "epoch": epoch,
                "step": int(keras.ops.convert_to_numpy(optimizer.iterations)),
                "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                "analysis": lr_range_analysis(
                    self.model, self.data, self.learning_rates, batch_size=self.batch_size, batches=self.batches
                ),
            }
        )

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.at_train_begin:
            self._analyse(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_epochs == 0:
            self._analyse(epoch + 1)
