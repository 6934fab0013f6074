"""ActCooLR under tf.distribute: one replica vs several, one process vs several workers.

Logical devices and TF_CONFIG must be set before TensorFlow initialises, so every
distributed run happens in a child process (a script written into `tmp_path`, or
`examples/multi_worker.py`), which prints or writes its results as JSON. The
reference of each comparison is a run on one device of the same global batches.
"""

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from controller_helpers import assert_same_state
from scipy import stats

import keras_actcoolr as kac

TESTS = Path(__file__).resolve().parent
EXAMPLE = TESTS.parent / "examples" / "multi_worker.py"
DISTRIBUTED_DOC = TESTS.parent / "docs/distributed.md"
TIMEOUT = 150  # seconds for one run of child processes


def child_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    # The scripts import the tests' shared helpers (controller_helpers).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.update(TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


@contextlib.contextmanager
def processes(commands, tmp_path, tag, cwd=None):
    """Start `commands` ([(argv, env)]) with output in files; kill whatever still runs on the way out."""
    started = []
    try:
        for index, (argv, env) in enumerate(commands):
            out = open(tmp_path / f"{tag}-{index}.out", "w")
            err = open(tmp_path / f"{tag}-{index}.err", "w")
            started.append((subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=cwd), out, err))
        yield [process for process, _, _ in started]
    finally:
        for process, out, err in started:
            if process.poll() is None:
                process.kill()
            process.wait()
            out.close()
            err.close()


def wait_all(procs, tmp_path, tag, deadline):
    for index, process in enumerate(procs):
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{tag}-{index} did not finish in time")
    for index, process in enumerate(procs):
        assert process.returncode == 0, (tmp_path / f"{tag}-{index}.err").read_text()[-4000:]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_commands(tmp_path, tag, arguments, per_worker=((), ())):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(per_worker))]}
    commands = []
    for index, extra in enumerate(per_worker):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        argv = [sys.executable, str(EXAMPLE), *arguments, *extra]
        argv += ["--output", str(tmp_path / f"{tag}{index}.json")]
        argv += ["--weights", str(tmp_path / f"{tag}{index}.npz")]
        commands.append((argv, child_env(TF_CONFIG=json.dumps(config))))
    return commands


def load_run(tmp_path, name):
    result = json.loads((tmp_path / f"{name}.json").read_text())
    with np.load(tmp_path / f"{name}.npz") as weights:
        result["weights"] = [weights[key] for key in weights.files]
    return result


def assert_same_records(records, reference, rel):
    """Records of the same steps: same rate, temperatures, target and controller output."""
    by_step = {r["step"]: r for r in reference}
    assert records and all(r["step"] in by_step for r in records)
    for record in records:
        expected = by_step[record["step"]]
        assert set(record) == set(expected)
        for key in ("learning_rate", "temperature", "target_temperature", "sigma", "next_learning_rate"):
            assert record[key] == pytest.approx(expected[key], rel=rel, abs=1e-12), (record["step"], key)
        assert record["layers"] == pytest.approx(expected["layers"], rel=rel, abs=1e-12)


# --------------------------------------------------------------- MirroredStrategy

REPLICA_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    import keras_actcoolr as kac
    from controller_helpers import LearningRateRecorder

    STEPS, BATCH, EVERY = int(sys.argv[1]), 32, 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 4, STEPS * BATCH)


    def run(devices):
        strategy = tf.distribute.MirroredStrategy(devices) if devices else tf.distribute.get_strategy()
        with strategy.scope():
            keras.utils.set_random_seed(3)
            inputs = keras.Input((6, 6, 2))
            h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inputs)
            h = keras.layers.LeakyReLU(0.1, name="leaky")(keras.layers.Conv2D(4, 3, name="conv2")(h))
            h = keras.layers.Dense(12, activation="relu", name="dense")(keras.layers.Flatten()(h))
            model = kac.convert(keras.Model(inputs, keras.layers.Dense(4, name="logits")(h)))
            model.compile(
                optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1), momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        controller = kac.ActCooLR(initial_learning_rate=None, start_temperature=1.5, every_step=EVERY)  # sigma estimated: range analysis
        rates = LearningRateRecorder()
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[controller, rates])
        state = [v for v in model.optimizer.variables if v.name.startswith("actcoolr_")]
        local = lambda variable: strategy.experimental_local_results(variable.value)
        return {
            "replicas": strategy.num_replicas_in_sync,
            "history": controller.measurements,
            "events": controller.events,
            "rates": rates.rates,
            "weights": [w.tolist() for w in model.get_weights()],
            # Every replica's copy of the controller state and of the weights.
            "replica_state": [[np.asarray(c).tolist() for c in local(v)] for v in state],
            "replica_weights_equal": all(
                all(np.array_equal(np.asarray(c), np.asarray(local(v)[0])) for c in local(v))
                for v in model.trainable_variables
            ),
        }


    print(json.dumps({"none": run(None), "one": run(["/cpu:0"]), "two": run(["/cpu:0", "/cpu:1"])}))
    """
)


@pytest.mark.slow
class TestMirroredStrategy:
    def test_one_and_two_replicas_give_the_same_temperatures_and_rates(self, tmp_path):
        steps = 24
        script = tmp_path / "replicas.py"
        script.write_text(REPLICA_SCRIPT)
        with processes([([sys.executable, str(script), str(steps)], child_env())], tmp_path, "replicas") as procs:
            wait_all(procs, tmp_path, "replicas", time.monotonic() + TIMEOUT)
        runs = json.loads((tmp_path / "replicas-0.out").read_text().splitlines()[-1])
        reference, one, two = runs["none"], runs["one"], runs["two"]
        assert (reference["replicas"], one["replicas"], two["replicas"]) == (1, 1, 2)

        # The controller ran once per measured step, not once per replica.
        measured = list(range(0, steps, 2))
        for run in (reference, one, two):
            # A measured step is a measurement or a collapse event of the guard.
            assert sorted(r["step"] for r in run["history"] + run["events"]) == measured
            assert len(run["rates"]) == steps
        assert len(set(np.round(reference["rates"], 6))) > 5  # the controller moved the rate
        for run in (one, two):
            assert_same_records(run["history"], reference["history"], rel=1e-6)
            # The guards decided the same on one replica and on two (collapse events included).
            assert [(e["step"], e["reason"]) for e in run["events"]] == [
                (e["step"], e["reason"]) for e in reference["events"]
            ]
            np.testing.assert_allclose(run["rates"], reference["rates"], rtol=1e-6)
            for weight, expected in zip(run["weights"], reference["weights"]):
                np.testing.assert_allclose(weight, expected, rtol=1e-4, atol=1e-5)
        # Every replica holds the same controller state and applied the same update.
        assert all(len({json.dumps(c) for c in copies}) == 1 and len(copies) == 2 for copies in two["replica_state"])
        assert two["replica_weights_equal"]


def small_model(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(3, activation="relu")(inputs)
        model = kac.convert(keras.Model(inputs, keras.layers.Dense(2)(hidden)))
        model.compile(optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1)), loss="mse")
    return model


class TestStrategyCheck:
    def test_central_storage_strategy_is_refused_by_name(self):
        model = small_model(tf.distribute.experimental.CentralStorageStrategy())
        x, y = np.ones((8, 4), "float32"), np.ones((8, 2), "float32")
        for callback in (
            kac.TemperatureLogger(every_step=1),
            kac.ActCooLR(initial_learning_rate=None, sigma=1.0, every_step=1),
        ):
            with pytest.raises(ValueError, match="MultiWorkerMirroredStrategy") as error:
                model.fit(x, y, batch_size=4, callbacks=[callback], verbose=0)
            assert "MirroredStrategy" in str(error.value) and "CentralStorageStrategy" in str(error.value)

    def test_one_device_strategy_is_accepted(self):
        model = small_model(tf.distribute.OneDeviceStrategy("/cpu:0"))
        controller = kac.ActCooLR(initial_learning_rate=None, sigma=1.0, every_step=1)
        x, y = np.ones((8, 4), "float32"), np.ones((8, 2), "float32")
        model.fit(x, y, batch_size=4, callbacks=[controller], verbose=0)
        assert [r["step"] for r in controller.history] == [0, 1]


# ---------------------------------------------------- MultiWorkerMirroredStrategy

# Digits: 1437 training images, global batches of 64: 22 steps per epoch, 44 in all.
EVERY = 4
EXAMPLE_ARGUMENTS = ["--epochs", "2", "--every-step", str(EVERY), "--batch-size", "64", "--seed", "1"]
TOTAL_STEPS = 44
SAVE_FREQ, CRASH_AT = 5, 13


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Digits runs of examples/multi_worker.py: one process, and two workers, both uninterrupted."""
    pytest.importorskip("sklearn")
    tmp_path = tmp_path_factory.mktemp("multi_worker")
    single = [sys.executable, str(EXAMPLE), *EXAMPLE_ARGUMENTS]
    single += ["--output", str(tmp_path / "single.json"), "--weights", str(tmp_path / "single.npz")]
    with processes([(single, child_env())], tmp_path, "single") as procs:
        wait_all(procs, tmp_path, "single", time.monotonic() + TIMEOUT)
    with processes(worker_commands(tmp_path, "worker", EXAMPLE_ARGUMENTS), tmp_path, "workers") as procs:
        wait_all(procs, tmp_path, "workers", time.monotonic() + TIMEOUT)
    return tmp_path, {name: load_run(tmp_path, name) for name in ("single", "worker0", "worker1")}


@pytest.mark.slow
class TestMultiWorkerMirroredStrategy:
    def test_two_workers_end_identical_and_equal_to_one_process(self, runs):
        _, results = runs
        single, workers = results["single"], [results["worker0"], results["worker1"]]
        assert single["workers"] == 1 and single["replicas"] == 1
        for index, worker in enumerate(workers):
            assert worker["task"] == {"type": "worker", "index": index}
            assert (worker["workers"], worker["replicas"], worker["steps"]) == (2, 2, TOTAL_STEPS)

        # The two workers hold bit for bit the same weights and controller.
        first, second = workers
        assert first["weights_sha256"] == second["weights_sha256"]
        for a, b in zip(first["weights"], second["weights"]):
            np.testing.assert_array_equal(a, b)
        assert first["final_learning_rate"] == second["final_learning_rate"]
        assert first["controller_state"] == second["controller_state"]
        assert first["history"] == second["history"]

        # ... and the same as one process on the same global batches.
        assert single["steps"] == TOTAL_STEPS
        assert [r["step"] for r in first["history"]] == list(range(0, TOTAL_STEPS, EVERY))
        assert_same_records(first["history"], single["history"], rel=1e-6)
        assert first["final_learning_rate"] == pytest.approx(single["final_learning_rate"], rel=1e-6)
        assert_same_state(first["controller_state"], single["controller_state"], rel=1e-6, loss_rel=1e-6)
        for a, b in zip(first["weights"], single["weights"]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    def test_crashed_worker_and_restarted_cluster_continue_as_uninterrupted(self, runs):
        tmp_path, results = runs
        arguments = [*EXAMPLE_ARGUMENTS, "--backup-dir", str(tmp_path / "backup"), "--save-freq", str(SAVE_FREQ)]
        # Worker 1 crashes before step CRASH_AT; worker 0, stuck in the step's all-reduce, is then killed.
        crash = worker_commands(tmp_path, "crash", arguments, per_worker=((), ("--kill-at-step", str(CRASH_AT))))
        with processes(crash, tmp_path, "crash") as procs:
            procs[1].wait(timeout=TIMEOUT)
            assert procs[1].returncode == -signal.SIGKILL, (tmp_path / "crash-1.err").read_text()[-4000:]
            procs[0].kill()  # as a cluster manager would; it cannot take the step alone anyway
        assert not (tmp_path / "crash0.json").exists() and not (tmp_path / "crash1.json").exists()

        with processes(worker_commands(tmp_path, "resumed", arguments), tmp_path, "resumed") as procs:
            wait_all(procs, tmp_path, "resumed", time.monotonic() + TIMEOUT)
        resumed = [load_run(tmp_path, "resumed0"), load_run(tmp_path, "resumed1")]
        uninterrupted = results["worker0"]
        start = CRASH_AT // SAVE_FREQ * SAVE_FREQ  # backups every SAVE_FREQ steps: the last one before the crash
        for worker in resumed:
            assert worker["resumed_from_step"] == start
            assert worker["steps"] == TOTAL_STEPS
            # Measurements from the resumed step on, with the same controller state, as never interrupted.
            assert [r["step"] for r in worker["history"]] == list(range(-(-start // EVERY) * EVERY, TOTAL_STEPS, EVERY))
            assert_same_records(worker["history"], uninterrupted["history"], rel=1e-9)
            assert worker["final_learning_rate"] == pytest.approx(uninterrupted["final_learning_rate"], rel=1e-9)
            assert_same_state(worker["controller_state"], uninterrupted["controller_state"])
            for a, b in zip(worker["weights"], uninterrupted["weights"]):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert resumed[0]["weights_sha256"] == resumed[1]["weights_sha256"]
        assert not (tmp_path / "backup" / "worker-0").exists()  # deleted at the end of a finished fit


# ------------------------------------------------------------- docs/distributed.md


def distributed_snippets():
    section = DISTRIBUTED_DOC.read_text()
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_readme_snippets_run(tmp_path):
    snippets = distributed_snippets()
    assert len(snippets) == 2
    assert "MirroredStrategy()" in snippets[0] and "MultiWorkerMirroredStrategy()" in snippets[1]
    commands = []
    # After each snippet, its controller's last record as JSON, to replay by hand below.
    probe = (
        "\nimport json\nrecord = (globals().get('controller') or callbacks[0]).measurements[-1]\n"
        "iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))\n"
        "print(json.dumps(dict(record, iterations=iterations), default=float))\n"
    )
    for index, code in enumerate(snippets):
        (tmp_path / f"snippet{index}.py").write_text(code + probe)
        commands.append(([sys.executable, str(tmp_path / f"snippet{index}.py")], child_env()))
    # Side by side, each in its own process (TF_CONFIG unset: a cluster of one worker), in tmp_path.
    with processes(commands, tmp_path, "snippet", cwd=tmp_path) as procs:
        wait_all(procs, tmp_path, "snippet", time.monotonic() + TIMEOUT)
    for index in range(2):
        *_, printed, last = (tmp_path / f"snippet-{index}.out").read_text().splitlines()
        replicas, rate = printed.split()
        record = json.loads(last)
        assert int(replicas) == 1
        # 1024 examples, global batch 64, 2 epochs: 32 batches (the first one analysed before the first
        # step and undone), measured every 4; T0 = 1.5, gamma = 1, progress over 32 steps.
        assert record["step"] == 28
        low, high = 1e-7, record["max_learning_rate"]
        followed = record["control_temperature"]  # the guards leave out dead and saturated layers
        p, p_target = (min(max(1 - 2.0**-t, 1e-6), 1 - 1e-6) for t in (followed, 1.5 * (1 - 28 / 32)))
        lr = record["learning_rate"]
        # The target rate is clipped to the bounds before the step towards it.
        target_rate = min(
            max(lr * math.exp(record["sigma"] * (stats.norm.ppf(p_target) - stats.norm.ppf(p))), low), high
        )
        d = (target_rate - lr) / 4
        if record["runaway"]:  # the runaway guard holds the rate
            d = 0.0
        # Step 28 + 4 reaches the last tenth of the 32 steps (from 28.8): the final-anneal guard lets
        # the rate only fall there.
        d = min(d, 0.0)
        anchor = min(max(lr + d, low), high)
        # The first snippet prints the rate set for step 29; the second the rate after fit: d / 4 per step since.
        expected = anchor if index == 0 else min(max(anchor + (record["iterations"] - 29) * d / 4, low), high)
        assert float(rate) == pytest.approx(expected, rel=1e-6)
    assert not (tmp_path / "actcoolr_backup" / "worker-0").exists()  # deleted at the end of fit
