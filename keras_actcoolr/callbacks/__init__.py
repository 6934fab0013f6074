"""Keras callbacks: the ActCooLR controllers, the measurement loggers and the 1-cycle momentum.

One module per callback; `base` holds what they share.
"""

from keras_actcoolr.callbacks.actcoolr import (
    AUTO_CEILING_FACTOR,
    FALLBACK_SIGMA,
    FALLBACK_START_TEMPERATURE,
    LOSS_AVERAGE_WARMUP,
    LOSS_AVERAGE_WEIGHT,
    SIGMA_EXAMPLES,
    ActCooLR,
)
from keras_actcoolr.callbacks.base import MeasuringCallback
from keras_actcoolr.callbacks.controller import ControllerCallback
from keras_actcoolr.callbacks.dynamic import DYNAMIC_START_PROBABILITY, DynamicActCooLR
from keras_actcoolr.callbacks.logger import TemperatureLogger, heat_map_image
from keras_actcoolr.callbacks.one_cycle_momentum import OneCycleMomentum
from keras_actcoolr.callbacks.range_logger import RangeAnalysisLogger

__all__ = [
    "AUTO_CEILING_FACTOR",
    "DYNAMIC_START_PROBABILITY",
    "FALLBACK_SIGMA",
    "FALLBACK_START_TEMPERATURE",
    "LOSS_AVERAGE_WARMUP",
    "LOSS_AVERAGE_WEIGHT",
    "SIGMA_EXAMPLES",
    "ActCooLR",
    "ControllerCallback",
    "DynamicActCooLR",
    "MeasuringCallback",
    "OneCycleMomentum",
    "RangeAnalysisLogger",
    "TemperatureLogger",
    "heat_map_image",
]
