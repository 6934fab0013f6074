"""Exact resume with `keras.callbacks.BackupAndRestore`, and reproducible trajectories.

A run interrupted in the middle of an epoch and restarted from its last backup
must continue step by step as the run that was never interrupted: same
learning rate, same controller state (anchor, drift, bounds, sigma), same
measurements and target-curve position. Keras 3's `BackupAndRestore` restarts
the interrupted epoch at its first batch, so the input here is a stream of
batches indexed by the optimizer step (as in `examples/multi_worker.py`).
"""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from controller_helpers import assert_same_state

import keras_actcoolr as kac

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "multi_worker.py"
STEPS_PER_EPOCH, EPOCHS, BATCH = 8, 4, 16
TOTAL = STEPS_PER_EPOCH * EPOCHS
EVERY, SAVE_FREQ, CRASH_AT = 3, 5, 13  # the crash is in epoch 1, the last backup (step 10) too
TIMEOUT = 120


def step_batches(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(TOTAL, BATCH, 10)).astype("float32")
    return x, (x[..., :3].sum(-1) > 0).astype("int64") + (x[..., 3] > 1)


def stream(start, nan_at=None):
    """The batches of optimizer steps `start, start + 1, ..., TOTAL - 1` (step `nan_at`'s inputs NaN)."""
    x, y = step_batches()
    if nan_at is not None:
        x[nan_at] = np.nan
    return tf.data.Dataset.from_tensor_slices((x[start:], y[start:]))


def build_model():
    # No Dropout: Keras 3's weight files do not keep its random state (see docs/distributed.md#limits).
    keras.utils.set_random_seed(4)
    inputs = keras.Input((10,))
    h = keras.layers.Dense(24, activation="relu", name="d1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Dense(16, activation="relu", name="d2")(h)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3, name="out")(h), name="net"))
    model.compile(
        optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


CONTROLLERS = {
    "actcoolr_estimated_sigma": lambda: kac.ActCooLR(
        initial_learning_rate=None, start_temperature=1.5, every_step=EVERY
    ),
    "actcoolr_given_sigma": lambda: kac.ActCooLR(
        initial_learning_rate=None, start_temperature=1.5, gamma=2.0, every_step=EVERY, sigma=1.3
    ),
    "dynamic": lambda: kac.DynamicActCooLR(start_probability=0.5, every_step=EVERY),
}


class StepRecorder(keras.callbacks.Callback):
    """Per optimizer step: the learning rate it uses and the controller state before it."""

    def __init__(self):
        super().__init__()
        self.steps = {}

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.steps[step] = (float(self.model.optimizer.learning_rate), full_state(self.model.optimizer))


def full_state(optimizer):
    """The rate's state and every controller part's fields, by `part.field` (`None` read as NaN)."""
    values = {f"rate.{k}": v for k, v in kac.schedules.find_schedule(optimizer).state().items()}
    for name, part in kac.state.controller_state(optimizer).parts.items():
        for key, value in dataclasses.asdict(part.read()).items():
            if isinstance(value, np.ndarray):
                values[f"{name}.{key}.sum"] = float(value.sum())
            else:
                values[f"{name}.{key}"] = math.nan if value is None else float(value)
    return values


class CrashAtStep(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_begin(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == self.step:
            raise RuntimeError(f"crash before step {self.step}")


class StopAtStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) >= TOTAL:
            self.model.stop_training = True


def fit(model, start, callbacks, nan_at=None):
    data = stream(start, nan_at)
    model.fit(data, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, callbacks=callbacks, shuffle=False, verbose=0)


def restored_from_backup(tmp_path):
    """A new model with the backup of `tmp_path / "backup"` loaded, and the optimizer step it resumes at."""
    model = build_model()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=SAVE_FREQ)
    backup.set_model(model)
    backup.on_train_begin()
    return model, int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def assert_same_records(records, reference, rel):
    by_step = {r["step"]: r for r in reference}
    for record in records:
        expected = by_step[record["step"]]
        assert set(record) == set(expected)
        nested = (
            "layers",
            "dead",
            "positions",
            "saturated",
            "loss",
            "group_layers",
            "group_positions",
            "group_saturated",
            "measure",
        )
        for key in ("control_temperature",):  # None when the controller held the rate
            if record.get(key) is None or expected.get(key) is None:
                assert record.get(key) == expected.get(key), (record["step"], key)
                nested += (key,)
        assert {k: v for k, v in record.items() if k not in nested} == pytest.approx(
            {k: v for k, v in expected.items() if k not in nested}, rel=rel, abs=1e-12, nan_ok=True
        ), record["step"]
        for key in ("layers", "dead", "positions", "group_layers", "group_positions"):
            assert record[key] == pytest.approx(expected[key], rel=rel, abs=1e-12), (record["step"], key)
        assert record["saturated"] == expected["saturated"]
        assert record["group_saturated"] == expected["group_saturated"]
        assert record.get("measure") == expected.get("measure")
        # The batch loss is a difference of Keras' float32 running loss sum (see above).
        assert record["loss"] == pytest.approx(expected["loss"], rel=1e-5), record["step"]


class TestBackupAndRestore:
    @pytest.mark.parametrize(
        "controller, backup_first",
        [
            # The estimated sigma's range analysis makes these two long: slow tier.
            pytest.param("actcoolr_estimated_sigma", True, marks=pytest.mark.slow),
            pytest.param("actcoolr_estimated_sigma", False, marks=pytest.mark.slow),
            ("actcoolr_given_sigma", True),
            pytest.param("dynamic", True, marks=pytest.mark.slow),  # the fast tier keeps given_sigma
        ],
        ids=["estimated_sigma", "estimated_sigma_controller_before_backup", "given_sigma", "dynamic"],
    )
    def test_resume_mid_epoch_continues_as_uninterrupted(self, tmp_path, controller, backup_first):
        make_controller = CONTROLLERS[controller]

        reference, reference_steps = make_controller(), StepRecorder()
        model = build_model()
        fit(model, 0, [reference, reference_steps])
        reference_weights = model.get_weights()
        assert sorted(reference_steps.steps) == list(range(TOTAL))

        def callbacks(controller, *others):
            backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=SAVE_FREQ)
            return [backup, controller, *others] if backup_first else [controller, backup, *others]

        crashed = build_model()
        with pytest.raises(RuntimeError, match=f"before step {CRASH_AT}"):
            fit(crashed, 0, callbacks(make_controller(), CrashAtStep(CRASH_AT)))

        # A restart: new model, new callbacks. Loading the backup first tells where the data resumes.
        model, start = restored_from_backup(tmp_path)
        assert start == CRASH_AT // SAVE_FREQ * SAVE_FREQ and start % STEPS_PER_EPOCH != 0
        resumed, resumed_steps = make_controller(), StepRecorder()
        fit(model, start, callbacks(resumed, resumed_steps, StopAtStep()))

        assert sorted(resumed_steps.steps) == list(range(start, TOTAL))
        for step in range(start, TOTAL):
            rate, state = resumed_steps.steps[step]
            expected_rate, expected_state = reference_steps.steps[step]
            assert rate == pytest.approx(expected_rate, rel=1e-9, abs=1e-12), step
            assert_same_state(state, expected_state, step)
        first = -(-start // EVERY) * EVERY
        assert [r["step"] for r in resumed.history] == list(range(first, TOTAL, EVERY))
        assert_same_records(resumed.history, reference.history, rel=1e-9)
        if controller == "actcoolr_estimated_sigma":
            # Estimated from the range analyses pooled over the first epoch; the pool is in the
            # backup, so the resumed run refines sigma exactly as the uninterrupted one did.
            assert reference.history[0]["sigma"] > 0
            assert [r["sigma"] for r in resumed.history] == [
                r["sigma"] for r in reference.history if r["step"] >= first
            ]
        for weight, expected in zip(model.get_weights(), reference_weights):
            np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-7)


class WeightsAfterEvent(keras.callbacks.Callback):
    """The model's weights at the end of the first step where the controller reported an event."""

    def __init__(self, controller):
        super().__init__()
        self.controller, self.weights, self.step = controller, None, None

    def on_train_batch_end(self, batch, logs=None):
        if self.weights is None and self.controller.events:
            self.weights = self.model.get_weights()
            self.step = self.controller.events[0]["step"]


def test_a_resumed_run_goes_back_to_the_state_it_resumed_from(tmp_path):
    # The collapse guard's kept copies live in memory (docs/method.md#guards): what a resumed run can go
    # back to is the state the backup restored, kept before the resumed fit's first step.
    make_controller = CONTROLLERS["actcoolr_given_sigma"]
    crashed = build_model()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=SAVE_FREQ)
    with pytest.raises(RuntimeError, match=f"before step {CRASH_AT}"):
        fit(crashed, 0, [backup, make_controller(), CrashAtStep(CRASH_AT)])

    # The weights of the backup, read into a model of their own.
    restored, start = restored_from_backup(tmp_path)
    backed_up = restored.get_weights()
    assert start == CRASH_AT // SAVE_FREQ * SAVE_FREQ

    # The resumed run's first measured step (a multiple of EVERY) gets a batch of NaN inputs.
    bad = -(-(start + 1) // EVERY) * EVERY
    model = build_model()
    controller = make_controller()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=SAVE_FREQ)
    watcher = WeightsAfterEvent(controller)
    with pytest.warns(UserWarning, match="Restored the state of step"):
        fit(model, start, [backup, controller, watcher, StopAtStep()], nan_at=bad)
    event = controller.events[0]
    assert event["step"] == bad and event["restored_step"] == start, event
    assert watcher.step == bad
    for weight, expected in zip(watcher.weights, backed_up):
        np.testing.assert_array_equal(weight, expected)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def run_example(tmp_path, name, *arguments):
    argv = [sys.executable, str(EXAMPLE), "--synthetic", "--epochs", "2", "--every-step", "4", *arguments]
    argv += ["--output", str(tmp_path / f"{name}.json"), "--weights", str(tmp_path / f"{name}.npz")]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    process = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if not (tmp_path / f"{name}.json").exists():
        return process, None
    result = json.loads((tmp_path / f"{name}.json").read_text())
    with np.load(tmp_path / f"{name}.npz") as weights:
        result["weights"] = [weights[key] for key in weights.files]
    return process, result


@pytest.mark.slow
class TestKilledProcess:
    def test_killed_process_resumes_as_uninterrupted(self, tmp_path):
        process, reference = run_example(tmp_path, "reference")
        assert process.returncode == 0, process.stderr[-4000:]
        # The collapse guard's kept states live in memory: a resumed run cannot repeat an event of the
        # reference after the resume point, so the comparison needs a reference without one.
        assert reference["events"] == [], reference["events"]
        backup = ["--backup-dir", str(tmp_path / "backup"), "--save-freq", str(SAVE_FREQ)]
        process, killed = run_example(tmp_path, "killed", *backup, "--kill-at-step", str(CRASH_AT))
        assert process.returncode == -signal.SIGKILL and killed is None, process.stderr[-4000:]
        process, resumed = run_example(tmp_path, "resumed", *backup)
        assert process.returncode == 0, process.stderr[-4000:]

        assert resumed["resumed_from_step"] == CRASH_AT // SAVE_FREQ * SAVE_FREQ
        assert resumed["steps"] == reference["steps"]
        assert [r["step"] for r in resumed["history"]] == list(range(12, reference["steps"], 4))
        assert_same_records(resumed["history"], reference["history"], rel=1e-9)
        assert resumed["final_learning_rate"] == pytest.approx(reference["final_learning_rate"], rel=1e-9)
        assert_same_state(resumed["controller_state"], reference["controller_state"])
        for weight, expected in zip(resumed["weights"], reference["weights"]):
            np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ determinism

DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import keras
    import numpy as np
    import keras_actcoolr as kac
    from controller_helpers import LearningRateRecorder

    tf.config.experimental.enable_op_determinism()
    data = np.random.default_rng(0)
    x = data.normal(size=(256, 6, 6, 2)).astype("float32")
    y = data.integers(0, 4, 256)


    def run(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((6, 6, 2))
        h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
        h = keras.layers.BatchNormalization(name="bn")(h)
        h = keras.layers.Dropout(0.3, name="drop")(keras.layers.Flatten(name="flat")(h))
        h = keras.layers.Dense(16, activation="relu", name="dense")(h)
        model = kac.convert(keras.Model(inputs, keras.layers.Dense(4, name="logits")(h)))
        model.compile(
            optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1), momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        controller, rates = kac.ActCooLR(initial_learning_rate=None, start_temperature=1.5, every_step=2), LearningRateRecorder()
        model.fit(x, y, batch_size=32, epochs=3, shuffle=True, verbose=0, callbacks=[controller, rates])
        return {
            "rates": rates.rates,
            "temperatures": [r["layers"] for r in controller.measurements],
            "events": controller.events,
        }


    print(json.dumps([run(int(seed)) for seed in sys.argv[1:]]))
    """
)


@pytest.mark.slow
class TestDeterminism:
    def test_same_seed_same_trajectory_with_deterministic_ops(self, tmp_path):
        script = tmp_path / "determinism.py"
        script.write_text(DETERMINISM_SCRIPT)
        # The script imports the tests' shared helpers (controller_helpers).
        path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)
        # Two processes, side by side: seeds 0, 0, 1 in the first, 0 in the second.
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), *seeds],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seeds in (["0", "0", "1"], ["0"])
        ]
        try:
            outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
        for p, (_, err) in zip(procs, outputs):
            assert p.returncode == 0, err[-4000:]
        (first, again, other), (elsewhere,) = (json.loads(out.splitlines()[-1]) for out, _ in outputs)
        # A measured step is a measurement or a collapse event of the guard.
        assert len(first["rates"]) == 24 and len(first["temperatures"]) + len(first["events"]) == 12
        assert again == first  # exactly: same process, fresh model
        assert elsewhere == first  # exactly: another process
        assert other["rates"] != first["rates"]  # the seed matters: the equality above is no accident
