"""Settings and fixtures shared by the test modules.

The default run (`python -m pytest`) skips the tests marked `slow` (child
processes, preset and zoo trainings, multi-worker runs); `python -m pytest -m slow`
runs only those, `python -m pytest -m ""` everything.
"""

import os

# Before any test module imports TensorFlow: keep its C++ start-up messages out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import inspect  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402
from controller_helpers import LearningRateRecorder  # noqa: E402


@pytest.fixture
def fresh_session():
    """A new Keras session (names, global state) and seed 0 for each test.

    Without the full garbage collection of `clear_session` (a third of a second per
    call on 2 cores): Python's own collector frees the models of earlier tests.
    """
    if "free_memory" in inspect.signature(keras.utils.clear_session).parameters:
        keras.utils.clear_session(free_memory=False)
    else:
        keras.utils.clear_session()
    keras.utils.set_random_seed(0)


@pytest.fixture
def learning_rate_recorder():
    """A fresh `LearningRateRecorder`: the rate (and momentum) each optimizer step uses."""
    return LearningRateRecorder()


@pytest.fixture(scope="session")
def nchw_convolutions():
    """Whether this CPU runs a channels-first `Conv2D`.

    TensorFlow's CPU kernels for `Conv2D` take NHWC only; NCHW runs when its oneDNN
    kernels are on (`TF_ENABLE_ONEDNN_OPTS=1`, the default on some CPUs and not on
    others). Tests check the channels-first logic on every machine without an NCHW
    convolution, and run one only where this is True.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        keras.layers.Conv2D(1, 1, data_format="channels_first")(np.ones((1, 1, 2, 2), "float32"))
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False
    return True
