"""The collapse guard against batch noise, bad data and a far too high start (issue 17 item 5).

The README's quick-start CNN on scikit-learn's digits (1,400 training images,
397 test images, 5 epochs), trained by `ActCooLR` (defaults, `every_step=10`)
and by a constant rate of 0.02 (SGD, momentum 0.9), three seeds each, in the
same run:

- `clean/bN`: batch size N (1, 4, 16), clean data. Done when ActCooLR's median
  is within 2 points of the constant rate's.
- `nan/b16`: one NaN pixel in one training image. Done when ActCooLR's
  median costs at most 1 point against `clean/b16`.
- `start10/b16`, `start1000/b16`: `ActCooLRSchedule(10.0)` or `(1000.0)` with
  `initial_learning_rate=None` (the first rate is not chosen by a range
  analysis). Done when the run recovers (not at chance, 0.10).

Prints one row per configuration: the median test accuracy over the seeds,
the per-seed values and the guard's events (collapses, retries, bad data).

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/guards.py            # everything (about 20 min on 2 cores)
    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/guards.py --configs clean/b16 nan/b16 --seeds 1
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
import warnings

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_actcoolr as kac

CONFIGS = ("clean/b16", "nan/b16", "start10/b16", "start1000/b16", "clean/b4", "clean/b1")
CONSTANT_RATE = 0.02
TRAIN = 1400


def digits(bad_sample: bool) -> tuple[np.ndarray, ...]:
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:TRAIN].copy(), y[:TRAIN], x[TRAIN:], y[TRAIN:]
    if bad_sample:
        x_train[TRAIN // 2, 3, 3, 0] = np.nan  # one NaN pixel in one of 1,400 images
    return x_train, y_train, x_test, y_test


def quickstart_model(seed: int, rate: keras.optimizers.schedules.LearningRateSchedule | float) -> kac.APTModel:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(10)(h)))
    model.compile(
        optimizer=keras.optimizers.SGD(rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def run(config: str, seed: int, epochs: int, constant: bool) -> tuple[float, collections.Counter]:
    kind, batch = config.split("/")
    batch_size = int(batch[1:])
    x, y, x_test, y_test = digits(kind == "nan")
    callbacks, events = [], collections.Counter()
    if constant:
        model = quickstart_model(seed, CONSTANT_RATE)
    elif kind.startswith("start"):
        model = quickstart_model(seed, kac.ActCooLRSchedule(float(kind[len("start") :])))
        callbacks = [kac.ActCooLR(every_step=10, initial_learning_rate=None)]
    else:
        model = quickstart_model(seed, kac.ActCooLRSchedule())
        callbacks = [kac.ActCooLR(every_step=10)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, verbose=0)
    if callbacks:
        events.update(e["event"] for e in callbacks[0].events)
    accuracy = float(model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
    return accuracy, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    seeds = list(range(1, args.seeds + 1))
    rows = []
    print(f"{'configuration':<15} {'controller':<12} {'median':>7}  per seed              events   (seconds)")
    for config in args.configs:
        kinds = ["ActCooLR"] + (["constant"] if config.startswith("clean") else [])
        for controller in kinds:
            start = time.time()
            results = [run(config, seed, args.epochs, controller == "constant") for seed in seeds]
            accuracies = [a for a, _ in results]
            events = sum((e for _, e in results), collections.Counter())
            median = statistics.median(accuracies)
            rows.append((config, controller, median))
            print(
                f"{config:<15} {controller:<12} {median:7.4f}  {' '.join(f'{a:.4f}' for a in accuracies):<22}"
                f"{dict(events) or '-'}   ({time.time() - start:.0f})",
                flush=True,
            )
    medians = {(c, k): m for c, k, m in rows}
    print("\nchecks (median test accuracy, points = 100 * difference):")
    for config in args.configs:
        actcoolr = medians[(config, "ActCooLR")]
        if (config, "constant") in medians:
            gap = 100 * (actcoolr - medians[(config, "constant")])
            print(f"  {config}: ActCooLR - constant {CONSTANT_RATE} = {gap:+.1f} points (done if >= -2)")
        elif config.startswith("nan") and ("clean/b16", "ActCooLR") in medians:
            gap = 100 * (actcoolr - medians[("clean/b16", "ActCooLR")])
            print(f"  {config}: NaN sample - clean = {gap:+.1f} points (done if >= -1)")
        elif config.startswith("start"):
            print(f"  {config}: median {actcoolr:.4f} (chance is 0.10)")


if __name__ == "__main__":
    main()
