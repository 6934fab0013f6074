"""`APTModel`, a `keras.Model` whose train step measures activation pattern temperature."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from keras_actcoolr import engine
from keras_actcoolr.layers import APTReLU
from keras_actcoolr.models import distribute, step
from keras_actcoolr.models.observers import MeasurementObserver
from keras_actcoolr.models.rate_callbacks import check_rate_callbacks
from keras_actcoolr.models.train_function import MeasuringTrainFunction
from keras_actcoolr.schedules import bind_schedule

__all__ = ["APTModel", "Functional", "require_apt_model"]

#: Keras' Functional model class, which Keras does not export: `Model.__new__` hands it out for
#: functional arguments, without initialising anything.
Functional = type(keras.Model.__new__(keras.Model, inputs=None, outputs=None))


def _is_functional_call(args: tuple, kwargs: dict) -> bool:
    return len(args) == 2 or (len(args) == 1 and "outputs" in kwargs) or ("inputs" in kwargs and "outputs" in kwargs)


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class APTModel(keras.Model):
    """A `keras.Model` whose train step measures activation pattern temperature.

    Use it like `keras.Model`: functionally as `APTModel(inputs, outputs)`,
    or as a base class for subclassed models. `keras_actcoolr.convert` turns
    an existing Functional or Sequential model into one.

    On the steps where a callback asks for a measurement (`ActCooLR`,
    `DynamicActCooLR`, `TemperatureLogger`), the train step

    1. keeps the non-trainable state (batch-norm statistics, seed states),
    2. runs the normal Keras train step (forward, backward, optimizer
       `apply`), during which every `APTReLU` records its pattern,
    3. runs the same batch again with the updated weights and the kept state
       through `stateless_call`, so that dropout masks and batch-norm mode are
       those of step 2 and no state changes, and counts per layer the
       positions whose pattern did not change. Counts are summed over
       replicas under `tf.distribute`.

    All other steps run the plain Keras train step, traced separately: they
    cost exactly what they cost in `keras.Model`. Measured steps are run one
    at a time, also when `steps_per_execution > 1`.

    Under `tf.distribute`, build and compile the model in the strategy's
    scope: `MirroredStrategy`, `MultiWorkerMirroredStrategy` and
    `OneDeviceStrategy` are supported, and a callback that starts measuring
    under any other strategy raises a `ValueError`.

    After a measurement, `fit`'s logs carry `temperature` (the network
    temperature, the mean over layers) and `learning_rate` (the rate of the
    step; for schedules other than `ActCooLRSchedule`, the rate of the last
    measured step).

    Example:

    ```python
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3)(inputs)
    x = keras_actcoolr.APTReLU()(x)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    model = keras_actcoolr.APTModel(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(keras_actcoolr.ActCooLRSchedule(0.1)),
        loss="sparse_categorical_crossentropy",
    )
    ```
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> APTModel:
        if cls is APTModel and _is_functional_call(args, kwargs):
            return keras.Model.__new__(_FunctionalAPTModel, *args, **kwargs)
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _is_functional_call(args, kwargs):
            if not isinstance(self, Functional):
                raise TypeError(
                    f"{type(self).__name__} is a subclass of APTModel and cannot be built from "
                    "`inputs` and `outputs`: use `keras_actcoolr.APTModel(inputs, outputs)`, or "
                    "define `call()` in the subclass."
                )
            if kwargs.get("name") is None and type(self) is _FunctionalAPTModel:
                # Keras names a model after its class, here "__functional_apt_model": a name that
                # TensorFlow refuses as a root name scope (under jit_compile).
                uid = keras.backend.get_uid("apt_model")
                kwargs["name"] = "apt_model" if uid == 1 else f"apt_model_{uid - 1}"
            Functional.__init__(self, *args, **kwargs)
        else:
            keras.Model.__init__(self, *args, **kwargs)
        self._measurer = MeasuringTrainFunction(self)

    # ------------------------------------------------------------------ API

    def apt_layers(self) -> list[APTReLU]:
        """The `APTReLU` layers of the model, in the order of `layer_temperatures()`."""
        # Keras has no public recursive walk over sublayers of any kind.
        return [layer for layer in self._flatten_layers(include_self=False) if isinstance(layer, APTReLU)]

    def layer_temperatures(self) -> dict[str, float]:
        """`{layer name: temperature}` of the last measurement (empty before any)."""
        last = self._measurer.last
        return dict(last["layers"]) if last else {}

    @property
    def last_measurement(self) -> dict | None:
        """The record of the last measurement, as `TemperatureLogger.history` holds them."""
        last = self._measurer.last
        return None if last is None else last.as_dict()

    def add_measurement_observer(self, observer: MeasurementObserver) -> None:
        """Measure the steps `observer` asks for, until `remove_measurement_observer` or the end of `fit`.

        Raises:
            TypeError: when `observer` is no `keras_actcoolr.models.MeasurementObserver`.
            ValueError: when the model has no `APTReLU` layer, or runs under a
                distribution strategy that measurements do not support.
        """
        if not isinstance(observer, MeasurementObserver):
            raise TypeError(
                "add_measurement_observer takes a `keras_actcoolr.models.MeasurementObserver` (for example a "
                f"`keras_actcoolr.callbacks.MeasuringCallback`). Received: observer of type {type(observer).__name__}"
            )
        distribute.check_strategy(self.distribute_strategy)
        require_apt_model(self, "add_measurement_observer")
        self._measurer.add_observer(observer)

    def remove_measurement_observer(self, observer: MeasurementObserver) -> None:
        """Stop measuring for `observer` (nothing happens if it is not registered)."""
        self._measurer.remove_observer(observer)

    def build_training_state(self, data: Any = None) -> None:
        """Create now the variables that a first train step would create inside it.

        Without a `tf.distribute` strategy, Keras builds the optimizer (its
        slots: SGD momentums, Adam moments, a `LossScaleOptimizer`'s scale),
        the compiled metrics and the layers of a subclassed model lazily,
        inside the first traced train step; under a strategy, `fit` builds them
        before. A state kept before the first step (a step taken and undone,
        the collapse guard's first snapshot) must see them all: a slot created
        inside the step would not be kept. Nothing happens to what is built.

        Args:
            data: Optional dataset or iterator whose `element_spec` gives the
                shapes of the batches: with it, the layers and compiled
                metrics are built too (as `fit` does under a strategy);
                without it, the optimizer of a built model.
        """
        spec = getattr(data, "element_spec", None)
        if spec is not None:
            with self.distribute_strategy.scope():
                # Keras' own build from symbolic inputs (no public name): it builds what is not built yet of
                # the layers, the compiled metrics and loss, and the optimizer.
                self._symbolic_build(data_batch=spec)
        optimizer = self.optimizer
        if not optimizer.built and self.built:
            with self.distribute_strategy.scope():
                optimizer.build(self.trainable_variables)

    def restoring_training_state(self, data: Any = None) -> contextlib.AbstractContextManager:
        """A context that puts back every variable of the model, its optimizer and its metrics on exit.

        The training state is built first (`build_training_state(data)`).
        """
        self.build_training_state(data)
        return engine.restoring(list(self.variables) + list(self.optimizer.variables) + list(self.metrics_variables))

    # ------------------------------------------------------------- compiling

    def compile(self, *args: Any, **kwargs: Any) -> None:
        super().compile(*args, **kwargs)
        bind_schedule(self.optimizer, layers=len(self.apt_layers()))

    def compile_from_config(self, config: dict) -> None:
        # As `keras.Model.compile_from_config`, through the `compile` above, so
        # that a loaded optimizer has the ActCooLR state variables to load into.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def load_weights(self, filepath: Any, skip_mismatch: bool = False, **kwargs: Any) -> None:
        """As `keras.Model.load_weights`, also restoring the optimizer and the ActCooLR state.

        A compiled model's optimizer has its variables (momentums,
        `iterations`, the `ActCooLRSchedule` state) only after its first
        step; Keras then skips the optimizer's part of a weights file. Here the
        optimizer of a built, compiled model is built first, so that
        `load_weights` into a freshly compiled model restores the learning rate
        and step count of the saved one.
        """
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and self.trainable_variables:
            self.build_training_state()
        super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)

    # ------------------------------------------------------------- training

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        """As `keras.Model.fit`; refuses callbacks that would fight an ActCooLR controller over the rate.

        Raises:
            ValueError: if `callbacks` holds an `ActCooLR` or `DynamicActCooLR`
                controller together with `keras.callbacks.ReduceLROnPlateau`,
                `keras.callbacks.LearningRateScheduler` or a second controller.
        """
        callbacks = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs).arguments.get("callbacks")
        check_rate_callbacks(callbacks)
        try:
            return super().fit(*args, **kwargs)
        finally:
            # Keras calls `on_train_end` only when `fit` ends normally: unregister the
            # measuring callbacks of this fit however it ended.
            self._measurer.end_fit()

    def make_train_function(self, force: bool = False) -> Callable:
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        self._measurer.use(self.train_function)
        self.train_function = self._measurer
        return self.train_function

    def train_step(self, data: Any) -> dict:
        return distribute.reducible(self.distribute_strategy, super().train_step(data))

    def measured_train_step(self, data: Any, mode: str, range_rates: tf.Variable) -> dict:
        """The train step of a measured step: Keras' own, then the counts of its patterns.

        Args:
            data: The batch.
            mode: `"measure"`, or `"estimate"` (also the range analysis's
                trial steps, as many as `range_rates` says when the step runs).
            range_rates: Integer variable: how many range-analysis rates run.

        Returns:
            Keras' logs, and the counts under the keys of
            `keras_actcoolr.models.step`.
        """
        if not all(layer.built for layer in self._flatten_layers()):
            # A subclassed model creates its variables on its first call: create
            # them symbolically first, so that the state kept by the step is complete.
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            symbolic = keras.tree.map_structure(lambda t: keras.KerasTensor(t.shape, t.dtype), x)
            self.compute_output_spec(symbolic, **engine.training_kwargs(self))
        logs = step.measured_logs(self, super().train_step, data, mode, range_rates)
        return distribute.reducible(self.distribute_strategy, logs)

    def test_step(self, data: Any) -> dict:
        return distribute.reducible(self.distribute_strategy, super().test_step(data))

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Keras 3's TensorFlow trainer reduces the first batch over the replicas
        # with one `strategy.reduce`, which a multi-worker
        # MultiWorkerMirroredStrategy cannot do for an `(x, y)` structure
        # (keras-team/keras#20585). The symbolic build needs only shapes: take
        # this worker's first replica's part of the batch.
        strategy = self.distribute_strategy
        if iterator is not None and distribute.is_multi_worker(strategy):
            for _, _, batches in iterator:
                data_batch = distribute.first_replica_batch(strategy, next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class _FunctionalAPTModel(APTModel, Functional):
    """`APTModel(inputs, outputs)`: an `APTModel` that is a Keras Functional model."""


def require_apt_model(model: Any, user: str) -> APTModel:
    """`model`, if it is an `APTModel` with at least one `APTReLU` layer to measure.

    Args:
        model: The model to check.
        user: Who needs it, for the message (`"ActCooLR"`, ...).

    Returns:
        `model`.

    Raises:
        ValueError: if `model` is no `APTModel`, or has no `APTReLU` layer.
    """
    if not isinstance(model, APTModel):
        raise ValueError(
            f"{user} needs a `keras_actcoolr.APTModel` (build one with `keras_actcoolr.convert(model)`). "
            f"Received: model of type {type(model).__name__}"
        )
    if not model.apt_layers():
        raise ValueError(
            f"Model '{model.name}' has no APTReLU layer to measure. Use APTReLU in place of "
            "ReLU, or build the model with `keras_actcoolr.convert(model)`."
        )
    return model
