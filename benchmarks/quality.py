"""Does ActCooLR train well without tuning? Test accuracy against tuned baselines, on six small tasks.

    python benchmarks/quality.py --jobs 2 --output results.json --figure quality.png --markdown quality-tables.txt
    python benchmarks/quality.py --quick                       # about 5 minutes: one seed, three tasks
    python benchmarks/quality.py --jobs 2 --methods paper --output paper.json   # the paper's controller
    python benchmarks/quality.py --controller '{"start_temperature": 1.0}' --methods actcoolr
    python benchmarks/quality.py --summarize results.json paper.json --figure quality.png

The full run (1458 runs) takes about an hour on a 2-core CPU
with `--jobs 2`. Every run trains a fresh model from the initial weights its seed gives, on fixed
splits of one task (see `benchmarks/_quality_tasks.py` and `docs/quality.md`)
with one optimizer and one learning-rate method:

- `actcoolr`: `keras_actcoolr.ActCooLR(**controller)` with the schedule
  `ActCooLRSchedule(initial_rate)`, from every initial rate 1e-4, 1e-3, 1e-2,
  1e-1 and 1; `controller` is `{}` (the defaults) unless `--controller` gives
  keyword arguments as JSON;
- `paper`: `ActCooLR(start_temperature=3.03)`, the paper's controller
  (with `guards=False` when the installed controller has that argument),
  from the same initial rates;
- `constant`, `onecycle` (`OneCycle(max / 10, max, total_steps, t_max=0.3)`,
  with `OneCycleMomentum` for SGD with momentum), `cosine`
  (`keras.optimizers.schedules.CosineDecay` to 0): the baselines, each over a
  grid of rates. The grid point with the best median validation accuracy
  over seeds is the tuned baseline; the grid's runs are its cost;
- `peer`: the untuned peers, one run per seed and task at their default (or
  customary) rate, no schedule, whatever the task's optimizers (`PEERS`):
  `keras.optimizers.Adam(1e-3)`, `keras.optimizers.ScheduleFreeAdamW()` (all
  its defaults, rate 0.0025; left out when the installed Keras lacks it) and
  `keras.optimizers.SGD(0.01, momentum=0.9)` (Keras' default rate).

Everything is reported on test accuracy. A run *collapsed* if its last
training loss is not finite, it raised an error, its test accuracy is
within 2 points of chance, or its last training loss is at least 95 % of the
chance loss (the entropy of the training labels: a network that learnt next to
nothing) with a test accuracy within 10 points of chance. The output is a Markdown table per task (for
ActCooLR with the measurements at which the runaway guard held the rate), the
checks of the targets (ActCooLR within 1 point of the tuned constant rate and
1.5 points of the tuned one-cycle, spread over initial rates at most 2
points, no collapsed ActCooLR run, ActCooLR's median at most 0.3 points below
the best untuned peer's, and ActCooLR driving Adam at most 1 point below Adam
at 1e-3), an overview table in the format of docs/quality.md, a JSON file of every run, and a figure
(with matplotlib). A progress line per run goes to stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import inspect
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Iterable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _quality_tasks import DEVELOPMENT, HELD_OUT, TASKS, Data, Task  # noqa: E402

import keras_actcoolr as kac  # noqa: E402

INITIAL_RATES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SEEDS = (0, 1, 2)
METHODS = ("actcoolr", "paper", "constant", "onecycle", "cosine", "peer")
DEFAULT_METHODS = ("actcoolr", "constant", "onecycle", "cosine", "peer")
BASELINES = ("constant", "onecycle", "cosine")
CONTROLLED = ("actcoolr", "paper")
#: The paper's start temperature (ResNet-32 on CIFAR-10).
PAPER_START_TEMPERATURE = 3.03
#: A run is collapsed if its test accuracy is at most chance plus this.
COLLAPSE_MARGIN = 0.02
#: A run is also collapsed if its final training loss is at least this share of the chance loss (the
#: entropy of the training labels: it learnt next to nothing) and its test accuracy is at most chance
#: plus `CHANCE_LOSS_MARGIN`: a network stuck at chance that still sorts a few examples.
CHANCE_LOSS_SHARE = 0.95
CHANCE_LOSS_MARGIN = 0.10
#: Targets of the checks, in points of accuracy.
TARGETS = {"constant": 1.0, "onecycle": 1.5, "rate_spread": 2.0, "best_peer": 0.3, "adam_peer": 1.0}

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgdm": {"label": "SGD m=0.9", "kind": "sgd", "momentum": 0.9, "weight_decay": None},
    "sgdm_wd": {"label": "SGD m=0.9, wd 5e-4", "kind": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
    "sgd": {"label": "SGD m=0", "kind": "sgd", "momentum": 0.0, "weight_decay": None},
    # Not in the plan: the momentum between the two defaults' (`--optimizers sgdm_half`).
    "sgdm_half": {"label": "SGD m=0.5", "kind": "sgd", "momentum": 0.5, "weight_decay": None},
    "adam": {"label": "Adam", "kind": "adam", "weight_decay": None},
}


def _schedule_free_default_rate() -> float | None:
    """`keras.optimizers.ScheduleFreeAdamW`'s default rate, or None when the installed Keras lacks it."""
    optimizer = getattr(keras.optimizers, "ScheduleFreeAdamW", None)
    if optimizer is None:
        return None
    return float(inspect.signature(optimizer).parameters["learning_rate"].default)


#: Untuned peers (method `peer`): an optimizer at its default (or customary) rate, no schedule, no grid,
#: one run per seed and task, whatever the task's optimizers. `rate` is the rate they run at.
PEERS: dict[str, dict[str, Any]] = {
    "adam_1e-3": {"label": "Adam 1e-3", "kind": "adam", "rate": 1e-3},
    "sgdm_0.01": {"label": "SGD m=0.9, 0.01", "kind": "sgd", "rate": 0.01},
}
if _schedule_free_default_rate() is not None:
    PEERS["schedule_free_adamw"] = {
        "label": "ScheduleFreeAdamW (defaults)",
        "kind": "schedule_free_adamw",
        "rate": _schedule_free_default_rate(),
    }
#: The peer that ActCooLR driving Adam is checked against.
ADAM_PEER = "adam_1e-3"

# Grids of 7 rates over three decades in steps of about half a decade (1, 3, 10, 30, ...), around the
# usual range of each optimizer, chosen before any run. One-cycle's grid (of its peak rate) is one
# step above the constant grid: its mean rate is about half its peak.
ONE_THREE = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0)


def _grid(low: float, points: int = 7) -> tuple[float, ...]:
    start = ONE_THREE.index(low)
    return ONE_THREE[start : start + points]


GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "sgdm": {"constant": _grid(1e-3), "onecycle": _grid(3e-3), "cosine": _grid(1e-3)},
    "sgd": {"constant": _grid(3e-3), "onecycle": _grid(1e-2), "cosine": _grid(3e-3)},
    "adam": {"constant": _grid(3e-5), "onecycle": _grid(1e-4), "cosine": _grid(3e-5)},
}
GRIDS["sgdm_wd"] = GRIDS["sgdm"]
GRIDS["sgdm_half"] = GRIDS["sgd"]

#: The full run's reduced cross product of tasks and optimizers (see docs/quality.md).
FULL_PLAN: dict[str, tuple[str, ...]] = {
    "digits_cnn": ("sgdm", "sgd", "adam"),
    "digits_cnn_bn": ("sgdm", "sgdm_wd", "sgd", "adam"),
    "digits_resnet": ("sgdm", "sgdm_wd", "adam"),
    "digits_mlp": ("sgdm", "sgd", "adam"),
    "breast_cancer_mlp": ("sgdm", "adam"),
    "teacher_mlp": ("sgdm", "sgd", "adam"),
}
QUICK_PLAN: dict[str, tuple[str, ...]] = {
    "digits_cnn_bn": ("sgdm",),
    "digits_cnn": ("sgdm",),
    "breast_cancer_mlp": ("sgdm",),
}
QUICK_RATES = (1e-4, 1e-2, 1.0)


def grid_of(optimizer: str, method: str, quick: bool = False) -> tuple[float, ...]:
    """The baseline grid of `method` for `optimizer`; `--quick` keeps the 2nd, 4th and 6th points."""
    grid = GRIDS[optimizer][method]
    return grid[1::2] if quick else grid


# ---------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: `rate` is the initial rate (ActCooLR) or the grid point (baselines)."""

    task: str
    optimizer: str
    method: str
    rate: float
    seed: int
    epochs: int
    controller: tuple[tuple[str, Any], ...] = ()

    def label(self) -> str:
        return f"{self.task} {self.optimizer} {self.method} rate={self.rate:g} seed={self.seed}"


#: The fields of a `RunSpec` that name a run (all but the controller arguments).
RUN_KEYS = ("task", "optimizer", "method", "rate", "seed", "epochs")


def has_guards() -> bool:
    """Whether the installed `ActCooLR` takes a `guards` argument."""
    return "guards" in inspect.signature(kac.ActCooLR).parameters


def controller_kwargs(spec: RunSpec) -> dict[str, Any]:
    """Keyword arguments of the `ActCooLR` of a controlled run."""
    if spec.method == "paper":
        kwargs: dict[str, Any] = {"start_temperature": PAPER_START_TEMPERATURE}
        if has_guards():
            kwargs["guards"] = False
        return kwargs
    return dict(spec.controller)


def make_optimizer(name: str, learning_rate: Any) -> keras.optimizers.Optimizer:
    if name in PEERS:
        kind = PEERS[name]["kind"]
        if kind == "schedule_free_adamw":
            return keras.optimizers.ScheduleFreeAdamW()  # every argument at its default
        if kind == "adam":
            return keras.optimizers.Adam(learning_rate)
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    config = OPTIMIZERS[name]
    if config["kind"] == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=config["weight_decay"])
    return keras.optimizers.SGD(learning_rate, momentum=config["momentum"], weight_decay=config["weight_decay"])


def steps_per_epoch(task: Task, data: Data) -> int:
    return -(-len(data.x_train) // task.batch_size)


def learning_rate_and_callbacks(spec: RunSpec, total_steps: int) -> tuple[Any, list, Any]:
    """`(learning rate, callbacks, controller or None)` of a run."""
    if spec.method in CONTROLLED:
        controller = kac.ActCooLR(**controller_kwargs(spec))
        return kac.ActCooLRSchedule(spec.rate), [controller], controller
    if spec.method in ("constant", "peer"):
        return spec.rate, [], None
    if spec.method == "cosine":
        return keras.optimizers.schedules.CosineDecay(spec.rate, decay_steps=total_steps, alpha=0.0), [], None
    if spec.method == "onecycle":
        schedule = kac.OneCycle(spec.rate / 10.0, spec.rate, total_steps=total_steps, t_max=0.3)
        config = OPTIMIZERS[spec.optimizer]
        momentum = config["kind"] == "sgd" and config["momentum"] > 0
        return schedule, [kac.OneCycleMomentum()] if momentum else [], None
    raise ValueError(f"Unknown method. Received: method={spec.method!r}")


def accuracy_and_finite(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[float, bool]:
    """Accuracy of `model` (inference mode, one eager call: nothing to trace) and whether its logits are finite."""
    with warnings.catch_warnings():
        # A converted model declares its input as a list; one array is what it gets here.
        warnings.simplefilter("ignore")
        logits = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(np.argmax(logits, axis=1) == y)), bool(np.all(np.isfinite(logits)))


def is_collapsed(
    final_loss: float | None,
    test_accuracy: float | None,
    chance: float,
    margin: float = COLLAPSE_MARGIN,
    chance_loss: float | None = None,
) -> bool:
    """Whether a run collapsed: no finite final loss, test accuracy at most `chance + margin`, or (when
    `chance_loss` is given) a final loss of at least `CHANCE_LOSS_SHARE * chance_loss` with test accuracy
    at most `chance + CHANCE_LOSS_MARGIN`."""
    if final_loss is None or test_accuracy is None or not math.isfinite(final_loss):
        return True
    if chance_loss is not None and final_loss >= CHANCE_LOSS_SHARE * chance_loss:
        return test_accuracy <= chance + CHANCE_LOSS_MARGIN
    return test_accuracy <= chance + margin


def plain(value: Any) -> Any:
    """`value` in JSON types: arrays as lists, non-finite floats as the strings "nan", "inf", "-inf"."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if value is None or isinstance(value, str):
        return value
    return repr(value)


def as_float(value: Any) -> float | None:
    """Inverse of `plain` for one number."""
    return None if value is None else float(value)


class RateRecorder(keras.callbacks.Callback):
    """The learning rate of every step, read before it (a schedule is evaluated at the current iteration)."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def train_run(spec: RunSpec) -> dict[str, Any]:
    """Train one run and return its result (JSON types only)."""
    task = TASKS[spec.task]
    data = task.load()
    steps = steps_per_epoch(task, data)
    total_steps = steps * spec.epochs
    # A fresh global state (layer names, random generators): a run does not depend on the runs before it.
    keras.utils.clear_session()
    keras.utils.set_random_seed(spec.seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    result: dict[str, Any] = dataclasses.asdict(spec)
    result.update(controller=controller_kwargs(spec) if spec.method in CONTROLLED else None)
    result.update(role=task.role, chance=task.chance_accuracy(data), chance_loss=task.chance_loss(data))
    result.update(steps_per_epoch=steps, total_steps=total_steps)
    error = None
    final_loss = val_accuracy = test_accuracy = None
    finite_outputs = False
    records: list = []
    events: list = []
    losses: list = []
    controller, rates = None, RateRecorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            learning_rate, callbacks, controller = learning_rate_and_callbacks(spec, total_steps)
            if controller is not None:
                callbacks = [*callbacks, rates]
            model = task.build(data.x_train.shape[1:], data.num_classes)
            if controller is not None:
                model = kac.convert(model)
            model.compile(
                optimizer=make_optimizer(spec.optimizer, learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                # XLA compiles each tiny model for longer than it trains.
                jit_compile=False,
            )
            # TerminateOnNaN prints to stdout, which holds the tables.
            with contextlib.redirect_stdout(sys.stderr):
                history = model.fit(
                    data.x_train,
                    data.y_train,
                    batch_size=task.batch_size,
                    epochs=spec.epochs,
                    callbacks=[*callbacks, keras.callbacks.TerminateOnNaN()],
                    verbose=0,
                )
            losses = [float(v) for v in history.history["loss"]]
            final_loss = losses[-1]
            val_accuracy, _ = accuracy_and_finite(model, data.x_val, data.y_val)
            test_accuracy, finite_outputs = accuracy_and_finite(model, data.x_test, data.y_test)
            if controller is not None:
                records = list(controller.measurements)
                events = list(controller.events)
        except Exception as exception:  # noqa: BLE001 - a run that raises is a result (collapsed), not the end
            error = f"{type(exception).__name__}: {exception}"
    messages = sorted(
        {f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, DeprecationWarning)}
    )
    result.update(
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
        final_loss=final_loss,
        losses=losses,
        epochs_run=len(losses),
        error=error,
        finite_outputs=finite_outputs,
        collapsed=not finite_outputs
        or is_collapsed(final_loss, test_accuracy, result["chance"], chance_loss=result["chance_loss"]),
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        warnings=messages[:10],
        records=records,
        events=events,
    )
    if controller is not None:
        result.update(never_rises_last_tenth=never_rises_in_last_tenth(rates.rates))
    if records:
        rates = [r["learning_rate"] for r in records]
        result.update(min_learning_rate=min(rates), max_learning_rate=max(rates), final_learning_rate=rates[-1])
        result.update(final_temperature=records[-1]["temperature"])
    return plain(result)


def plan_runs(
    tasks: Iterable[str],
    plan: dict[str, tuple[str, ...]],
    methods: Iterable[str],
    seeds: Iterable[int],
    rates: Iterable[float],
    epochs: int | None,
    controller: dict[str, Any],
    quick: bool = False,
) -> list[RunSpec]:
    """Every run of a benchmark, grouped by task (so that a worker reuses the task's data)."""
    specs = []
    frozen = tuple(sorted(controller.items()))
    for task_name in tasks:
        task = TASKS[task_name]
        if "peer" in methods:
            for peer, config in PEERS.items():
                for seed in seeds:
                    specs.append(
                        RunSpec(task_name, peer, "peer", float(config["rate"]), int(seed), epochs or task.epochs)
                    )
        for optimizer in plan[task_name]:
            for method in (m for m in methods if m != "peer"):
                points = rates if method in CONTROLLED else grid_of(optimizer, method, quick)
                for rate in points:
                    for seed in seeds:
                        specs.append(
                            RunSpec(
                                task_name,
                                optimizer,
                                method,
                                float(rate),
                                int(seed),
                                epochs or task.epochs,
                                frozen if method == "actcoolr" else (),
                            )
                        )
    return specs


def _init_worker(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def progress_line(index: int, total: int, result: dict[str, Any]) -> str:
    if result["error"] is not None:
        outcome = f"ERROR {result['error'][:120]}"
    else:
        outcome = (
            f"val {result['val_accuracy']:.4f} test {result['test_accuracy']:.4f} "
            f"loss {as_float(result['final_loss']):.4g}"
        )
        if "final_learning_rate" in result:
            outcome += (
                f" lr end {as_float(result['final_learning_rate']):.3g}"
                f" T end {as_float(result['final_temperature']):.3g}"
            )
    flag = " COLLAPSED" if result["collapsed"] else ""
    spec = RunSpec(**{k: result[k] for k in RUN_KEYS})
    return f"[{index}/{total}] {spec.label()}: {outcome}{flag} ({result['seconds']:.1f} s)"


def run_all(specs: list[RunSpec], jobs: int) -> list[dict[str, Any]]:
    """Train every run, `jobs` at a time in worker processes (or here when `jobs` is 1); results in plan order."""
    results: list[dict[str, Any] | None] = [None] * len(specs)
    done = 0

    def report(i: int, result: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        results[i] = result
        print(progress_line(done, len(specs), result), file=sys.stderr, flush=True)

    if jobs <= 1:
        for i, spec in enumerate(specs):
            report(i, train_run(spec))
        return results  # type: ignore[return-value]
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with concurrent.futures.ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(train_run, spec): i for i, spec in enumerate(specs)}
        for future in concurrent.futures.as_completed(futures):
            report(futures[future], future.result())
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------- summary


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def never_rises_in_last_tenth(rates: list[float]) -> bool | None:
    """Whether the rate over the last tenth of the steps never exceeds its value at the start of that tenth."""
    if not rates:
        return None
    tail = rates[int(math.floor(0.9 * len(rates))) :]
    return bool(max(tail) <= tail[0] * (1 + 1e-6))


def held_measurements(run: dict[str, Any]) -> tuple[int, int] | None:
    """`(held, measured)`: the run's measurements at which the runaway guard held the rate, of all its
    measurements; None for a run without records (a baseline, or a file written before them)."""
    records = run.get("records")
    if not records:
        return None
    return sum(bool(r.get("runaway")) for r in records), len(records)


def is_grid_edge(grid: list[float], best: float | None) -> bool:
    """Whether the chosen point `best` of the sorted `grid` is its smallest or largest (the grid may be too
    narrow)."""
    return len(grid) > 1 and best in (grid[0], grid[-1])


def spread(values: Iterable[float]) -> float:
    values = list(values)
    return float(max(values) - min(values))


def accuracy_of(run: dict[str, Any]) -> float:
    """Test accuracy of a run, 0 for a run that raised."""
    return 0.0 if run["test_accuracy"] is None else float(run["test_accuracy"])


def val_accuracy_of(run: dict[str, Any]) -> float:
    return 0.0 if run["val_accuracy"] is None else float(run["val_accuracy"])


def by_rate(runs: list[dict[str, Any]]) -> dict[float, list[dict[str, Any]]]:
    groups: dict[float, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(float(run["rate"]), []).append(run)
    return dict(sorted(groups.items()))


def summarize_controlled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """ActCooLR over initial rates: per rate the median and spread of test accuracy over seeds.

    `median` is the median over initial rates of the per-rate medians (what a
    user gets from an initial rate taken anywhere in the range),
    `rate_spread` the largest minus the smallest per-rate median, `worst_rate`
    the initial rate of the smallest, `seed_spread` the largest seed spread
    of any initial rate.
    """
    per_rate = {
        rate: {
            "median": median(accuracy_of(r) for r in group),
            "spread": spread(accuracy_of(r) for r in group),
            "min": min(accuracy_of(r) for r in group),
            "max": max(accuracy_of(r) for r in group),
            "runs": len(group),
        }
        for rate, group in by_rate(runs).items()
    }
    medians = {rate: v["median"] for rate, v in per_rate.items()}
    worst = min(medians, key=medians.get)
    held = [held_measurements(r) for r in runs]
    seeds = {r["seed"] for r in runs}
    return {
        "per_rate": per_rate,
        "median": median(medians.values()),
        "seed_spread": max(v["spread"] for v in per_rate.values()),
        "rate_spread": spread(medians.values()),
        "worst_rate": worst,
        "worst_median": medians[worst],
        "collapsed": sum(bool(r["collapsed"]) for r in runs),
        # Runs whose rate rose over the last tenth; None for files written before the field.
        "rose_last_tenth": (
            sum(r["never_rises_last_tenth"] is False for r in runs)
            if all("never_rises_last_tenth" in r for r in runs)
            else None
        ),
        "runs": len(runs),
        "runs_to_tune": 0,
        "seeds": len(seeds),
        # Measurements held by the runaway guard, of all, over every run; None if a run has no records.
        "held": None if None in held else tuple(map(sum, zip(*held))),
    }


def summarize_baseline(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A baseline's grid: the point of best median validation accuracy over seeds, and its test accuracy.

    Ties go to the smaller rate.
    """
    per_rate = {
        rate: {
            "val_median": median(val_accuracy_of(r) for r in group),
            "median": median(accuracy_of(r) for r in group),
            "spread": spread(accuracy_of(r) for r in group),
            "runs": len(group),
        }
        for rate, group in by_rate(runs).items()
    }
    grid = list(per_rate)
    best = max(grid, key=lambda rate: (per_rate[rate]["val_median"], -rate))
    return {
        "per_rate": per_rate,
        "grid": grid,
        "best_rate": best,
        "at_edge": is_grid_edge(grid, best),
        "median": per_rate[best]["median"],
        "seed_spread": per_rate[best]["spread"],
        "val_median": per_rate[best]["val_median"],
        "collapsed": sum(bool(r["collapsed"]) for r in runs),
        "runs": len(runs),
        "runs_to_tune": len(runs),
    }


def summarize_peer(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """An untuned peer: median and spread of test accuracy over seeds at its one rate (no tuning)."""
    return {
        "rate": float(runs[0]["rate"]),
        "median": median(accuracy_of(r) for r in runs),
        "seed_spread": spread(accuracy_of(r) for r in runs),
        "collapsed": sum(bool(r["collapsed"]) for r in runs),
        "runs": len(runs),
        "runs_to_tune": 0,
    }


def best_peer(peers: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """`(name, summary)` of the peer with the highest median test accuracy (ties: the first in `PEERS` order)."""
    if not peers:
        return None
    order = {name: i for i, name in enumerate(PEERS)}
    name = max(peers, key=lambda n: (peers[n]["median"], -order.get(n, len(order))))
    return name, peers[name]


def check(
    controlled: dict[str, Any] | None,
    baselines: dict[str, dict[str, Any]],
    peers: dict[str, dict[str, Any]] | None = None,
    optimizer: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The targets of one task and optimizer: each `{"pass": bool or None, "value": float or None}`.

    Points are accuracy x 100. `pass` is None when the runs it needs are missing.
    `best_peer`: ActCooLR's median minus the best untuned peer's (`peers`, by
    name) at least -0.3; `adam_peer`: for `optimizer="adam"` only, ActCooLR's
    median minus Adam at 1e-3's at least -1.
    """
    checks: dict[str, dict[str, Any]] = {}
    for method in ("constant", "onecycle"):
        if controlled is None or method not in baselines:
            checks[method] = {"pass": None, "value": None}
            continue
        gap = 100.0 * (controlled["median"] - baselines[method]["median"])
        checks[method] = {"pass": gap >= -TARGETS[method] - 1e-9, "value": gap}
    if controlled is None:
        checks["rate_spread"] = checks["no_collapse"] = {"pass": None, "value": None}
    else:
        rate_spread = 100.0 * controlled["rate_spread"]
        checks["rate_spread"] = {"pass": rate_spread <= TARGETS["rate_spread"] + 1e-9, "value": rate_spread}
        checks["no_collapse"] = {"pass": controlled["collapsed"] == 0, "value": controlled["collapsed"]}
    rose = None if controlled is None else controlled.get("rose_last_tenth")
    checks["last_tenth"] = {"pass": None if rose is None else rose == 0, "value": rose}
    best = best_peer(peers or {})
    checks["best_peer"] = checks["adam_peer"] = {"pass": None, "value": None}
    if controlled is not None and best is not None:
        gap = 100.0 * (controlled["median"] - best[1]["median"])
        checks["best_peer"] = {"pass": gap >= -TARGETS["best_peer"] - 1e-9, "value": gap}
    if controlled is not None and optimizer == "adam" and peers and ADAM_PEER in peers:
        gap = 100.0 * (controlled["median"] - peers[ADAM_PEER]["median"])
        checks["adam_peer"] = {"pass": gap >= -TARGETS["adam_peer"] - 1e-9, "value": gap}
    return checks


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task and optimizer: a summary of each method and the checks of the `actcoolr` runs."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["task"], run["optimizer"], run["method"]), []).append(run)
    summary: dict[str, Any] = {}
    for (task, optimizer, method), group in groups.items():
        controllers = sorted({json.dumps(run.get("controller"), sort_keys=True) for run in group})
        if len(controllers) > 1:
            raise ValueError(
                f"The {method} runs of {task} with {optimizer} used different controller arguments: summarize "
                f"them separately. Received: controllers={controllers}"
            )
        entry = summary.setdefault(task, {}).setdefault(optimizer, {"methods": {}})
        if method == "peer":
            entry["methods"][method] = summarize_peer(group)
        else:
            entry["methods"][method] = (summarize_controlled if method in CONTROLLED else summarize_baseline)(group)
    for optimizers in summary.values():
        peers = task_peers(optimizers)
        for optimizer, entry in optimizers.items():
            if optimizer in PEERS:
                continue
            methods = entry["methods"]
            baselines = {m: methods[m] for m in BASELINES if m in methods}
            entry["checks"] = check(methods.get("actcoolr"), baselines, peers, optimizer)
    return summary


def task_peers(optimizers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The peer summaries of one task of `summarize`'s result, by peer name."""
    return {name: entry["methods"]["peer"] for name, entry in optimizers.items() if "peer" in entry["methods"]}


# ---------------------------------------------------------------- output

METHOD_LABELS = {
    "actcoolr": "ActCooLR",
    "paper": "ActCooLR, paper",
    "constant": "constant",
    "onecycle": "one-cycle",
    "cosine": "cosine",
    "peer": "untuned peer",
}
CHECK_LABELS = {
    "constant": "vs constant (>= -1)",
    "onecycle": "vs one-cycle (>= -1.5)",
    "rate_spread": "rate spread (<= 2)",
    "no_collapse": "no collapse",
    "last_tenth": "runs whose rate rose in the last tenth",
    "best_peer": "vs best untuned peer (>= -0.3)",
    "adam_peer": "Adam: vs Adam 1e-3 (>= -1)",
}
#: Names of the checks in the overview's "checks" column.
CHECK_SHORT = {
    "constant": "constant",
    "onecycle": "one-cycle",
    "rate_spread": "spread",
    "no_collapse": "collapse",
    "last_tenth": "last tenth",
    "best_peer": "best peer",
    "adam_peer": "Adam 1e-3",
}


def points(accuracy: float) -> str:
    return f"{100.0 * accuracy:.1f}"


def verdict(entry: dict[str, Any], digits: int = 1) -> str:
    if entry["pass"] is None:
        return "n/a"
    value = entry["value"]
    shown = f"{value:+.{digits}f}" if isinstance(value, float) else str(value)
    return f"{'pass' if entry['pass'] else 'FAIL'} ({shown})"


def label_of(optimizer: str) -> str:
    """The table label of an optimizer or of an untuned peer."""
    if optimizer in OPTIMIZERS:
        return OPTIMIZERS[optimizer]["label"]
    return PEERS[optimizer]["label"] if optimizer in PEERS else optimizer


def method_row(optimizer: str, method: str, s: dict[str, Any]) -> list[str]:
    label = label_of(optimizer)
    if method == "peer":
        return [
            label,
            METHOD_LABELS[method],
            f"{s['rate']:g} (default, not tuned)",
            points(s["median"]),
            points(s["seed_spread"]),
            "",
            f"{s['collapsed']}/{s['runs']}",
            "0",
            "",
        ]
    if method in CONTROLLED:
        rates = ", ".join(f"{r:g}" for r in s["per_rate"])
        setting = f"any of {rates} (worst {s['worst_rate']:g}: {points(s['worst_median'])})"
        rate_spread = points(s["rate_spread"])
        tune = "0"
        held = "-" if s["held"] is None else f"{s['held'][0]}/{s['held'][1]}"
    else:
        grid = ", ".join(f"{r:g}" for r in s["grid"])
        setting = f"{s['best_rate']:g}{' (grid edge)' if s['at_edge'] else ''} of {{{grid}}}"
        rate_spread = ""
        seeds = s["runs"] // max(1, len(s["grid"]))
        tune = f"{s['runs_to_tune']} ({len(s['grid'])} rates x {seeds} seed{'' if seeds == 1 else 's'})"
        held = ""
    return [
        label,
        METHOD_LABELS.get(method, method),
        setting,
        points(s["median"]),
        points(s["seed_spread"]),
        rate_spread,
        f"{s['collapsed']}/{s['runs']}",
        tune,
        held,
    ]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def overview_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per task and optimizer (the format of docs/quality.md's results): ActCooLR, the tuned
    baselines, the best untuned peer of the task, and the checks that fail."""
    rows = []
    for task_name, optimizers in summary.items():
        role = TASKS[task_name].role if task_name in TASKS else "?"
        best = best_peer(task_peers(optimizers))
        peer_cell = f"{points(best[1]['median'])} ({label_of(best[0])})" if best else "-"
        for optimizer, entry in optimizers.items():
            if optimizer in PEERS:
                continue
            methods = entry["methods"]
            controlled = methods.get("actcoolr")
            cells = [f"{task_name} ({role})", label_of(optimizer)]
            cells.append(f"{points(controlled['median'])} ({points(controlled['rate_spread'])})" if controlled else "-")
            cells += [points(methods[m]["median"]) if m in methods else "-" for m in BASELINES]
            cells.append(peer_cell)
            misses = [CHECK_SHORT[name] for name, value in entry["checks"].items() if value["pass"] is False]
            known = [value for value in entry["checks"].values() if value["pass"] is not None]
            cells.append(("misses: " + ", ".join(misses)) if misses else ("all pass" if known else "n/a"))
            rows.append(cells)
    return rows


OVERVIEW_HEADER = [
    "task (role)",
    "optimizer",
    "ActCooLR (spread over initial rates)",
    "tuned constant",
    "tuned one-cycle",
    "tuned cosine",
    "best untuned peer",
    "checks",
]


def render_markdown(summary: dict[str, Any], runs: list[dict[str, Any]], epochs: dict[str, int] | None = None) -> str:
    """Markdown: an overview, one table per task, then the checks and a count of passes by role."""
    out = ["### Overview (median test accuracy %)\n", markdown_table(OVERVIEW_HEADER, overview_rows(summary)) + "\n"]
    header = [
        "optimizer",
        "method",
        "rate (tuned on validation)",
        "median test acc. %",
        "seed spread",
        "spread over initial rates",
        "collapsed",
        "runs to tune",
        "held by the runaway guard",
    ]
    chance = {run["task"]: run["chance"] for run in runs}
    for task_name, optimizers in summary.items():
        task = TASKS.get(task_name)
        role = task.role if task else "?"
        description = task.description if task else task_name
        epoch_note = f", {epochs[task_name]} epochs" if epochs and task_name in epochs else ""
        out.append(f"### {task_name} ({role})\n")
        out.append(f"{description}{epoch_note}; chance {points(chance[task_name])} %.\n")
        rows = []
        # The task's optimizers first, then its untuned peers.
        for optimizer, entry in sorted(optimizers.items(), key=lambda item: item[0] in PEERS):
            for method in METHODS:
                if method in entry["methods"]:
                    rows.append(method_row(optimizer, method, entry["methods"][method]))
        out.append(markdown_table(header, rows) + "\n")
    out.append("### Checks (ActCooLR defaults; points of test accuracy)\n")
    rows = []
    tally: dict[str, list[int]] = {DEVELOPMENT: [0, 0], HELD_OUT: [0, 0]}
    for task_name, optimizers in summary.items():
        role = TASKS[task_name].role if task_name in TASKS else "?"
        for optimizer, entry in optimizers.items():
            if optimizer in PEERS:
                continue
            checks = entry["checks"]
            rows.append(
                [task_name, role, OPTIMIZERS.get(optimizer, {}).get("label", optimizer)]
                + [verdict(checks[name]) for name in CHECK_LABELS]
            )
            for value in checks.values():
                if value["pass"] is not None and role in tally:
                    tally[role][0] += bool(value["pass"])
                    tally[role][1] += 1
    out.append(markdown_table(["task", "role", "optimizer", *CHECK_LABELS.values()], rows) + "\n")
    for role, (passed, total) in tally.items():
        if total:
            out.append(f"- {role} tasks: {passed} of {total} checks pass.")
    out.append(
        "\nMedians and spreads (max - min) are over seeds. ActCooLR's median is the median over initial rates "
        "of the per-rate medians; its seed spread is the largest of any initial rate. A baseline's rate is the "
        "grid point with the best median validation accuracy; 'grid edge' means the grid may be too narrow. "
        "An untuned peer runs at its default rate (no grid); the best untuned peer is the one of the task with "
        "the highest median. "
        "Held by the runaway guard: the measurements of ActCooLR's runs at which the guard held the rate (it may "
        "not rise there), of all their measurements. "
        "Collapsed: non-finite loss or outputs, an error, test accuracy within 2 points of chance, or a final "
        "training loss of at least 95 % of the chance loss (the entropy of the training labels) with test "
        "accuracy within 10 points of chance."
    )
    return "\n".join(out) + "\n"


def save_figure(summary: dict[str, Any], path: str) -> bool:
    """Test accuracy against initial rate (ActCooLR) with the tuned baselines and the best untuned peer as
    lines; False without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        print("Figure skipped: matplotlib is not installed (pip install matplotlib).", file=sys.stderr)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    optimizers = [name for name in OPTIMIZERS if any(name in summary[t] for t in tasks)]
    figure, axes = plt.subplots(
        len(tasks),
        len(optimizers),
        figsize=(max(5.0, 3.2 * len(optimizers)), 2.6 * len(tasks)),
        squeeze=False,
        sharex=True,
    )
    styles = {"constant": ("tab:gray", "-"), "onecycle": ("tab:green", "--"), "cosine": ("tab:purple", ":")}
    controlled_styles = {"actcoolr": ("tab:blue", "o"), "paper": ("tab:red", "s")}
    for row, task in enumerate(tasks):
        for column, optimizer in enumerate(optimizers):
            ax = axes[row][column]
            entry = summary[task].get(optimizer)
            if entry is None:
                ax.set_axis_off()
                continue
            values = []
            for method, (colour, marker) in controlled_styles.items():
                s = entry["methods"].get(method)
                if s is None:
                    continue
                rates = list(s["per_rate"])
                medians = [100 * s["per_rate"][r]["median"] for r in rates]
                label = f"{METHOD_LABELS[method]} (median, seed range)"
                ax.plot(rates, medians, marker=marker, color=colour, label=label)
                low = [100 * s["per_rate"][r]["min"] for r in rates]
                high = [100 * s["per_rate"][r]["max"] for r in rates]
                ax.fill_between(rates, low, high, color=colour, alpha=0.2, linewidth=0)
                values += medians
            for method, (colour, style) in styles.items():
                s = entry["methods"].get(method)
                if s is not None:
                    label = f"{METHOD_LABELS[method]} (tuned)"
                    ax.axhline(100 * s["median"], color=colour, linestyle=style, label=label)
                    values.append(100 * s["median"])
            best = best_peer(task_peers(summary[task]))
            if best is not None:
                ax.axhline(100 * best[1]["median"], color="black", linestyle="-.", label="best untuned peer")
                values.append(100 * best[1]["median"])
            ax.set_xscale("log")
            if values:
                top = max(values)
                ax.set_ylim(max(0.0, min(min(values), top - 10.0) - 1.0), min(100.5, top + 1.0))
            ax.set_title(f"{task}\n{OPTIMIZERS[optimizer]['label']}", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == len(tasks) - 1:
                ax.set_xlabel("initial learning rate", fontsize=8)
            if column == 0:
                ax.set_ylabel("test accuracy %", fontsize=8)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    columns = max(2, min(len(handles), int(1.8 * len(optimizers))))
    rows = -(-len(handles) // columns)
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=columns, fontsize=7)
    # About 0.22 inch per legend row, of a figure 2.6 inches per task high.
    figure.tight_layout(rect=(0, (0.22 * rows + 0.05) / (2.6 * len(tasks)), 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=None, help=f"comma-separated, among {','.join(TASKS)} (default: all)")
    parser.add_argument(
        "--optimizers",
        default=None,
        help=f"comma-separated, among {','.join(OPTIMIZERS)} (default: the plan of docs/quality.md)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, among {','.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--seeds", default=None, help="comma-separated integers (default: 0,1,2)")
    parser.add_argument("--rates", default=None, help="ActCooLR's initial rates (default: 1e-4,1e-3,1e-2,1e-1,1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: per task)")
    parser.add_argument("--controller", default="{}", help="JSON keyword arguments of the `actcoolr` runs' ActCooLR")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one seed, three tasks, SGD with momentum, 3 initial rates, 3-point grids, the peers",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (2 on a free 2-core machine)")
    parser.add_argument("--output", default=None, help="JSON file of every run and the summary")
    parser.add_argument("--markdown", default=None, help="also write the tables to this Markdown file")
    parser.add_argument("--figure", default=None, help="PNG of accuracy against initial rate (needs matplotlib)")
    parser.add_argument(
        "--summarize", nargs="+", default=None, metavar="JSON", help="no training: report earlier --output files"
    )
    args = parser.parse_args(argv)

    def names(value: str | None, known: Iterable[str], option: str, default: Iterable[str]) -> tuple[str, ...]:
        if value is None:
            return tuple(default)
        chosen = tuple(n.strip() for n in value.split(",") if n.strip())
        unknown = [n for n in chosen if n not in known]
        if unknown or not chosen:
            parser.error(f"{option} takes names among {', '.join(known)}. Received: {option}={value}")
        return chosen

    plan = QUICK_PLAN if args.quick else FULL_PLAN
    args.tasks = names(args.tasks, TASKS, "--tasks", plan)
    args.methods = names(args.methods, METHODS, "--methods", DEFAULT_METHODS)
    optimizers = names(args.optimizers, OPTIMIZERS, "--optimizers", ())
    args.plan = {task: optimizers or plan.get(task, FULL_PLAN[task]) for task in args.tasks}
    try:
        if args.seeds is None:
            args.seeds = (0,) if args.quick else SEEDS
        else:
            args.seeds = tuple(int(s) for s in args.seeds.split(","))
        default_rates = QUICK_RATES if args.quick else INITIAL_RATES
        args.rates = tuple(float(r) for r in args.rates.split(",")) if args.rates else default_rates
    except ValueError:
        parser.error(f"--seeds takes integers and --rates numbers. Received: --seeds={args.seeds} --rates={args.rates}")
    try:
        args.controller = json.loads(args.controller)
    except json.JSONDecodeError as error:
        parser.error(f"--controller takes a JSON object. Received: --controller={args.controller} ({error})")
    if not isinstance(args.controller, dict):
        parser.error(f"--controller takes a JSON object. Received: --controller={args.controller}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1. Received: --epochs={args.epochs}")
    return args


def environment() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_actcoolr": kac.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "actcoolr_has_guards": has_guards(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.summarize:
        merged: dict[str, dict[str, Any]] = {}
        for path in args.summarize:
            with open(path) as file:
                for run in json.load(file)["runs"]:
                    # A run repeated in a later file replaces the earlier one.
                    key = json.dumps([run[k] for k in (*RUN_KEYS, "controller")])
                    merged[key] = run
        runs = list(merged.values())
        started = time.perf_counter()
    else:
        specs = plan_runs(
            args.tasks, args.plan, args.methods, args.seeds, args.rates, args.epochs, args.controller, args.quick
        )
        print(
            f"{len(specs)} runs: tasks {','.join(args.tasks)}; methods {','.join(args.methods)}; seeds "
            f"{','.join(map(str, args.seeds))}; controller {args.controller}; guards argument "
            f"{'present' if has_guards() else 'absent'}; {args.jobs} job(s)",
            file=sys.stderr,
            flush=True,
        )
        started = time.perf_counter()
        runs = run_all(specs, args.jobs)
    seconds = time.perf_counter() - started
    summary = summarize(runs)
    epochs = {run["task"]: run["epochs"] for run in runs}
    markdown = render_markdown(summary, runs, epochs)
    print(markdown)
    if not args.summarize:
        print(f"{len(runs)} runs in {seconds / 60:.1f} min ({seconds:.0f} s).")
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(markdown)
    output = {
        "argv": sys.argv[1:] if argv is None else list(argv),
        "environment": environment(),
        "seconds": seconds,
        "grids": {opt: {m: list(g) for m, g in grids.items()} for opt, grids in GRIDS.items()},
        "initial_rates": list(args.rates),
        "peers": plain(PEERS),
        "runs": runs,
        "summary": plain(summary),
    }
    if args.output:
        with open(args.output, "w") as file:
            json.dump(output, file, indent=1)
    if args.figure and save_figure(summary, args.figure):
        print(f"Figure: {args.figure}")
    return output


if __name__ == "__main__":
    main()
