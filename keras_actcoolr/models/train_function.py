"""The train function of an `APTModel`: plain Keras steps, and measured steps where an observer asks.

`MeasuringTrainFunction` owns what the measurements need between steps: the
registered observers, the step counter, the last record, the switch of the
range analysis's rates and the traced single-step functions, one per trace
mode. The mode reaches the model's step explicitly, as the step function
that a traced function runs (as Keras' trainer passes its `train_step`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# Keras' reduction of a step's outputs over the replicas, which its own train function applies (no public
# name): a measured step is reduced exactly as a plain one.
from keras.src.backend.tensorflow.trainer import reduce_per_replica

from keras_actcoolr import engine, messages
from keras_actcoolr import temperature as T
from keras_actcoolr.measurement import Measurement, RangeCounts
from keras_actcoolr.models import step as S
from keras_actcoolr.models.observers import AnalysisMode, MeasurementObserver
from keras_actcoolr.schedules import ActCooLRSchedule, find_schedule
from keras_actcoolr.state import controller_state

__all__ = ["BEFORE_STEP_LEARNING_RATE", "MeasuringTrainFunction", "single_step_function"]

#: The rate of the step that `ActCooLR(initial_learning_rate="auto")` takes, analyses and undoes.
BEFORE_STEP_LEARNING_RATE = 1.0


class MeasuringTrainFunction:
    """Runs the plain Keras train function, and single measured steps on the steps that measure.

    The model creates one and keeps it for its life; `use` gives it each new
    plain train function (`APTModel.make_train_function`), and the model's
    `train_function` is this object.

    Args:
        model: The `APTModel`.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.plain: Callable | None = None
        self.observers: list[MeasurementObserver] = []
        #: The next optimizer step (None: read it from the optimizer at the next call).
        self.step: int | None = None
        #: The record of the last measurement.
        self.last: Measurement | None = None
        self._rate_of_last_measurement: float | None = None
        self._warned_divergence = False
        self._range_rates: tf.Variable | None = None
        self._single: dict[str | None, Callable] = {}

    # ---------------------------------------------------------------- set-up

    def use(self, plain: Callable) -> None:
        """Run `plain` (Keras' train function) on the steps that do not measure; retrace the measured ones."""
        self.plain = plain
        self._single = {}

    def add_observer(self, observer: MeasurementObserver) -> None:
        if observer not in self.observers:
            self.observers.append(observer)
        self.step = None

    def remove_observer(self, observer: MeasurementObserver) -> None:
        if observer in self.observers:
            self.observers.remove(observer)

    def end_fit(self) -> None:
        """Unregister every observer (the end of `fit`, however it ended)."""
        self.observers.clear()
        self.step = None

    @property
    def range_rates(self) -> tf.Variable:
        """How many range-analysis rates a measured step runs (0 or all), read when the step runs.

        A variable of this object, not of the model: no state for Keras or
        `tf.train.Checkpoint` to track.
        """
        if self._range_rates is None:
            with tf.init_scope():
                self._range_rates = tf.Variable(0, dtype=tf.int32, trainable=False, name="apt_range_rates")
        return self._range_rates

    def _single_step(self, mode: str | None) -> Callable:
        """The traced function of one step: plain (`mode` None), `step.MEASURE` or `step.ESTIMATE`."""
        if mode not in self._single:
            model = self.model
            if mode is None:
                step_function = model.train_step
            else:
                step_function = functools.partial(model.measured_train_step, mode=mode, range_rates=self.range_rates)
            self._single[mode] = single_step_function(model, step_function)
        return self._single[mode]

    # ------------------------------------------------------------------ steps

    def __call__(self, iterator: Any) -> dict:
        model = self.model
        steps = model.steps_per_execution
        if not self.observers:
            return self.plain(iterator)
        if self.step is None or steps > 1:
            self.step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if self._due(self.step) >= steps:
            logs = self.plain(iterator)
            self.step += steps
            return self._decorate(logs, self.step - 1)
        remaining = [o.remaining_steps for o in self.observers if o.remaining_steps is not None]
        if remaining:
            # Calling a train function past the end of the data would still
            # advance `optimizer.iterations`: run the steps that are left.
            steps = min(steps, min(remaining))
        logs = None
        for _ in range(steps):
            try:
                kept = True
                if self._due(self.step) == 0:
                    logs, kept = self._measure(iterator, self.step)
                else:
                    logs = self._single_step(None)(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                if logs is None:
                    raise
                break
            self.step += int(kept)
        return self._decorate(logs, self.step - 1)

    def _due(self, step: int) -> int:
        """Steps until the next step that an observer wants measured (`-1`: none)."""
        return min((int(o.steps_to_measurement(step)) for o in self.observers), default=-1)

    def _measuring(self, step: int) -> list[MeasurementObserver]:
        """The observers that measure `step`."""
        return [o for o in self.observers if int(o.steps_to_measurement(step)) == 0]

    def _measure(self, iterator: Any, step: int) -> tuple[dict, bool]:
        """Run a measured step; returns its logs and whether the step was kept."""
        analyses = {o: AnalysisMode.of(o.wants_range_analysis(step)) for o in self._measuring(step)}
        wanting = [o for o, mode in analyses.items() if mode is not AnalysisMode.NONE]
        before_step = [o for o in wanting if analyses[o] is AnalysisMode.BEFORE_STEP]
        # A range analysis *before* the first step: take the step, analyse it,
        # then put every variable back (the batch is used up).
        restore = self.model.restoring_training_state(iterator) if before_step else contextlib.nullcontext()
        # Once the range-analysis function is traced, it measures the steps without an analysis
        # too (its rates set to none): no second trace of the network for this fit.
        mode = S.ESTIMATE if wanting or S.ESTIMATE in self._single else S.MEASURE
        if mode == S.ESTIMATE:
            self.range_rates.assign(len(T.RANGE_LEARNING_RATES) if wanting else 0)
        reference = None
        with restore:
            if before_step:
                reference = set_reference_rate(self.model.optimizer)
            logs = self._single_step(mode)(iterator)
        counts = np.asarray(logs.pop(S.COUNTS_KEY), dtype=np.float64)
        total, examples = np.asarray(logs.pop(S.LOSS_KEY), dtype=np.float64).reshape(-1, 2)[0]
        loss = float(total / examples) if examples > 0 else None
        range_counts = logs.pop(S.RANGE_KEY, None)
        results = (counts, np.asarray(range_counts, dtype=np.float64) if wanting else None, loss, int(round(examples)))
        if before_step:
            record, range_analysis = self._make_record(step, *results)
            if reference is not None:
                record = dataclasses.replace(record, learning_rate=reference)  # the rate the step was taken at
            for observer in before_step:
                observer.on_range_analysis_before_step(record, range_analysis)
            return logs, False
        if loss is not None and not np.isfinite(loss):
            self._diverged(step, loss)
            return logs, True
        record, range_analysis = self._make_record(step, *results)
        self.last = record
        for observer in list(self.observers):
            if int(observer.steps_to_measurement(step)) == 0:
                observer.on_measurement(record, range_analysis)
        return logs, True

    def _diverged(self, step: int, loss: float) -> None:
        """A measured step's loss is not finite: tell the observers, or warn once."""
        # A diverged network's patterns stop changing: its temperature is no measurement.
        # A controller that can recover (ActCooLR's collapse guard) is told instead.
        handled = False
        for observer in self._measuring(step):
            handled = bool(observer.on_divergence(step, loss)) or handled
        if handled or self._warned_divergence:
            return
        messages.warn(
            f"The loss is not finite at step {step}: the callbacks receive no temperature "
            "measurements from now on. Use `keras.callbacks.TerminateOnNaN()` to stop such a run.",
            stacklevel=3,
        )
        self._warned_divergence = True

    # ---------------------------------------------------------------- records

    def _make_record(
        self, step: int, counts: np.ndarray, range_counts: np.ndarray | None, loss: float | None, examples: int
    ) -> tuple[Measurement, RangeCounts | None]:
        names = engine.unique_names(layer.name for layer in self.model.apt_layers())
        rate = self.learning_rate_at(step, refresh=True)
        record = Measurement.from_counts(step, rate, names, counts, loss, examples)
        range_analysis = None
        if range_counts is not None:
            range_analysis = RangeCounts(np.array(T.RANGE_LEARNING_RATES), np.asarray(range_counts, np.float64))
        return record, range_analysis

    def learning_rate_at(self, step: int, refresh: bool = False) -> float:
        """The rate of `step` (other schedules: of the last measured step, read when `refresh`)."""
        optimizer = self.model.optimizer
        schedule = find_schedule(optimizer)
        if isinstance(schedule, ActCooLRSchedule):
            return schedule.value_at(step)
        if refresh or self._rate_of_last_measurement is None:
            # After the step: `optimizer.learning_rate` would be the rate of the next one.
            rate = schedule(step) if schedule is not None else optimizer.learning_rate
            self._rate_of_last_measurement = float(keras.ops.convert_to_numpy(rate))
        return self._rate_of_last_measurement

    def _decorate(self, logs: dict, step: int) -> dict:
        if self.last is None:
            return logs
        logs = dict(logs)
        logs["temperature"] = self.last["temperature"]
        schedule = find_schedule(self.model.optimizer)
        if isinstance(schedule, ActCooLRSchedule) and schedule.built:
            logs["learning_rate"] = schedule.value_at(step)
            state = controller_state(self.model.optimizer)
            logs["collapses"] = 0 if state is None else state["collapse"].get("collapses")
        else:
            logs["learning_rate"] = self.learning_rate_at(step)
        return logs


def set_reference_rate(optimizer: Any) -> float | None:
    """Set an `ActCooLRSchedule` to `BEFORE_STEP_LEARNING_RATE` for the step taken and undone (or None).

    The trial steps of the analysis are that step scaled to each rate, so its
    own rate is no choice of the user's: a fixed one makes the analysis, and
    the first rate it gives, the same whatever the schedule's initial rate,
    bit for bit (scaling a step taken at a rate of 1e-4 up to 100 would
    magnify its float32 rounding). Called inside the block that puts the
    variables back, which undoes this too.
    """
    schedule = find_schedule(optimizer)
    if not isinstance(schedule, ActCooLRSchedule) or not schedule.built:
        return None
    schedule.assign(
        anchor_learning_rate=BEFORE_STEP_LEARNING_RATE, drift=0.0, min_learning_rate=0.0, max_learning_rate=np.inf
    )
    return BEFORE_STEP_LEARNING_RATE


def single_step_function(model: keras.Model, step_function: Callable[[Any], dict]) -> Callable[[Any], dict]:
    """A train function of one step that runs `step_function`, as Keras' own with `steps_per_execution=1`.

    Traced (unless `model.run_eagerly`) with the model's `jit_compile`; run
    in each replica of the model's strategy; the outputs reduced over the
    replicas as Keras reduces them.

    Args:
        model: The model.
        step_function: A train step, `data -> logs`.

    Returns:
        A function of an iterator over the data that takes one step.
    """
    strategy = model.distribute_strategy

    @tf.autograph.experimental.do_not_convert
    def one_step_on_data(data: Any) -> dict:
        outputs = strategy.run(step_function, args=(data,))
        return reduce_per_replica(outputs, strategy, reduction="auto")

    if not model.run_eagerly:
        one_step_on_data = tf.function(one_step_on_data, reduce_retracing=True, jit_compile=model.jit_compile)

    @tf.autograph.experimental.do_not_convert
    def one_step_on_iterator(iterator: Any) -> dict:
        return one_step_on_data(_without_optionals(iterator.get_next()))

    if not model.run_eagerly:
        one_step_on_iterator = tf.function(one_step_on_iterator, reduce_retracing=True)

    def function(iterator: Any) -> dict:
        if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
            return one_step_on_iterator(iterator)
        return one_step_on_data(_without_optionals(next(iter(iterator))))

    return function


def _without_optionals(data: Any) -> Any:
    """`data` with its `tf.experimental.Optional` elements as None (as Keras' train function passes them)."""
    return keras.tree.map_structure(lambda i: None if isinstance(i, tf.experimental.Optional) else i, data)
