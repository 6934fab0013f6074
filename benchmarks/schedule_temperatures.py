"""The temperature a learning-rate schedule runs at: ActCooLR's reading of tuned schedules' runs.

    python benchmarks/schedule_temperatures.py --task teacher_mlp --method onecycle --rate 0.3
    python benchmarks/schedule_temperatures.py --task convnet4 --method onecycle --rate 0.1 --seeds 0
    python benchmarks/schedule_temperatures.py --task convnet4 --method actcoolr --controller '{"start_temperature": 1.5}'
    python benchmarks/schedule_temperatures.py --task teacher_mlp --method actcoolr --warmup 1.5,0.3,0.5

ActCooLR sets the rate so that the network temperature follows a target;
which target is good depends on the network (docs/quality.md). This script
turns the question around: it trains a task with a given schedule and reads,
every `--every-step` steps, the temperature that ActCooLR's controller would
follow (`keras_actcoolr.TemperatureLogger`'s records through the layer filter,
`keras_actcoolr.callbacks.guards.followed_probability`, the default
`measure="vector"`). It reports, per run and as the median over seeds, the
mean of that temperature over each tenth of training, the test accuracy and
the rate's peak.

Tasks (`--task`): the Fashion-MNIST networks of `benchmarks/fashion_mnist.py`
(`convnet4`, `resnet8`; one epoch of the full training set unless
`--epochs` or `--train-examples`; the IDX files are searched as there) and
the tasks of `benchmarks/quality.py` (`teacher_mlp`, `digits_cnn_bn`, ...;
their epochs and batch sizes). The model is converted with
`keras_actcoolr.convert` (an `APTReLU` computes what `ReLU` does; the
measurements change no weight).

Methods (`--method`), SGD with momentum 0.9 as in both benchmarks:
`onecycle` (`OneCycle(rate / 10, rate, t_max=0.3)` to 0 with
`OneCycleMomentum`), `cosine` (`CosineDecay(rate)` to 0), `constant`, and
`actcoolr` (ActCooLR's defaults from `ActCooLRSchedule(rate)`, plus
`--controller`'s JSON keyword arguments; `--warmup PEAK,SHARE,START` gives it
the target `target_temperature = warmup_target(PEAK, SHARE, START)`: the
temperature rises linearly from `START * PEAK` to `PEAK` over the first
`SHARE` of training, then falls linearly to 0, the shape the tuned
one-cycle runs have).

Each run is one JSON line of `--output` (appended). Stdout: a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fashion_mnist as F  # noqa: E402
import keras  # noqa: E402
import quality as Q  # noqa: E402
from _quality_tasks import TASKS  # noqa: E402

import keras_actcoolr as kac  # noqa: E402
from keras_actcoolr.callbacks.guards import LayerFilter, followed_probability  # noqa: E402

METHODS = ("onecycle", "cosine", "constant", "actcoolr")
TENTHS = 10


def warmup_target(peak: float, share: float, start: float) -> Callable[[float], float]:
    """A target temperature rising linearly from `start * peak` to `peak` over `share` of training, then
    falling linearly to 0 at the end."""
    if not peak > 0 or not 0 < share < 1 or not 0 <= start <= 1:
        raise ValueError(f"warmup takes PEAK > 0, SHARE in (0, 1), START in [0, 1]. Received: {peak}, {share}, {start}")

    def target(progress: float) -> float:
        if progress < share:
            return peak * (start + (1.0 - start) * progress / share)
        return peak * max(1.0 - progress, 0.0) / (1.0 - share)

    return target


def control_temperatures(records: Iterable[dict[str, Any]]) -> list[tuple[int, float | None]]:
    """`(step, temperature)` that ActCooLR's controller follows (`measure="vector"`, layer filter on) per record;
    `None` where every layer is left out."""
    layer_filter = LayerFilter("vector")
    return [(int(r["step"]), followed_probability(r, "vector", layer_filter)[1]) for r in records]


def by_tenth(points: Iterable[tuple[int, float | None]], total_steps: int) -> list[float | None]:
    """The mean temperature over each tenth of training: step `s` is in tenth `floor(10 * s / total_steps)`
    (the last step in the last tenth); `None` for a tenth without a measured value."""
    sums, counts = [0.0] * TENTHS, [0] * TENTHS
    for step, value in points:
        if value is None:
            continue
        tenth = min(int(TENTHS * step / total_steps), TENTHS - 1)
        sums[tenth] += value
        counts[tenth] += 1
    return [s / c if c else None for s, c in zip(sums, counts)]


def _data(task: str, seed: int, epochs: int | None, train_examples: int | None, path: str | None) -> dict:
    """Model builder, fit arguments, test arrays, steps per epoch and epochs of a task."""
    if task in F.NETWORKS:
        train = F.train_dataset(path, train_examples, seed)
        return {
            "build": lambda: F.build(task, True),
            "fit": {"x": train},
            "test": F.arrays(path, train_examples)["test"],
            "steps": int(train.cardinality()),
            "epochs": epochs or 1,
        }
    spec = TASKS[task]
    data = spec.load()
    return {
        "build": lambda: kac.convert(spec.build(data.x_train.shape[1:], data.num_classes)),
        "fit": {"x": data.x_train, "y": data.y_train, "batch_size": spec.batch_size},
        "test": (data.x_test, data.y_test),
        "steps": Q.steps_per_epoch(spec, data),
        "epochs": epochs or spec.epochs,
    }


def run(
    task: str,
    method: str,
    rate: float,
    seed: int,
    every_step: int = 10,
    epochs: int | None = None,
    train_examples: int | None = None,
    controller: dict[str, Any] | None = None,
    warmup: tuple[float, float, float] | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    """Train one run with a `TemperatureLogger`; its result in JSON types."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    setup = _data(task, seed, epochs, train_examples, path)
    total_steps = setup["steps"] * setup["epochs"]
    controller = dict(controller or {})
    if warmup is not None:
        controller["target_temperature"] = warmup_target(*warmup)
    if method == "actcoolr":
        learning_rate, callbacks = kac.ActCooLRSchedule(rate), [kac.ActCooLR(**controller)]
    else:
        spec = Q.RunSpec(task, "sgdm", method, rate, seed, setup["epochs"])
        learning_rate, callbacks, _ = Q.learning_rate_and_callbacks(spec, total_steps)
    logger = kac.TemperatureLogger(every_step=every_step)
    rates = Q.RateRecorder()
    model = setup["build"]()
    model.compile(
        optimizer=Q.make_optimizer("sgdm", learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        model.fit(**setup["fit"], epochs=setup["epochs"], callbacks=[*callbacks, logger, rates], verbose=0)
    accuracy, finite = F.accuracy_and_finite(model, *setup["test"])
    points = control_temperatures(logger.history)
    return Q.plain(
        {
            "task": task,
            "method": method,
            "rate": rate,
            "seed": seed,
            "controller": {k: v for k, v in controller.items() if k != "target_temperature"},
            "warmup": list(warmup) if warmup is not None else None,
            "total_steps": total_steps,
            "test_accuracy": accuracy,
            "finite_outputs": finite,
            "peak_rate": max(rates.rates) if rates.rates else None,
            "temperatures": points,
            "by_tenth": by_tenth(points, total_steps),
        }
    )


def render(runs: list[dict[str, Any]]) -> str:
    """Markdown: per run, then per (task, method, rate) the median over seeds, of the temperature by tenth."""

    def row(task: str, label: str, rate: float, seed: str, accuracy: float, peak: float, tenths: list) -> list[str]:
        cells = ["-" if value is None else f"{value:.2f}" for value in tenths]
        return [task, label, f"{rate:g}", seed, f"{100 * accuracy:.2f}", f"{peak:.3g}", *cells]

    header = ["task", "method", "rate", "seed", "test acc. %", "peak rate", *(f"{t / 10:.1f}" for t in range(TENTHS))]
    rows = []
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        label = r["method"] + (f" {json.dumps(r['controller'])}" if r.get("controller") else "")
        label += f" warmup={r['warmup']}" if r.get("warmup") else ""
        rows.append(row(r["task"], label, r["rate"], str(r["seed"]), r["test_accuracy"], r["peak_rate"], r["by_tenth"]))
        groups.setdefault((r["task"], label, r["rate"]), []).append(r)
    for (task, label, rate), group in groups.items():
        if len(group) < 2:
            continue
        medians = []
        for t in range(TENTHS):
            values = [g["by_tenth"][t] for g in group if g["by_tenth"][t] is not None]
            medians.append(Q.median(values) if values else None)
        accuracy = Q.median(g["test_accuracy"] for g in group)
        peak = Q.median(g["peak_rate"] for g in group)
        rows.append(row(task, label, rate, f"median of {len(group)}", accuracy, peak, medians))
    return (
        Q.markdown_table(header, rows)
        + "\n\nColumns 0.0 to 0.9: the mean over each tenth of training of the temperature ActCooLR's controller "
        'follows (`measure="vector"`, dead and saturated layers filtered, wide layers read through groups).\n'
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help=f"one of {', '.join((*F.NETWORKS, *TASKS))}")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--rate", type=float, default=0.1, help="peak / constant / initial rate (default 0.1)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated integers (default 0,1,2)")
    parser.add_argument("--every-step", type=int, default=10, help="steps between measurements (default 10)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 1 on Fashion-MNIST, the task's otherwise")
    parser.add_argument("--train-examples", type=int, default=None, help="Fashion-MNIST: the first N images only")
    parser.add_argument("--fashion-mnist-dir", default=None, help="directory of the IDX files (default: search)")
    parser.add_argument("--controller", default="", help="actcoolr: JSON keyword arguments added to the defaults")
    parser.add_argument("--warmup", default=None, help="actcoolr: PEAK,SHARE,START of a rising-then-falling target")
    parser.add_argument("--output", default="schedule_temperatures.jsonl", help="JSON-lines file (appended)")
    args = parser.parse_args(argv)
    if args.task not in (*F.NETWORKS, *TASKS):
        parser.error(f"--task takes one of {', '.join((*F.NETWORKS, *TASKS))}. Received: --task={args.task}")
    try:
        args.seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        parser.error(f"--seeds takes integers. Received: --seeds={args.seeds}")
    if args.every_step < 1:
        parser.error(f"--every-step must be >= 1. Received: --every-step={args.every_step}")
    try:
        args.controller = json.loads(args.controller) if args.controller else {}
    except json.JSONDecodeError:
        args.controller = None
    if not isinstance(args.controller, dict):
        parser.error("--controller takes a JSON object.")
    if (args.controller or args.warmup) and args.method != "actcoolr":
        parser.error("--controller and --warmup go with --method actcoolr.")
    if args.warmup is not None:
        try:
            args.warmup = tuple(float(v) for v in args.warmup.split(","))
            warmup_target(*args.warmup)
        except (TypeError, ValueError) as error:
            parser.error(f"--warmup takes PEAK,SHARE,START ({error}). Received: --warmup={args.warmup}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    runs = []
    for seed in args.seeds:
        result = run(
            args.task,
            args.method,
            args.rate,
            seed,
            args.every_step,
            args.epochs,
            args.train_examples,
            args.controller,
            args.warmup,
            args.fashion_mnist_dir,
        )
        with open(args.output, "a") as file:
            file.write(json.dumps(result) + "\n")
        print(f"{args.task} {args.method} seed {seed}: test {result['test_accuracy']:.4f}", file=sys.stderr)
        runs.append(result)
    print(render(runs))
    return runs


if __name__ == "__main__":
    main()
