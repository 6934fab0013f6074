"""keras_actcoolr: ActCooLR learning-rate schedules from activation pattern temperature, for Keras 3.

Reference: "ActCooLR: High-Level Learning Rate Schedules using Activation Pattern Temperature".
"""

from keras_actcoolr import state, temperature
from keras_actcoolr.analysis import RangeAnalysis, lr_range_analysis, measure_temperature
from keras_actcoolr.callbacks import (
    ActCooLR,
    DynamicActCooLR,
    OneCycleMomentum,
    RangeAnalysisLogger,
    TemperatureLogger,
)
from keras_actcoolr.layers import APTReLU
from keras_actcoolr.models import APTModel, convert
from keras_actcoolr.schedules import ActCooLRSchedule, OneCycle, StepDecay, TriangularCyclic

__version__ = "0.8.1"

__all__ = [
    "APTModel",
    "APTReLU",
    "RangeAnalysis",
    "RangeAnalysisLogger",
    "ActCooLR",
    "ActCooLRSchedule",
    "DynamicActCooLR",
    "OneCycle",
    "OneCycleMomentum",
    "StepDecay",
    "TemperatureLogger",
    "TriangularCyclic",
    "__version__",
    "convert",
    "lr_range_analysis",
    "measure_temperature",
    "state",
    "temperature",
]
