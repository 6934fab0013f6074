"""`APTModel`, whose train step measures activation pattern temperature, and `convert`.

The package's modules, one concern each:

- `model`: `APTModel` and the check `require_apt_model`;
- `observers`: the protocol of the objects that ask for measurements
  (`MeasurementObserver`, `AnalysisMode`);
- `train_function`: `MeasuringTrainFunction`, which runs the plain and the
  measured steps and owns the observers, the step counter and the last record;
- `step`: the graph of a measured step (counts, range analysis);
- `conversion`: `convert`;
- `distribute`: the supported `tf.distribute` strategies;
- `rate_callbacks`: the check that no callback fights a controller over the rate.
"""

from keras_actcoolr.models.conversion import convert
from keras_actcoolr.models.model import APTModel, require_apt_model
from keras_actcoolr.models.observers import AnalysisMode, MeasurementObserver
from keras_actcoolr.models.rate_callbacks import check_rate_callbacks
from keras_actcoolr.models.train_function import BEFORE_STEP_LEARNING_RATE, MeasuringTrainFunction

__all__ = [
    "BEFORE_STEP_LEARNING_RATE",
    "APTModel",
    "AnalysisMode",
    "MeasurementObserver",
    "MeasuringTrainFunction",
    "check_rate_callbacks",
    "convert",
    "require_apt_model",
]
