"""`APTModel`, whose train step measures activation pattern temperature, and `convert`."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from keras_actcoolr import engine, messages
from keras_actcoolr import temperature as T
from keras_actcoolr.layers import APTReLU, measuring
from keras_actcoolr.measurement import Measurement, RangeCounts

__all__ = ["APTModel", "convert"]

# Keras does not export its Functional class; `Model.__new__` hands it out for
# functional arguments, without initialising anything.
_Functional = type(keras.Model.__new__(keras.Model, inputs=None, outputs=None))

_COUNTS_KEY = "apt_counts"
_RANGE_KEY = "apt_range_counts"
_LOSS_KEY = "apt_batch_loss"


def _is_functional_call(args: tuple, kwargs: dict) -> bool:
    return len(args) == 2 or (len(args) == 1 and "outputs" in kwargs) or ("inputs" in kwargs and "outputs" in kwargs)


class MeasurementObserver(Protocol):
    """What `APTModel` asks of an object registered with `add_measurement_observer`.

    `keras_actcoolr.callbacks.MeasuringCallback` implements it (and registers
    itself for the length of `fit`); a new controller subclasses that. The
    records are `keras_actcoolr.measurement.Measurement` and `RangeCounts`
    (typed, read like dicts).

    - `steps_to_measurement(step)`: steps from `step` to the next one to
      measure (0: measure `step`).
    - `wants_range_analysis(step)`, asked for a step to measure: `False`,
      `True` (a range analysis of the step at the Table-1 rates, with its
      measurement), or `"before_step"` (the step is taken, analysed and
      undone; its batch is used up).
    - `remaining_steps`: steps left in the epoch (`None`: unknown), so that a
      call of several steps stops at the end of the data.
    - `on_measurement(record, range_analysis)` and
      `on_range_analysis_before_step(record, range_analysis)` receive the
      results (`range_analysis` is `None` without one).
    - `on_divergence(step, loss)` (optional): a measured step's loss is not
      finite; return `True` if handled (the state was restored).
    """

    every_step: int
    remaining_steps: int | None

    def steps_to_measurement(self, step: int) -> int: ...

    def wants_range_analysis(self, step: int) -> bool | str: ...

    def on_measurement(self, record: Measurement, range_analysis: RangeCounts | None) -> None: ...

    def on_range_analysis_before_step(self, record: Measurement, range_analysis: RangeCounts) -> None: ...


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
            if not isinstance(self, _Functional):
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
            _Functional.__init__(self, *args, **kwargs)
        else:
            keras.Model.__init__(self, *args, **kwargs)
        self._apt_observers: list = []
        self._apt_last: Measurement | None = None
        self._apt_step: int | None = None
        self._apt_trace_mode: str | None = None
        self._apt_learning_rate: float | None = None
        self._apt_warned_divergence = False

    # ------------------------------------------------------------------ API

    def apt_layers(self) -> list[APTReLU]:
        """The `APTReLU` layers of the model, in the order of `layer_temperatures()`."""
        # Keras has no public recursive walk over sublayers of any kind.
        return [layer for layer in self._flatten_layers(include_self=False) if isinstance(layer, APTReLU)]

    def layer_temperatures(self) -> dict[str, float]:
        """`{layer name: temperature}` of the last measurement (empty before any)."""
        return dict(self._apt_last["layers"]) if self._apt_last else {}

    @property
    def last_measurement(self) -> dict | None:
        """The record of the last measurement, as `TemperatureLogger.history` holds them."""
        return None if self._apt_last is None else self._apt_last.as_dict()

    def compile(self, *args: Any, **kwargs: Any) -> None:
        super().compile(*args, **kwargs)
        from keras_actcoolr.schedules import bind_schedule

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
        if optimizer is not None and not optimizer.built and self.built and self.trainable_variables:
            with self.distribute_strategy.scope():
                optimizer.build(self.trainable_variables)
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
        _check_rate_callbacks(callbacks)
        try:
            return super().fit(*args, **kwargs)
        finally:
            # Keras calls `on_train_end` only when `fit` ends normally: unregister the
            # measuring callbacks of this fit however it ended.
            self._apt_observers.clear()
            self._apt_step = None

    def make_train_function(self, force: bool = False) -> Callable:
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        self.train_function = _MeasuringTrainFunction(self, self.train_function, self._keras_train_function)
        return self.train_function

    def _keras_train_function(self) -> Callable:
        previous = self.train_function
        super().make_train_function(force=True)
        function, self.train_function = self.train_function, previous
        return function

    def train_step(self, data: Any) -> dict:
        mode = self._apt_trace_mode
        if mode is None:
            return _reducible(self.distribute_strategy, super().train_step(data))
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not all(layer.built for layer in self._flatten_layers()):
            # A subclassed model creates its variables on its first call: create
            # them symbolically first, so that the state kept below is complete.
            symbolic = keras.tree.map_structure(lambda t: keras.KerasTensor(t.shape, t.dtype), x)
            self.compute_output_spec(symbolic, **engine.training_kwargs(self))
        layers = self.apt_layers()
        trainable = list(self.trainable_variables)
        state_before = [tf.identity(v.value) for v in self.non_trainable_variables]
        weights_before = [tf.identity(v.value) for v in trainable] if mode == "estimate" else None
        step_lr = tf.cast(self.optimizer.learning_rate, tf.float64) if mode == "estimate" else None
        loss_state = _loss_state(self)
        with measuring() as measurement:
            logs = dict(super().train_step(data))
            # The measured batch's own loss: what the step added to the loss tracker (sum, count).
            batch_loss = (
                tf.stack([tf.cast(v.value, tf.float64) for v in loss_state[0]]) - loss_state[1]
                if loss_state
                else tf.zeros((2,), tf.float64)
            )
            weights_after = [tf.identity(v.value) for v in trainable]
            if mode == "estimate":
                trials = self._apt_range_trials(
                    measurement, layers, weights_before, weights_after, step_lr, state_before, x
                )
                counts, range_counts = trials[0], trials[1:]
            else:
                counts = engine.count_patterns(self, measurement, layers, weights_after, state_before, x)
        replica = tf.distribute.get_replica_context()
        alive = [measurement.layer_alive(layer) for layer in layers]
        # float64 like the counts: the all-reduce packs its tensors into one.
        alive = [tf.zeros((0,), tf.float64) if a is None else tf.cast(a, tf.float64) for a in alive]
        flat_alive = tf.concat(alive, axis=0) if alive else tf.zeros((0,), tf.float64)
        if mode == "estimate":
            counts, flat_alive, batch_loss, range_counts = replica.all_reduce(
                "sum", [counts, flat_alive, batch_loss, range_counts]
            )
            logs[_RANGE_KEY] = range_counts
        else:
            counts, flat_alive, batch_loss = replica.all_reduce("sum", [counts, flat_alive, batch_loss])
        logs[_LOSS_KEY] = batch_loss
        # (unchanged, positions, dead, channels, group unchanged, group positions) per layer.
        logs[_COUNTS_KEY] = tf.concat([counts[:, :2], _dead_counts(flat_alive, alive), counts[:, 2:]], axis=1)
        return _reducible(self.distribute_strategy, logs)

    def test_step(self, data: Any) -> dict:
        return _reducible(self.distribute_strategy, super().test_step(data))

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Keras 3's TensorFlow trainer reduces the first batch over the replicas
        # with one `strategy.reduce`, which a multi-worker
        # MultiWorkerMirroredStrategy cannot do for an `(x, y)` structure
        # (keras-team/keras#20585). The symbolic build needs only shapes: take
        # this worker's first replica's part of the batch.
        strategy = self.distribute_strategy
        if iterator is not None and _is_multi_worker(strategy):
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = keras.tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], batch)
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _apt_range_trials(
        self,
        measurement: Any,
        layers: list,
        weights_before: list,
        weights_after: list,
        step_lr: tf.Tensor,
        state: list,
        x: Any,
    ) -> tf.Tensor:
        """`[1 + K, layers, 4]` counts: the step's own, then those of the range analysis's `K` rates.

        The columns are those of `engine.count_patterns` (whole-vector, then grouped).

        Trial 0 is the pass with the weights after the step. Trial `k > 0`
        is the trial step at the `k`-th rate of `RANGE_LEARNING_RATES`
        (`engine.trial_weights`, as `lr_range_analysis` takes it):
        `w0 + (lr_k / lr) * (w1 - w0)`. How many of the rates run is read from
        the model's range switch when the step runs (0 or all), so the one
        traced function serves the steps with and without a range analysis;
        rows of the rates that did not run are zeros.
        """
        rates = tf.constant(T.RANGE_LEARNING_RATES, tf.float64)
        # Few large tensors rather than one per weight: each tensor the loop reads is a loop variable.
        flat_before, _ = _flatten(weights_before)
        flat_after, unflatten = _flatten(weights_after)
        steps = [w1 - w0 for w0, w1 in zip(flat_before, flat_after)]  # once, not once per rate

        def weights_at(k: tf.Tensor) -> list:
            if not weights_after:
                return []

            def interpolated() -> list:
                return engine.trial_weights(flat_before, steps, flat_after, tf.gather(rates, k - 1), step_lr)

            return unflatten(tf.cond(tf.equal(k, 0), lambda: list(flat_after), interpolated))

        trials = 1 + _range_switch(self).read_value()
        size = 1 + len(T.RANGE_LEARNING_RATES)
        return engine.count_trials(self, measurement, layers, trials, weights_at, state, x, size=size)

    # ------------------------------------------------------- measurements

    def _apt_due(self, step: int) -> int:
        """Steps until the next step that a callback wants measured (`-1`: none)."""
        return min((_steps_to_measurement(o, step) for o in self._apt_observers), default=-1)

    def _apt_record(self, record: Measurement, range_analysis: RangeCounts | None) -> None:
        """Keep `record` as the last measurement and give it to the observers that measure its step."""
        self._apt_last = record
        for observer in list(self._apt_observers):
            if _steps_to_measurement(observer, record.step) == 0:
                observer.on_measurement(record, range_analysis)

    def _apt_make_record(
        self,
        step: int,
        counts: np.ndarray,
        range_counts: np.ndarray | None,
        loss: float | None = None,
        examples: int | None = None,
    ) -> tuple[Measurement, RangeCounts | None]:
        names = engine.unique_names(layer.name for layer in self.apt_layers())
        rate = self._apt_learning_rate_at(step, refresh=True)
        record = Measurement.from_counts(step, rate, names, counts, loss, examples)
        range_analysis = None
        if range_counts is not None:
            range_analysis = RangeCounts(np.array(T.RANGE_LEARNING_RATES), np.asarray(range_counts, np.float64))
        return record, range_analysis

    def _apt_learning_rate_at(self, step: int, refresh: bool = False) -> float:
        """The rate of `step` (other schedules: of the last measured step, read when `refresh`)."""
        from keras_actcoolr.schedules import ActCooLRSchedule, find_schedule

        schedule = find_schedule(self.optimizer)
        if isinstance(schedule, ActCooLRSchedule):
            return schedule.value_at(step)
        if refresh or self._apt_learning_rate is None:
            # After the step: `optimizer.learning_rate` would be the rate of the next one.
            rate = schedule(step) if schedule is not None else self.optimizer.learning_rate
            self._apt_learning_rate = float(keras.ops.convert_to_numpy(rate))
        return self._apt_learning_rate

    def _apt_wants_range(self, step: int) -> list:
        """The observers that want a range analysis with the measurement of `step`."""
        return [o for o in self._apt_observers if _steps_to_measurement(o, step) == 0 and o.wants_range_analysis(step)]

    def add_measurement_observer(self, observer: MeasurementObserver) -> None:
        """Measure the steps `observer` asks for, until `remove_measurement_observer` or the end of `fit`.

        Raises:
            ValueError: when the model has no `APTReLU` layer, or runs under a
                distribution strategy that measurements do not support.
        """
        _check_strategy(self.distribute_strategy)
        if not self.apt_layers():
            raise ValueError(
                f"Model '{self.name}' has no APTReLU layer to measure. Use APTReLU in place of "
                "ReLU, or build the model with `keras_actcoolr.convert(model)`."
            )
        if observer not in self._apt_observers:
            self._apt_observers.append(observer)
        self._apt_step = None

    def remove_measurement_observer(self, observer: MeasurementObserver) -> None:
        """Stop measuring for `observer` (nothing happens if it is not registered)."""
        if observer in self._apt_observers:
            self._apt_observers.remove(observer)


@keras.saving.register_keras_serializable(package="keras_actcoolr")
class _FunctionalAPTModel(APTModel, _Functional):
    """`APTModel(inputs, outputs)`: an `APTModel` that is a Keras Functional model."""


class _MeasuringTrainFunction:
    """Runs plain Keras train functions, and the measuring variants on the steps that measure."""

    def __init__(self, model: APTModel, plain: Callable, build: Callable[[], Callable]) -> None:
        self.model = model
        self.plain = plain
        self._build = build
        self._single: dict[str | None, Callable] = {}

    def _run_single(self, mode: str | None, iterator: Any) -> dict:
        model = self.model
        if mode not in self._single:
            self._single[mode] = self._build()
        spe, model.steps_per_execution = model.steps_per_execution, 1
        model._apt_trace_mode = mode
        try:
            return self._single[mode](iterator)
        finally:
            model._apt_trace_mode = None
            model.steps_per_execution = spe

    def _measure(self, iterator: Any, step: int) -> tuple[dict, bool]:
        """Run a measured step; returns its logs and whether the step was kept."""
        model = self.model
        wanting = model._apt_wants_range(step)
        before_step = [o for o in wanting if o.wants_range_analysis(step) == "before_step"]
        # A range analysis *before* the first step: take the step, analyse it,
        # then put every variable back (the batch is used up).
        restore = contextlib.nullcontext()
        if before_step:
            # Every variable the step would create must exist now, to be put back (the
            # optimizer's slots are otherwise created inside the first step: see `_build_state`).
            _build_state(model, iterator)
            variables = list(model.variables) + list(model.optimizer.variables) + list(model.metrics_variables)
            restore = engine.restoring(variables)
        # Once the range-analysis function is traced, it measures the steps without an analysis
        # too (its switch set to no rates): no second trace of the network for this fit.
        mode = "estimate" if wanting or "estimate" in self._single else "measure"
        if mode == "estimate":
            _range_switch(model).assign(len(T.RANGE_LEARNING_RATES) if wanting else 0)
        reference = None
        with restore:
            if before_step:
                reference = _set_reference_rate(model)
            logs = self._run_single(mode, iterator)
        counts = np.asarray(logs.pop(_COUNTS_KEY), dtype=np.float64)
        total, examples = np.asarray(logs.pop(_LOSS_KEY), dtype=np.float64).reshape(-1, 2)[0]
        batch_loss = float(total / examples) if examples > 0 else None
        examples = int(round(examples))
        range_counts = logs.pop(_RANGE_KEY, None)
        range_counts = np.asarray(range_counts, dtype=np.float64) if wanting else None
        if before_step:
            record, range_analysis = model._apt_make_record(step, counts, range_counts, batch_loss, examples)
            if reference is not None:
                record = dataclasses.replace(record, learning_rate=reference)  # the rate the step was taken at
            for observer in before_step:
                observer.on_range_analysis_before_step(record, range_analysis)
            return logs, False
        loss = batch_loss
        if loss is not None and not np.isfinite(loss):
            # A diverged network's patterns stop changing: its temperature is no measurement.
            # A controller that can recover (ActCooLR's collapse guard) is told instead.
            handled = False
            for observer in list(model._apt_observers):
                on_divergence = getattr(observer, "on_divergence", None)
                if on_divergence is not None and _steps_to_measurement(observer, step) == 0:
                    handled = bool(on_divergence(step, loss)) or handled
            if handled:
                return logs, True
            if not model._apt_warned_divergence:
                messages.warn(
                    f"The loss is not finite at step {step}: the callbacks receive no temperature "
                    "measurements from now on. Use `keras.callbacks.TerminateOnNaN()` to stop such a run.",
                    stacklevel=2,
                )
                model._apt_warned_divergence = True
            return logs, True
        model._apt_record(*model._apt_make_record(step, counts, range_counts, loss, examples))
        return logs, True

    def __call__(self, iterator: Any) -> dict:
        model = self.model
        steps = model.steps_per_execution
        if not model._apt_observers:
            return self.plain(iterator)
        if model._apt_step is None or steps > 1:
            model._apt_step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        due = model._apt_due(model._apt_step)
        if due >= steps:
            logs = self.plain(iterator)
            model._apt_step += steps
            return self._decorate(logs, model._apt_step - 1)
        remaining = [o.remaining_steps for o in model._apt_observers if getattr(o, "remaining_steps", None) is not None]
        if remaining:
            # Calling a train function past the end of the data would still
            # advance `optimizer.iterations`: run the steps that are left.
            steps = min(steps, min(remaining))
        logs = None
        for _ in range(steps):
            step = model._apt_step
            try:
                kept = True
                if model._apt_due(step) == 0:
                    logs, kept = self._measure(iterator, step)
                else:
                    logs = self._run_single(None, iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                if logs is None:
                    raise
                break
            model._apt_step += int(kept)
        return self._decorate(logs, model._apt_step - 1)

    def _decorate(self, logs: dict, step: int) -> dict:
        last = self.model._apt_last
        if last is not None:
            logs = dict(logs)
            logs["temperature"] = last["temperature"]
            from keras_actcoolr.schedules import ActCooLRSchedule

            schedule = _find_schedule(self.model.optimizer)
            if isinstance(schedule, ActCooLRSchedule) and schedule.built:
                from keras_actcoolr.state import controller_state

                logs["learning_rate"] = schedule.value_at(step)
                state = controller_state(self.model.optimizer)
                logs["collapses"] = 0 if state is None else state["collapse"].get("collapses")
            else:
                logs["learning_rate"] = self.model._apt_learning_rate_at(step)
        return logs


#: The rate of the step that `ActCooLR(initial_learning_rate="auto")` takes, analyses and undoes.
BEFORE_STEP_LEARNING_RATE = 1.0


def _set_reference_rate(model: keras.Model) -> float | None:
    """Set an `ActCooLRSchedule` to `BEFORE_STEP_LEARNING_RATE` for the step taken and undone (or None).

    The trial steps of the analysis are that step scaled to each rate, so its
    own rate is no choice of the user's: a fixed one makes the analysis, and
    the first rate it gives, the same whatever the schedule's initial rate,
    bit for bit (scaling a step taken at a rate of 1e-4 up to 100 would
    magnify its float32 rounding). Called inside the block that puts the
    variables back, which undoes this too.
    """
    from keras_actcoolr.schedules import ActCooLRSchedule

    schedule = _find_schedule(model.optimizer)
    if not isinstance(schedule, ActCooLRSchedule) or not schedule.built:
        return None
    schedule.assign(
        anchor_learning_rate=BEFORE_STEP_LEARNING_RATE, drift=0.0, min_learning_rate=0.0, max_learning_rate=np.inf
    )
    return BEFORE_STEP_LEARNING_RATE


def _build_state(model: keras.Model, iterator: Any) -> None:
    """Create the variables that a first train step would create inside it.

    Without a `tf.distribute` strategy, Keras builds the optimizer (its slots:
    SGD momentums, Adam moments, a `LossScaleOptimizer`'s scale), the compiled
    metrics and the layers of a subclassed model lazily, inside the first
    traced train step; under a strategy, `fit` builds them before (Keras'
    `_symbolic_build`). A step that is taken and undone must see them all
    before it: a slot created inside the step is not among the variables put
    back, and would keep the undone step's update. Here they are built from the
    shapes of the data (`iterator.element_spec`), as `fit` under a strategy does.
    """
    spec = getattr(iterator, "element_spec", None)
    if spec is not None:
        with model.distribute_strategy.scope():
            # Keras' own build from symbolic inputs (no public name): it builds what is not built yet of
            # the layers, the compiled metrics and loss, and the optimizer.
            model._symbolic_build(data_batch=spec)
    optimizer = model.optimizer
    if not optimizer.built and model.built:
        with model.distribute_strategy.scope():
            optimizer.build(model.trainable_variables)


def _loss_state(model: keras.Model) -> tuple[list, tf.Tensor] | None:
    """The loss tracker's `(total, count)` variables and a copy of their values, or None.

    Keras tracks the training loss in a `Mean` metric named "loss" (the first of
    `model.metrics`); the difference of its state across a step is that step's
    summed loss and example count.
    """
    tracker = next((m for m in model.metrics if m.name == "loss"), None)
    if tracker is None:
        return None
    variables = {v.name: v for v in tracker.variables}
    if set(variables) != {"total", "count"}:
        return None
    pair = [variables["total"], variables["count"]]
    return pair, tf.stack([tf.cast(v.value, tf.float64) for v in pair])


def _dead_counts(flat_alive: tf.Tensor, alive: list) -> tf.Tensor:
    """`[layers, 2]` float64 (dead channels, channels) from the replica-summed `alive` vectors.

    A channel is dead on a measured batch when no replica saw it on at any position.
    """
    if not alive:
        return tf.zeros((0, 2), tf.float64)
    sizes = [tf.shape(a)[0] for a in alive]
    parts = tf.split(flat_alive, tf.stack(sizes), num=len(alive)) if len(alive) > 1 else [flat_alive]
    rows = [
        tf.stack([tf.reduce_sum(tf.cast(part <= 0, tf.float64)), tf.cast(tf.size(part), tf.float64)]) for part in parts
    ]
    return tf.stack(rows)


def _steps_to_measurement(observer: Any, step: int) -> int:
    """Steps from `step` to the next step `observer` wants measured (every `every_step` by default)."""
    method = getattr(observer, "steps_to_measurement", None)
    return int(method(step)) if method is not None else (-step) % observer.every_step


def _flatten(tensors: list) -> tuple[list, Callable[[list], list]]:
    """One flat tensor per dtype of `tensors`, and the function that cuts such flat tensors back."""
    groups: dict[Any, list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault(tensor.dtype, []).append(index)
    order = list(groups.values())
    shapes = [tuple(tensor.shape) for tensor in tensors]
    flat_shape = tf.constant([-1])  # one constant for all (fewer ops to trace)
    flats = [tf.concat([tf.reshape(tensors[i], flat_shape) for i in indices], 0) for indices in order]

    def unflatten(values: list) -> list:
        constants = {shape: tf.constant(shape, tf.int32) for shape in set(shapes)}
        pieces: list = [None] * len(tensors)
        for indices, flat in zip(order, values):
            for i, piece in zip(indices, tf.split(flat, [int(np.prod(shapes[i])) for i in indices])):
                pieces[i] = tf.reshape(piece, constants[shapes[i]])
        return pieces

    return flats, unflatten


class _RangeSwitch:
    """Holds the variable that tells a measured step how many range-analysis rates to run.

    A plain object, so that neither Keras nor `tf.train.Checkpoint` tracks the
    variable: it is no state of the model.
    """

    def __init__(self) -> None:
        with tf.init_scope():
            self.variable = tf.Variable(0, dtype=tf.int32, trainable=False, name="apt_range_rates")


#: The range switch of each model (no attribute of the model: nothing for Keras to track).
_RANGE_SWITCHES: weakref.WeakKeyDictionary[APTModel, _RangeSwitch] = weakref.WeakKeyDictionary()


def _range_switch(model: APTModel) -> tf.Variable:
    switch = _RANGE_SWITCHES.get(model)
    if switch is None:
        switch = _RANGE_SWITCHES[model] = _RangeSwitch()
    return switch.variable


def _check_rate_callbacks(callbacks: Any) -> None:
    """Refuse callbacks that change the learning rate next to an ActCooLR-family controller."""
    if callbacks is None:
        return
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = callbacks.callbacks
    callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    controllers = [c for c in callbacks if getattr(type(c), "drives_learning_rate", False) is True]
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


def _find_schedule(optimizer: Any) -> Any:
    from keras_actcoolr.schedules import find_schedule

    return find_schedule(optimizer)


# ------------------------------------------------------------ tf.distribute

_SUPPORTED_STRATEGIES = (
    tf.distribute.OneDeviceStrategy,
    tf.distribute.MirroredStrategy,
    tf.distribute.MultiWorkerMirroredStrategy,
)


def _check_strategy(strategy: Any) -> None:
    """Refuse the `tf.distribute` strategies that measured steps do not run under."""
    if isinstance(strategy, _SUPPORTED_STRATEGIES):
        return
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return  # TensorFlow's default strategy: no distribution.
    raise ValueError(
        "APTModel measures under no tf.distribute strategy, tf.distribute.OneDeviceStrategy, "
        "tf.distribute.MirroredStrategy (one machine) or tf.distribute.MultiWorkerMirroredStrategy "
        "(several machines), and under no other: Keras 3's fit does not drive ParameterServerStrategy, "
        "and TPUStrategy and CentralStorageStrategy are not supported. Build and compile the model in the "
        f"scope of a supported strategy. Received: distribute_strategy={type(strategy).__name__}"
    )


def _is_multi_worker(strategy: Any) -> bool:
    """Whether `strategy` is a MultiWorkerMirroredStrategy over more than one worker."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


def _reducible(strategy: Any, logs: dict) -> dict:
    """Step outputs that Keras 3 can reduce over the replicas of `strategy`.

    Over several workers, Keras reduces every output with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars and would
    average the per-layer counts over the layers. A leading axis of length 1
    makes it the mean over replicas: the metrics' usual mean, and for the
    counts, already summed over replicas, an exact no-op.
    """
    if not _is_multi_worker(strategy):
        return logs
    return keras.tree.map_structure(lambda value: tf.expand_dims(value, 0), logs)


# ----------------------------------------------------------------- convert

_SPLITTABLE = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)


def _relu_arguments(activation: Any) -> dict | None:
    """`APTReLU` arguments equal to a Keras activation, or None if it is not of the ReLU family."""
    name = keras.activations.serialize(activation) if callable(activation) else activation
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return {"relu": {}, "relu6": {"max_value": 6.0}, "leaky_relu": {"negative_slope": 0.2}}.get(name)


def _channel_axis(layer: Any) -> int:
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


def convert(model: keras.Model, name: str | None = None) -> APTModel:
    """Clone a Functional or Sequential model into an `APTModel` that measures its ReLUs.

    Every ReLU-family activation is replaced by an `APTReLU` with the same
    arguments: `keras.layers.ReLU` (ReLU6 included) and `keras.layers.LeakyReLU`
    layers keep their names; `Activation("relu")` layers keep their names;
    Dense and convolution layers with `activation="relu"` (or `"relu6"`,
    `"leaky_relu"`) are split into the same layer without activation (same
    name, same weights) followed by an `APTReLU` named `"<name>_relu"`.
    Weights are copied; the original model is not changed.

    Example:

    ```python
    model = keras_actcoolr.convert(keras.applications.ResNet50(weights=None))
    ```

    Args:
        model: A built Functional or Sequential `keras.Model`.
        name: Name of the new model. Defaults to the name of `model`.

    Returns:
        An `APTModel`.

    Raises:
        TypeError: if `model` is not a Functional or Sequential model.
        ValueError: if the model is not built, or has no ReLU-family activation.
    """
    if not isinstance(model, keras.Model) or not isinstance(model, (_Functional, keras.Sequential)):
        raise TypeError(
            "convert() clones Functional and Sequential models only. For a subclassed model, use "
            "`keras_actcoolr.APTReLU` in place of ReLU in its layers and subclass "
            f"`keras_actcoolr.APTModel` instead of `keras.Model`. Received: model={type(model).__name__}"
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs:
        raise ValueError(
            f"Model '{model.name}' is not built: give it an `Input` (or call it once on data) before convert()."
        )
    if isinstance(model, keras.Sequential):
        model = keras.Model(inputs, outputs, name=model.name)

    followers: dict[int, APTReLU] = {}
    # Activation layers do not know the channel axis: take the model's image data format.
    formats = {
        layer.data_format
        for layer in model._flatten_layers()
        if hasattr(layer, "data_format") and (hasattr(layer, "kernel_size") or hasattr(layer, "pool_size"))
    }
    default_axis = 1 if formats == {"channels_first"} else -1
    replaced = []

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, keras.layers.ReLU):
            arguments = {k: config[k] for k in ("max_value", "negative_slope", "threshold")}
            new = APTReLU(name=layer.name, dtype=layer.dtype_policy, **arguments, axis=config.get("axis", default_axis))
        elif isinstance(layer, keras.layers.LeakyReLU):
            new = APTReLU(
                negative_slope=config["negative_slope"], name=layer.name, dtype=layer.dtype_policy, axis=default_axis
            )
        elif isinstance(layer, keras.layers.Activation) and _relu_arguments(layer.activation) is not None:
            new = APTReLU(
                name=layer.name, dtype=layer.dtype_policy, axis=default_axis, **_relu_arguments(layer.activation)
            )
        elif isinstance(layer, _SPLITTABLE) and _relu_arguments(layer.activation) is not None:
            arguments = _relu_arguments(layer.activation)
            config["activation"] = "linear"
            new = layer.__class__.from_config(config)
            followers[id(new)] = APTReLU(
                name=f"{layer.name}_relu", dtype=layer.dtype_policy, axis=_channel_axis(layer), **arguments
            )
            replaced.append(layer.name)
            return new
        else:
            return layer.__class__.from_config(config)
        replaced.append(layer.name)
        return new

    def call_layer(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        outputs = layer(*args, **kwargs)
        follower = followers.get(id(layer))
        return follower(outputs) if follower is not None else outputs

    clone = keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer, recursive=True)
    if not replaced:
        found = _activation_names(model)
        raise ValueError(
            f"Model '{model.name}' has no ReLU-family activation (ReLU, ReLU6, LeakyReLU, "
            "Activation('relu'), or activation='relu' in a Dense or convolution layer): there is "
            "nothing for ActCooLR to measure. Replace an activation by ReLU to measure it. "
            f"Activations found: {', '.join(found) if found else 'none'}."
        )
    _copy_weights(model, clone)
    return APTModel(clone.inputs, clone.outputs, name=name or model.name)


# Keras activation layers that are not `Activation(...)` and have no `activation` attribute.
_ACTIVATION_LAYERS = {keras.layers.ELU: "elu", keras.layers.PReLU: "prelu", keras.layers.Softmax: "softmax"}


def _activation_names(model: keras.Model) -> list[str]:
    """Sorted names of the (non-linear) activations of a model's layers, nested models included."""
    names = set()
    for layer in model._flatten_layers(include_self=False):
        activation = getattr(layer, "activation", None)
        if activation is not None:
            try:
                name = keras.activations.serialize(activation) if callable(activation) else activation
            except (TypeError, ValueError):  # an unregistered custom function
                name = getattr(activation, "__name__", None)
            if isinstance(name, dict):
                name = name.get("config", name.get("class_name"))
            if isinstance(name, str) and name != "linear":
                # Keras 3 serializes `swish` under its other name, `silu`.
                names.add("silu (swish)" if name == "silu" else name)
        for cls, name in _ACTIVATION_LAYERS.items():
            if isinstance(layer, cls):
                names.add(name)
    return sorted(names)


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    # Match layers by name, not weights by position: a follower APTReLU deepens its branch,
    # which can reorder the layers (and so the weights) of a branched clone.
    for source_layer in source.layers:
        if not source_layer.weights:
            continue
        try:
            target_layer = target.get_layer(source_layer.name)
        except ValueError:
            target_layer = None
        if isinstance(source_layer, (_Functional, keras.Sequential)) and isinstance(target_layer, keras.Model):
            _copy_weights(source_layer, target_layer)
            continue
        source_weights = source_layer.weights
        target_weights = [] if target_layer is None else target_layer.weights
        if len(source_weights) != len(target_weights) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(source_weights, target_weights)
        ):
            raise ValueError(f"convert() could not match the weights of model '{source.name}' to its clone.")
        for source_weight, target_weight in zip(source_weights, target_weights):
            target_weight.assign(source_weight)
