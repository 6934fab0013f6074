"""The check that no callback sets the learning rate next to an ActCooLR-family controller."""

from __future__ import annotations

from typing import Any

import keras

from keras_actcoolr.models.observers import MeasurementObserver

__all__ = ["check_rate_callbacks"]


def check_rate_callbacks(callbacks: Any) -> None:
    """Refuse callbacks that change the learning rate next to an ActCooLR-family controller.

    A controller is a `MeasurementObserver` whose `drives_learning_rate` is
    True (`ActCooLR`, `DynamicActCooLR`).

    Args:
        callbacks: What `fit` receives as `callbacks`: None, a callback, a
            list or tuple of them, or a `keras.callbacks.CallbackList`.

    Raises:
        ValueError: if `callbacks` holds a controller together with
            `keras.callbacks.ReduceLROnPlateau`,
            `keras.callbacks.LearningRateScheduler` or a second controller.
    """
    if callbacks is None:
        return
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = callbacks.callbacks
    callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    controllers = [c for c in callbacks if isinstance(c, MeasurementObserver) and c.drives_learning_rate is True]
    if not controllers:
        return
    controller = type(controllers[0]).__name__
    if len(controllers) > 1:
        names = ", ".join(type(c).__name__ for c in controllers)
        raise ValueError(
            f"Only one learning-rate controller can drive a model's ActCooLRSchedule, and `callbacks` holds "
            f"{len(controllers)}: {names}. Pass a single ActCooLR or DynamicActCooLR callback to `fit`. "
            f"Received: callbacks={[type(c).__name__ for c in callbacks]!r}"
        )
    for callback in callbacks:
        if isinstance(callback, (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)):
            conflict = type(callback).__name__
            raise ValueError(
                f"{conflict} cannot run next to {controller}: {controller} sets the learning rate of every "
                f"step through the optimizer's ActCooLRSchedule, and {conflict} would set it too. Remove "
                f"{conflict} from `callbacks`: to bound the rate, pass `min_learning_rate` and "
                f"`max_learning_rate` to {controller}; to use {conflict}, train without {controller} and "
                "compile the optimizer with a plain float learning rate. "
                f"Received: callbacks={[type(c).__name__ for c in callbacks]!r}"
            )
