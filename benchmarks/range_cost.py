"""Cost of one learning-rate range analysis, as a multiple of one train step of the same model.

    python benchmarks/range_cost.py [--batch-size 128] [--repeats 5]

Builds a small CIFAR-shaped CNN (converted to an APTModel), warms both up,
then times, interleaved, `--steps` plain train steps (`model.fit`) and one
`lr_range_analysis` over the 25 Table-1 rates on one batch. One analysis is
one forward and backward pass plus 25 x (optimizer apply + forward pass), so
the expected multiple is about 25 x (apply + forward) / step, below 25 x
(step + forward). Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_actcoolr as kac


def build(batch_norm: bool = True) -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", strides=2)(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="train steps timed per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()}, keras {keras.__version__}, {os.cpu_count()} CPUs, {platform.machine()}")

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size * args.steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, len(x))
    model = kac.convert(build())
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    batch = (x[: args.batch_size], y[: args.batch_size])
    model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)  # warm-up and traces
    kac.lr_range_analysis(model, batch, batch_size=args.batch_size)

    step_times, analysis_times = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
        step_times.append((time.perf_counter() - started) / args.steps)
        started = time.perf_counter()
        kac.lr_range_analysis(model, batch, batch_size=args.batch_size)
        analysis_times.append(time.perf_counter() - started)
    step, analysis = statistics.median(step_times), statistics.median(analysis_times)
    print(f"batch {args.batch_size}, {args.repeats} repeats (medians)")
    print(f"  train step          {step * 1e3:8.1f} ms")
    print(f"  range analysis (25) {analysis * 1e3:8.1f} ms")
    print(f"  ratio               {analysis / step:8.1f} x one train step")
    return {"step": step, "analysis": analysis, "ratio": analysis / step}


if __name__ == "__main__":
    main()
