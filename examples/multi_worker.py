"""Train a small converted CNN with ActCooLR as one worker of a `MultiWorkerMirroredStrategy` cluster.

    python examples/multi_worker.py [--epochs 3] [--batch-size 64] [--output result.json]

With `TF_CONFIG` set, the process is one worker of the cluster it describes and
trains with `tf.distribute.MultiWorkerMirroredStrategy`: every worker runs this
same script, the global batch is split between the workers, pattern counts and
gradients are summed over all of them, and every worker runs the same ActCooLR
controller on the same numbers. Without `TF_CONFIG`, it trains in one process
(no strategy), on the same global batches.

Two processes on one machine (free ports of your choice):

    export CLUSTER='{"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]}'
    TF_CONFIG="{\"cluster\": $CLUSTER, \"task\": {\"type\": \"worker\", \"index\": 0}}" \
        python examples/multi_worker.py --output worker0.json &
    TF_CONFIG="{\"cluster\": $CLUSTER, \"task\": {\"type\": \"worker\", \"index\": 1}}" \
        python examples/multi_worker.py --output worker1.json
    wait

Fault tolerance: with `--backup-dir`, `keras.callbacks.BackupAndRestore` saves
the weights, the optimizer and the ActCooLR state every `--save-freq` steps (one
sub-directory per worker); a run started again with the same arguments
continues from the last backup. Keras 3's `BackupAndRestore` restarts an
interrupted epoch at its first batch, so the input here is a stream of batches
indexed by the optimizer step: the restarted run gets the same batches as a run
that was never interrupted, and stops at the same step. `--kill-at-step N`
simulates a crash: the process kills itself (SIGKILL) before step N.

The digits ship inside scikit-learn; `--synthetic` uses random data instead
and needs no scikit-learn. `--output` writes a JSON summary: the final learning
rate, the controller state and history, and a checksum of the weights, which is
the same on every worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import keras_actcoolr as kac

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quickstart import load_digits, split_train_test  # noqa: E402  (the example next to this one)


def controller_values(optimizer):
    """The rate's state and every controller part's scalar fields (`part.field`), as Python numbers or None."""
    values = dict(kac.schedules.find_schedule(optimizer).state())
    for name, part in kac.state.controller_state(optimizer).parts.items():
        for field, value in dataclasses.asdict(part.read()).items():
            if value is None or np.ndim(value) == 0:
                values[f"{name}.{field}"] = None if value is None else float(value)
    return values


def load_data(synthetic: bool, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Images of shape (n, 8, 8, 1) in [0, 1] and labels 0..9, split 80/20 with a fixed seed."""
    if not synthetic:
        return load_digits(seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(1600, 8, 8, 1)).astype("float32")
    teacher = rng.normal(size=(64, 10))
    y = np.argmax(x.reshape(len(x), -1) @ teacher, axis=1).astype("int64")
    return split_train_test(x, y, seed)


def batch_stream(
    x: np.ndarray, y: np.ndarray, batch_size: int, steps_per_epoch: int, epochs: int, seed: int, start: int
) -> tf.data.Dataset:
    """The global batches of optimizer steps `start, start + 1, ...`: a fresh permutation each epoch."""
    indices = np.concatenate(
        [
            np.random.default_rng([seed, epoch]).permutation(len(x))[: steps_per_epoch * batch_size]
            for epoch in range(epochs)
        ]
    ).reshape(epochs * steps_per_epoch, batch_size)
    images, labels = tf.constant(x), tf.constant(y)
    dataset = tf.data.Dataset.from_tensor_slices(indices[start:])
    dataset = dataset.map(lambda index: (tf.gather(images, index), tf.gather(labels, index)))
    options = tf.data.Options()
    # Each element is one global batch; the strategy splits it between the workers.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(2)


def build_model() -> keras.Model:
    """A plain Keras CNN without batch-norm or dropout: its result does not depend on the split."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def optimizer_step(model: keras.Model) -> int:
    """The number of steps the optimizer has taken (also of a distributed variable)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class StopAtStep(keras.callbacks.Callback):
    """Stops `fit` once the optimizer has taken `steps` steps (a resumed run replays no extra steps)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if optimizer_step(self.model) >= self.steps:
            self.model.stop_training = True


class KillAtStep(keras.callbacks.Callback):
    """Simulates a crash: the process kills itself before optimizer step `step`."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if optimizer_step(self.model) == self.step:
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def weights_checksum(weights: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for weight in weights:
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size, split between the workers")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: the whole training set")
    parser.add_argument("--every-step", type=int, default=5)
    parser.add_argument("--start-temperature", type=float, default=1.5)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--sigma", type=float, default=None, help="default: estimated on the first measured step")
    parser.add_argument("--initial-learning-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic", action="store_true", help="random data instead of scikit-learn's digits")
    parser.add_argument("--backup-dir", default=None, help="BackupAndRestore directory (one sub-directory per worker)")
    parser.add_argument("--save-freq", type=int, default=5, help="steps between backups")
    parser.add_argument("--kill-at-step", type=int, default=None, help="simulate a crash before this step")
    parser.add_argument("--output", default=None, help="write the JSON summary to this file")
    parser.add_argument("--weights", default=None, help="write the final weights to this .npz file")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)

    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task")
    # The default strategy when TF_CONFIG is unset: one process, no distribution.
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if config else tf.distribute.get_strategy()
    workers = sum(len(config["cluster"].get(kind, [])) for kind in ("chief", "worker")) if config else 1

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_data(args.synthetic, args.seed)
    steps_per_epoch = args.steps_per_epoch or len(x_train) // args.batch_size
    total_steps = steps_per_epoch * args.epochs

    with strategy.scope():
        model = kac.convert(build_model())
        model.compile(
            optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(args.initial_learning_rate), momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        # Create the optimizer's variables here, in the strategy's scope, before a backup is loaded into them.
        model.optimizer.build(model.trainable_variables)

    callbacks: list[keras.callbacks.Callback] = []
    start = 0
    if args.backup_dir:
        backup_dir = os.path.join(args.backup_dir, f"worker-{task['index']}") if task else args.backup_dir
        backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq=args.save_freq)
        # Load the last backup now (fit loads it again) to learn the step at which the data resumes.
        backup.set_model(model)
        backup.on_train_begin()
        start = optimizer_step(model)
        callbacks.append(backup)
    # The first rate is the schedule's: a range analysis before the first step would use up a
    # batch, and this example feeds the batches by optimizer step (see --backup-dir).
    controller = kac.ActCooLR(
        start_temperature=args.start_temperature,
        gamma=args.gamma,
        every_step=args.every_step,
        sigma=args.sigma,
        initial_learning_rate=None,
    )
    callbacks += [controller, StopAtStep(total_steps)]
    if args.kill_at_step is not None:
        callbacks.append(KillAtStep(args.kill_at_step))

    dataset = batch_stream(x_train, y_train, args.batch_size, steps_per_epoch, args.epochs, args.seed, start)
    started = time.perf_counter()
    model.fit(
        dataset,
        epochs=args.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,  # the stream is shuffled, and in step order
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - started

    weights = [np.asarray(w) for w in model.get_weights()]
    # A local forward pass (no collective): each worker holds all the weights.
    predictions = np.argmax(keras.ops.convert_to_numpy(model([x_test], training=False)), axis=1)
    schedule = kac.schedules.find_schedule(model.optimizer)
    steps = optimizer_step(model)
    result = {
        "task": task,
        "workers": workers,
        "replicas": int(strategy.num_replicas_in_sync),
        "resumed_from_step": start,
        "steps": steps,
        "final_learning_rate": schedule.value_at(steps),
        "controller_state": controller_values(model.optimizer),
        "history": controller.measurements,
        "events": controller.events,
        "test_accuracy": float(np.mean(predictions == y_test)),
        "weights_sha256": weights_checksum(weights),
        "weights_sum": float(sum(np.sum(w, dtype=np.float64) for w in weights)),
        "seconds": seconds,
    }
    if args.output:
        with open(args.output, "w") as file:
            json.dump(result, file, indent=1)
    if args.weights:
        np.savez(args.weights, *weights)
    who = f"worker {task['index']} of {workers}" if task else "single process"
    print(
        f"ActCooLR, {who}: {steps} steps (resumed from step {start}) in {seconds:.1f} s, "
        f"final learning rate {result['final_learning_rate']:.5g}, test accuracy {result['test_accuracy']:.4f}, "
        f"weights sha256 {result['weights_sha256'][:16]}"
    )
    return result


if __name__ == "__main__":
    main()
