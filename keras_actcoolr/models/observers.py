"""The contract between an `APTModel` and the objects that ask it for measurements."""

from __future__ import annotations

import enum
import warnings
from typing import Any

from keras_actcoolr.measurement import Measurement, RangeCounts

__all__ = ["AnalysisMode", "MeasurementObserver"]


class AnalysisMode(enum.Enum):
    """Whether a measured step comes with a range analysis, and which one.

    - `NONE`: the measurement only.
    - `AFTER_STEP`: a range analysis of the step at the Table-1 rates, with
      its measurement (`on_measurement` receives both).
    - `BEFORE_STEP`: the step is taken, analysed and undone (its batch is
      used up); `on_range_analysis_before_step` receives the result.

    Example:

    ```python
    class Analyse(keras_actcoolr.callbacks.MeasuringCallback):
        def wants_range_analysis(self, step):
            return AnalysisMode.AFTER_STEP if step == 0 else AnalysisMode.NONE
    ```
    """

    NONE = "none"
    AFTER_STEP = "after_step"
    BEFORE_STEP = "before_step"

    @classmethod
    def of(cls, value: Any) -> AnalysisMode:
        """`value` as an `AnalysisMode`; the values of release 0.2.0 are deprecated but still read.

        `False` is `NONE`, `True` is `AFTER_STEP` and `"before_step"` is
        `BEFORE_STEP` (each with a `DeprecationWarning`).

        Raises:
            ValueError: for any other value.
        """
        if isinstance(value, cls):
            return value
        legacy = {False: cls.NONE, True: cls.AFTER_STEP, "before_step": cls.BEFORE_STEP}
        if isinstance(value, (bool, str)) and value in legacy:
            warnings.warn(
                f"wants_range_analysis returned {value!r}: return an `AnalysisMode` "
                f"(here `AnalysisMode.{legacy[value].name}`) instead.",
                DeprecationWarning,
                stacklevel=3,
            )
            return legacy[value]
        raise ValueError(
            "wants_range_analysis must return an `keras_actcoolr.models.AnalysisMode` (NONE, AFTER_STEP or "
            f"BEFORE_STEP). Received: {value!r}"
        )


class MeasurementObserver:
    """What `APTModel` asks of an object registered with `add_measurement_observer`.

    Subclass it and override what you need; every method has a default.
    `keras_actcoolr.callbacks.MeasuringCallback` is the subclass that is a
    Keras callback (it registers itself for the length of `fit`); a new
    controller subclasses that. The records are
    `keras_actcoolr.measurement.Measurement` and `RangeCounts` (typed, read
    like dicts).

    - `steps_to_measurement(step)`: steps from `step` to the next one to
      measure (0: measure `step`). Default: every `every_step` steps.
    - `wants_range_analysis(step)`, asked for a step to measure: an
      `AnalysisMode`. Default: `AnalysisMode.NONE`.
    - `remaining_steps`: steps left in the epoch (`None`: unknown), so that a
      call of several steps stops at the end of the data.
    - `on_measurement(record, range_analysis)` and
      `on_range_analysis_before_step(record, range_analysis)` receive the
      results (`range_analysis` is `None` without one). Defaults: nothing.
    - `on_divergence(step, loss)`: a measured step's loss is not finite;
      return `True` if handled (the state was restored). Default: `False`.
    - `drives_learning_rate`: `True` for a controller that sets the rate of
      every step; `APTModel.fit` then refuses other callbacks that set it.

    Example:

    ```python
    class Every5(MeasurementObserver):
        every_step = 5

        def __init__(self):
            self.temperatures = []

        def on_measurement(self, record, range_analysis):
            self.temperatures.append(record.temperature)

    observer = Every5()
    model.add_measurement_observer(observer)
    ```
    """

    #: Measure on the optimizer steps that are multiples of it (the default `steps_to_measurement`).
    every_step: int = 1
    #: Steps left in the epoch (None: unknown).
    remaining_steps: int | None = None
    #: Whether this observer sets the learning rate of every step (an ActCooLR-family controller).
    drives_learning_rate: bool = False

    def steps_to_measurement(self, step: int) -> int:
        """Steps from `step` to the next step to measure: every `every_step` steps."""
        return (-step) % self.every_step

    def wants_range_analysis(self, step: int) -> AnalysisMode:
        """The range analysis that the measurement of `step` needs: none by default."""
        return AnalysisMode.NONE

    def on_measurement(self, record: Measurement, range_analysis: RangeCounts | None) -> None:
        """Receives the record of a measured step, and its range analysis if one was asked for."""

    def on_range_analysis_before_step(self, record: Measurement, range_analysis: RangeCounts) -> None:
        """Receives the range analysis of a step that was taken and undone."""

    def on_divergence(self, step: int, loss: float) -> bool:
        """A measured step's loss is not finite: return True if the state was restored."""
        return False
