"""Cost of measuring activation pattern temperature, as a ratio against plain Keras training.

    python benchmarks/overhead.py                 # the table of docs/performance.md (5 to 8 minutes on 2 CPU cores)
    python benchmarks/overhead.py --rounds 1 --steps 10 --every 1,10 --jit off   # a quick look

Builds the CIFAR ResNet-20 of He et al. (2016) twice with the same weights:
once with `keras.layers.ReLU` in a plain `keras.Model`, once through
`keras_actcoolr.convert`. Both train with SGD (momentum 0.9) on random
32x32x3 images in batches of 128. After a warm-up that traces every train
function, each round times one `model.fit` epoch of the plain model and one of
the converted model with `TemperatureLogger(every_step=k)`, back to back
(the order alternates between rounds), for k in `--every`, with and without
`jit_compile`. An epoch has `k * ceil(steps / k)` steps, so that every epoch
holds the same number of measured steps (10, 1 and 1 for k = 1, 10 and 100
with the default `--steps 10`).

The table gives, per configuration:

- `ratio`: the median over rounds of (converted epoch time / plain epoch time);
- `pairs`: the smallest and largest ratio of the pairs, the noise of the machine;
- `target`: the bound of issue 7 (1.35, 1.05 and 1.02 for k = 1, 10 and 100);
- `floor`: 1 + (one forward pass in training mode / one plain train step) / k,
  the cost of the one extra forward pass a measurement needs, timed here
  (the median of the rounds, each timing `--forward-calls` forward passes);
- `k=1/k`: 1 + (ratio at k = 1 - 1) / k, what the every-step overhead
  predicts for k, steadier than the direct ratio when k is large (one
  measurement hides in the noise of 100 steps);
- `cpu`: the same ratio of the process's CPU time (all threads), less
  sensitive than wall time to other processes on the machine;
- `ms/step`: the plain model's time per step (wall, median);
- `ms/meas.`: the extra time of one measured step, (converted - plain) /
  measurements, median over rounds;
- `peak MB`: the peak of TensorFlow's CPU allocator during an epoch
  (`tf.config.experimental.get_memory_info("CPU:0")`, reset before each
  epoch), plain and converted, and the relative difference;
- `traces`: how often `train_step` was traced (a Python counter in it),
  plain / converted without measuring / converted measuring, over all the
  `fit` calls of that `jit_compile` setting.

Times are wall-clock times on a machine other processes may share: the
pairs and their median are there to cancel slow phases of the machine, and
the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import keras_actcoolr as kac

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def resnet20(input_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10) -> keras.Model:
    """Plain-Keras CIFAR ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, 16/32/64 filters.

    Shortcuts are option A (subsample, then zero channels: no parameters), built
    from stock Keras layers only, so that `convert` sees a plain model: 0.27M
    trainable parameters, as in He et al.'s Table 6.
    """

    def conv_bn(x: Any, filters: int, strides: int = 1) -> Any:
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)

    def shortcut(x: Any, filters: int, strides: int) -> Any:
        if strides == 1 and x.shape[-1] == filters:
            return x
        x = keras.layers.AveragePooling2D(pool_size=1, strides=strides)(x)
        height, width, channels = x.shape[1:]
        extra = filters - channels
        x = keras.layers.Reshape((height, width, channels, 1))(x)
        x = keras.layers.ZeroPadding3D(((0, 0), (0, 0), (extra // 2, extra - extra // 2)))(x)
        return keras.layers.Reshape((height, width, filters))(x)

    inputs = keras.Input(input_shape)
    x = keras.layers.ReLU()(conv_bn(inputs, 16))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            y = keras.layers.ReLU()(conv_bn(x, filters, strides))
            y = conv_bn(y, filters)
            x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut(x, filters, strides)]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="resnet20")


def count_traces(model: keras.Model) -> dict[str, int]:
    """Count the traces of the model's train steps by mode (Python runs a step once per trace)."""
    counts = {"plain": 0, "measure": 0}

    def counting(step: Callable, mode: str) -> Callable:
        def counting_step(data: Any, **kwargs: Any) -> Any:
            counts[mode] += 1
            return step(data, **kwargs)

        return counting_step

    model.train_step = counting(model.train_step, "plain")
    if isinstance(model, kac.APTModel):
        model.measured_train_step = counting(model.measured_train_step, "measure")
    return counts


def timed(function: Callable[[], Any]) -> tuple[float, float, float]:
    """Wall time and CPU time of `function()`, and the peak of TensorFlow's CPU allocator during it, in MB."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    started, cpu_started = time.perf_counter(), time.process_time()
    function()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return elapsed, cpu, tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {usable} usable CPUs ({os.cpu_count()} online), {platform.system()} {platform.release()}; "
        f"python {platform.python_version()}, tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"keras_actcoolr {kac.__version__}"
    )


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else ""


def run_setting(args: argparse.Namespace, jit: bool, dataset: tf.data.Dataset, x: np.ndarray) -> list[dict]:
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    plain = resnet20()
    converted = kac.convert(plain)
    for model in (plain, converted):
        model.compile(optimizer=keras.optimizers.SGD(args.learning_rate, momentum=0.9), loss=LOSS, jit_compile=jit)
        # Built now, not in the first trace: a tf.function that creates variables is traced twice.
        model.optimizer.build(model.trainable_variables)
    traces = {"plain": count_traces(plain), "converted": count_traces(converted)}

    def epoch(model: keras.Model, steps: int, every: int | None = None) -> Callable[[], Any]:
        callbacks = [kac.TemperatureLogger(every_step=every)] if every else []
        return lambda: model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=callbacks)

    # Warm-up: trace the plain functions of both models and the measuring one.
    epoch(plain, args.warmup_steps)()
    epoch(converted, args.warmup_steps)()
    epoch(converted, args.warmup_steps, every=1)()

    batch = tf.constant(x[: args.batch_size])
    forward = tf.function(lambda images: plain(images, training=True), jit_compile=jit)
    forward(batch)

    def forward_calls() -> None:
        for _ in range(args.forward_calls):
            result = forward(batch)
        np.asarray(result)

    rows = []
    for every in args.every:
        steps = every * math.ceil(args.steps / every)
        measurements = steps // every
        ratios, cpu_ratios, extra, floors, peaks_plain, peaks_apt, step_times = [], [], [], [], [], [], []
        for round_ in range(args.rounds):
            pair = [("plain", epoch(plain, steps)), ("apt", epoch(converted, steps, every))]
            if round_ % 2:
                pair.reverse()
            result = {name: timed(function) for name, function in pair}
            (t_plain, cpu_plain, m_plain), (t_apt, cpu_apt, m_apt) = result["plain"], result["apt"]
            ratios.append(t_apt / t_plain)
            cpu_ratios.append(cpu_apt / cpu_plain)
            step_times.append(t_plain / steps)
            extra.append((t_apt - t_plain) / measurements)
            peaks_plain.append(m_plain)
            peaks_apt.append(m_apt)
            t_forward, _, _ = timed(forward_calls)
            floors.append(1.0 + (t_forward / args.forward_calls) / (t_plain / steps) / every)
            if args.verbose:
                print(
                    f"  jit={jit} every={every} round {round_}: plain {t_plain:.2f} s, converted {t_apt:.2f} s, "
                    f"ratio {t_apt / t_plain:.3f}, forward {t_forward / args.forward_calls * 1e3:.1f} ms",
                    flush=True,
                )
        rows.append(
            {
                "jit": jit,
                "every": every,
                "steps": steps,
                "ratio": statistics.median(ratios),
                "spread": (min(ratios), max(ratios)),
                "cpu_ratio": statistics.median(cpu_ratios),
                "floor": statistics.median(floors),
                "extra_ms": statistics.median(extra) * 1e3,
                "step_ms": statistics.median(step_times) * 1e3,
                "peak_plain": statistics.median(peaks_plain),
                "peak_apt": statistics.median(peaks_apt),
            }
        )
    for row in rows:
        row["traces"] = (
            traces["plain"]["plain"],
            traces["converted"]["plain"],
            traces["converted"]["measure"],
        )
    return rows


TARGETS = {1: 1.35, 10: 1.05, 100: 1.02}


def print_table(rows: list[dict], rounds: int) -> None:
    print(f"ratio = converted / plain epoch time (cpu: process CPU time), median of {rounds} interleaved pairs")
    every_step = {row["jit"]: row["ratio"] for row in rows if row["every"] == 1}
    header = (
        f"{'jit_compile':<11} {'every':>5} {'steps':>5} {'ratio':>6} {'pairs':>11} {'target':>6} {'floor':>6} "
        f"{'k=1/k':>6} {'cpu':>6} {'ms/step':>7} {'ms/meas.':>8} {'peak MB plain':>13} {'converted':>9} "
        f"{'memory':>7} {'traces':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        target = TARGETS.get(row["every"])
        memory = row["peak_apt"] / row["peak_plain"] - 1.0
        scaled = 1.0 + (every_step[row["jit"]] - 1.0) / row["every"] if row["jit"] in every_step else math.nan
        print(
            f"{str(row['jit']):<11} {row['every']:>5} {row['steps']:>5} {row['ratio']:>6.3f} "
            f"{'{:.2f}-{:.2f}'.format(*row['spread']):>11} "
            f"{'' if target is None else f'{target:.2f}':>6} {row['floor']:>6.3f} {scaled:>6.3f} "
            f"{row['cpu_ratio']:>6.3f} {row['step_ms']:>7.1f} {row['extra_ms']:>8.1f} "
            f"{row['peak_plain']:>13.1f} {row['peak_apt']:>9.1f} {memory:>+7.1%} "
            f"{'/'.join(str(t) for t in row['traces']):>6}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="minimum steps per timed epoch (rounded up to k)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved pairs of epochs per configuration")
    parser.add_argument("--every", type=lambda s: [int(v) for v in s.split(",")], default=[1, 10, 100])
    parser.add_argument("--jit", choices=("both", "off", "on"), default="both")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--forward-calls", type=int, default=3, help="forward passes timed per round (floor)")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--verbose", action="store_true", help="print every pair")
    args = parser.parse_args(argv)

    print("command: python " + " ".join([os.path.relpath(sys.argv[0])] + (sys.argv[1:] if argv is None else argv)))
    print("machine: " + machine_info())
    print(f"start: {load()}", flush=True)
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    # Four distinct batches, repeated: the input pipeline costs the same for both models.
    x = rng.normal(size=(4 * args.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, len(x))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size, drop_remainder=True).repeat()
    # Without this, deleting the iterator at the end of each `fit` waits for tf.data's autotuning
    # thread, which wakes at 10 ms x 2**k after the start: epoch times snap to 1.28, 2.56, 5.12 s...
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = dataset.with_options(options)
    settings = {"both": (False, True), "off": (False,), "on": (True,)}[args.jit]
    rows = []
    for jit in settings:
        rows += run_setting(args, jit, dataset, x)
    print()
    print_table(rows, args.rounds)
    print(
        "memory: peak of TensorFlow's CPU allocator (tf.config.experimental.get_memory_info), MB; "
        "traces: train_step traces plain / converted plain / converted measuring"
    )
    print(f"end: {load()}; total {time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
