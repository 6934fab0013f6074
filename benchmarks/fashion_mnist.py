"""ActCooLR against tuned schedules and untuned optimizers on Fashion-MNIST: accuracy, time to target, sigma.

    python benchmarks/fashion_mnist.py --output fmnist.jsonl                  # the full run (about 2 hours, 2 cores)
    python benchmarks/fashion_mnist.py --output fmnist.jsonl --plot fmnist.png  # rerun: resumes, then the figure
    python benchmarks/fashion_mnist.py --quick --output quick.jsonl           # about 10 minutes
    python benchmarks/fashion_mnist.py --report fmnist.jsonl --plot fmnist.png  # no training: tables and figure
    python benchmarks/fashion_mnist.py --sigma --epochs 10 --plot sigma.png  # sigma along training (section C)
    python benchmarks/fashion_mnist.py --methods actcoolr_adam --controller '{"adam_units": false}' --output v.jsonl

The data are Fashion-MNIST's IDX files, read by `keras_actcoolr.data` (from
`--fashion-mnist-dir`, Keras' dataset cache or the Debian package
`dataset-fashion-mnist`), with the paper's pipeline: global normalisation,
random horizontal flips, batch 64, the last 1% of the training set (600
images) for validation (it chooses the grid points), the 10,000 test images
for every reported accuracy. Every run trains on the full remaining training
set (59,400 images, 929 steps an epoch) unless `--train-examples` (or
`--quick`) takes its first N.

Networks (`--networks`):

- `convnet4`: the 4-layer ConvNet of `keras_actcoolr.zoo.convnet4`
  (supplementary Table 3), built here as a plain Keras model with stock ReLU
  layers and converted with `keras_actcoolr.convert` for the ActCooLR runs;
- `resnet8`: `keras_actcoolr.zoo.cifar_resnet(8, input_shape=(28, 28, 1))`, a
  CIFAR-style ResNet with batch-norm (one basic block per stage, 16/32/64
  channels, 78,042 parameters); the zoo builds it with `APTReLU` layers, so
  every method trains the same `APTModel` (only ActCooLR measures with it);
- `mlp`: a plain MLP (the flattened image, two hidden Dense layers of 256
  units with ReLU, 269,322 parameters), converted for the ActCooLR runs like
  `convnet4`. Added after 0.8.0 as a held-out network: defined before its
  first run and run once with 0.8.0's controller.

Methods (`--methods`; `METHODS` below), each with seeds 0, 1, 2:

- untuned, one run per seed: `actcoolr` (ActCooLR's defaults driving SGD
  with momentum 0.9, `ActCooLRSchedule(0.1)`), `actcoolr_adam` (ActCooLR's
  defaults driving Adam, `ActCooLRSchedule(1e-3)`), `paper` (supplementary
  Table 3: T0 1.25, gamma 1.86, SGD without momentum from 0.1, no weight
  decay, `guards=False` where the controller has guards), `paper_constant`
  (Table 3's baseline: constant 0.1, momentum 0.9), and the untuned peers
  `adam` (Adam at 1e-3), `adamw` (`keras.optimizers.AdamW()`, its defaults:
  1e-3, weight decay 0.004), `schedule_free_adamw`
  (`keras.optimizers.ScheduleFreeAdamW()`, its defaults: 0.0025; evaluated at
  the weights Keras keeps, its interpolated point `y`, as Keras offers no
  switch to the averaged `x`) and `sgdm` (SGD with momentum 0.9 at Keras'
  default rate 0.01);
- tuned, SGD with momentum 0.9: `constant`, `onecycle` (`OneCycle(max / 10,
  max, t_max=0.3)` to 0 with `OneCycleMomentum`), `cosine` (`CosineDecay` to
  0), each over a grid of 3 rates (`GRIDS`). A grid is tuned on seed 0 (the
  point of best final validation accuracy, ties to the smaller rate), then
  the chosen point runs with seeds 1 and 2: a tuned method costs 5 runs per
  network (3 grid points + 2 seeds), an untuned one 3.

Per network: 8 untuned methods x 3 seeds + 3 tuned methods x 5 runs = 39
runs; 78 for both networks.

Default epochs, `DEFAULT_EPOCHS = 2`: one epoch of the full training set
(929 steps), measured once per network with `--epochs 1 --seeds 0 --methods
adam,actcoolr` on this project's 2-core machine while other jobs ran (load
average 6 to 11, so several times slower than a free machine), as training
seconds (evaluation and set-up excluded) and whole-run seconds: `convnet4`
with Adam 123 s (141 s), with ActCooLR 248 s (279 s); `resnet8` with Adam
93 s (124 s), with ActCooLR 309 s (358 s). An ActCooLR epoch costs 2 to 3.3
plain ones here (the measured steps, and in the first epoch the range
analyses that estimate sigma over the first 4096 examples; later epochs were
not measured). Scaled to a free machine by the docs' earlier 31 s an epoch
for `convnet4` (a factor of 4): about 31 and 62 s for `convnet4`, 23 and
77 s for `resnet8`; one epoch of the 78 runs (30 plain and 9 ActCooLR runs a
network) then costs about 48 minutes, plus about 15 minutes of set-up and
test evaluations in all: 2 epochs make about 2 hours. Each further epoch adds
about 50 minutes (`--epochs`). These are extrapolations from loaded
measurements, not a measured full run.

`--quick` (about 10 minutes): `convnet4` only, the first 6,000 training
images, 2 epochs, seed 0, the methods `actcoolr`, `paper`, `paper_constant`,
`adam`, `schedule_free_adamw`, `sgdm` and `onecycle` over a grid of 2 rates.
Not evidence: a check that everything runs and reports.

`--controller` (a JSON object) adds keyword arguments to ActCooLR's defaults
in the `actcoolr` and `actcoolr_adam` runs (not to `paper`); it is part of
their resume key, so variants can share an output file. ActCooLR runs keep
per measurement the step, rate, temperature, target and control
temperatures, sigma, next rate, ceiling, runaway flag, `step_scale` and the
layer temperatures (`layers`, the paper's count).

Each finished run is appended as one JSON line to `--output` (default
`fashion_mnist.jsonl`): a killed run loses only the run in progress, and a
rerun with the same options skips the runs already in the file (the key is
network, method, rate, seed, epochs and training examples).

Report (stdout, Markdown), per network and method: final test accuracy
(median and max - min over seeds), runs it cost, median wall time and steps
to reach the target (the tuned one-cycle's median final test accuracy;
AlgoPerf-style: test accuracy recorded at the end of every epoch with the
training wall time, evaluation excluded, and the step; "n/3" when only n
seeds reached it), the median over seeds of the final test accuracy minus
the tuned one-cycle's on the same seed (paired by seed: a sharper comparison
than two medians when the seeds vary), whether the rate over the last tenth
of training never exceeds its value at the start of that tenth (ActCooLR
runs; the rate is recorded at every step), per seed the measurements at
which the runaway guard held the rate (it may not rise there) of all its
measurements, and the collapsed and NaN runs; a tuned rate at its grid's
smallest or largest point says "grid edge" (the grid may be too narrow).
`--plot` writes a PNG of test accuracy against wall time (median over seeds
per epoch).

`--sigma`: one run of `convnet4` with the paper's Table 3 controller
(`paper`), with `keras_actcoolr.RangeAnalysisLogger` on a fixed batch of 64
training images (unaugmented) before training and `--sigma-per-epoch` (4)
times an epoch (Keras epochs of a quarter of an epoch): the fitted erf
`sigma` along training, which supplementary section C describes on
Fashion-MNIST as starting at about 3 and falling to about 0.3. It writes
`--output` (JSON lines, one per analysis: epoch as a fraction, step, rate,
sigma, mu, fit residual) and, with `--plot`, the figure (sigma on a log
scale against the step, with dotted lines at 3 and 0.3).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import quality as Q  # noqa: E402

import keras_actcoolr as kac  # noqa: E402
import keras_actcoolr.zoo  # noqa: E402, F401
from keras_actcoolr import data as kdata  # noqa: E402
from keras_actcoolr.presets import get_preset  # noqa: E402

SEEDS = (0, 1, 2)
NETWORKS = ("convnet4", "resnet8", "mlp")
#: See the module docstring: 78 runs of 2 epochs take about 2 hours on a free 2-core machine.
DEFAULT_EPOCHS = 2
CHANCE = 0.1
#: Its chance loss: ten classes of 6,000 training images each.
CHANCE_LOSS = math.log(10)

PAPER = get_preset("fashion_mnist-convnet4-actcoolr")
PAPER_CONSTANT = get_preset("fashion_mnist-convnet4-constant")

#: Untuned methods: `(optimizer, rate)`; `controller` marks the ActCooLR runs.
UNTUNED: dict[str, dict[str, Any]] = {
    "actcoolr": {"optimizer": "sgdm", "rate": 0.1, "controller": "defaults"},
    "actcoolr_adam": {"optimizer": "adam", "rate": 1e-3, "controller": "defaults"},
    "paper": {"optimizer": "sgd_paper", "rate": PAPER.initial_learning_rate, "controller": "paper"},
    "paper_constant": {"optimizer": "sgdm", "rate": PAPER_CONSTANT.initial_learning_rate},
    "adam": {"optimizer": "adam", "rate": 1e-3},
    "adamw": {"optimizer": "adamw", "rate": None},
    "schedule_free_adamw": {"optimizer": "schedule_free_adamw", "rate": None},
    "sgdm": {"optimizer": "sgdm", "rate": 0.01},
}
#: Tuned methods (SGD with momentum 0.9) and their grids.
GRIDS: dict[str, tuple[float, ...]] = {
    "constant": (0.01, 0.03, 0.1),
    "onecycle": (0.03, 0.1, 0.3),
    "cosine": (0.01, 0.03, 0.1),
}
if not hasattr(keras.optimizers, "ScheduleFreeAdamW"):  # older Keras
    del UNTUNED["schedule_free_adamw"]
METHODS = (*UNTUNED, *GRIDS)
CONTROLLED = tuple(name for name, config in UNTUNED.items() if "controller" in config)
#: The runs of ActCooLR's defaults, which `--controller` adds keyword arguments to.
DEFAULTS_CONTROLLED = tuple(name for name, config in UNTUNED.items() if config.get("controller") == "defaults")
TARGET_METHOD = "onecycle"

QUICK = {
    "networks": ("convnet4",),
    "train_examples": 6000,
    "epochs": 2,
    "seeds": (0,),
    "methods": ("actcoolr", "paper", "paper_constant", "adam", "schedule_free_adamw", "sgdm", "onecycle"),
    "grids": {"onecycle": (0.1, 0.3)},
}


# ---------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class RunSpec:
    network: str
    method: str
    rate: float | None
    seed: int
    epochs: int
    train_examples: int | None = None
    #: `--controller`: JSON keyword arguments added to the ActCooLR runs' defaults ("" for none).
    controller_options: str = ""

    def key(self) -> str:
        key = [self.network, self.method, self.rate, self.seed, self.epochs, self.train_examples]
        return json.dumps(key + [self.controller_options] if self.controller_options else key)

    def label(self) -> str:
        rate = "default" if self.rate is None else f"{self.rate:g}"
        options = f" controller={self.controller_options}" if self.controller_options else ""
        return f"{self.network} {self.method} rate={rate} seed={self.seed}{options}"


def plain_convnet4() -> keras.Model:
    """`keras_actcoolr.zoo.convnet4`'s architecture with stock ReLU layers (a plain Keras model)."""
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(32, 5, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(64, 5, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="conv2_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(1024, name="dense1")(x)
    x = keras.layers.ReLU(name="dense1_relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="convnet4")


def plain_mlp() -> keras.Model:
    """Two hidden Dense layers of 256 units with stock ReLU layers, on the flattened 28x28 image."""
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for index in (1, 2):
        x = keras.layers.Dense(256, name=f"dense{index}")(x)
        x = keras.layers.ReLU(name=f"dense{index}_relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="mlp")


#: The networks built as plain Keras models, converted for the ActCooLR runs.
PLAIN_NETWORKS = {"convnet4": plain_convnet4, "mlp": plain_mlp}


def build(network: str, controlled: bool) -> keras.Model:
    if network in PLAIN_NETWORKS:
        model = PLAIN_NETWORKS[network]()
        return kac.convert(model) if controlled else model
    if network == "resnet8":
        return kac.zoo.cifar_resnet(8, input_shape=(28, 28, 1), num_classes=10)
    raise ValueError(f"Unknown network. Received: network={network!r}")


def make_optimizer(name: str, learning_rate: Any) -> keras.optimizers.Optimizer:
    if name == "sgdm":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    if name == "sgd_paper":
        return keras.optimizers.SGD(learning_rate, momentum=PAPER.momentum)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW()
    if name == "schedule_free_adamw":
        return keras.optimizers.ScheduleFreeAdamW()
    raise ValueError(f"Unknown optimizer. Received: name={name!r}")


def controller_kwargs(kind: str, options: str = "") -> dict[str, Any]:
    """ActCooLR's keyword arguments: the paper's (`paper`) or the defaults plus `--controller`'s `options`."""
    if kind == "paper":
        kwargs: dict[str, Any] = {"start_temperature": PAPER.start_temperature, "gamma": PAPER.gamma}
        if Q.has_guards():
            kwargs["guards"] = False
        return kwargs
    return json.loads(options) if options else {}


class EpochRecorder(Q.RateRecorder):
    """Test accuracy after every epoch with the training wall time (evaluation excluded) and step; rate every step."""

    def __init__(self, x_test: np.ndarray, y_test: np.ndarray) -> None:
        super().__init__()
        self.x_test, self.y_test = x_test, y_test
        self.epochs: list[dict[str, Any]] = []
        self.evaluation_seconds = 0.0

    def on_train_begin(self, logs: Any = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        wall = time.perf_counter() - self.started - self.evaluation_seconds
        begin = time.perf_counter()
        accuracy, finite = accuracy_and_finite(self.model, self.x_test, self.y_test)
        self.evaluation_seconds += time.perf_counter() - begin
        loss = (logs or {}).get("loss")
        self.epochs.append(
            {
                "epoch": epoch + 1,
                "step": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
                "seconds": wall,
                "test_accuracy": accuracy,
                "finite_outputs": finite,
                "loss": None if loss is None else float(loss),
            }
        )


def _record_sigma(record: Any) -> float | None:
    try:
        return record["sigma"]
    except (KeyError, TypeError, IndexError):
        return None


never_rises_in_last_tenth = Q.never_rises_in_last_tenth


_CACHE: dict[tuple, Any] = {}


def arrays(path: str | None, train_examples: int | None) -> dict[str, Any]:
    """Validation and test arrays (normalised) and the training data set's source arrays, cached per process."""
    key = (path, train_examples)
    if key not in _CACHE:
        directory = data_directory(path, train_examples)
        val_x, val_y = _numpy(kdata.load("fashion_mnist", "validation", path=directory, batch_size=1000))
        test_x, test_y = _numpy(kdata.load("fashion_mnist", "test", path=directory, batch_size=1000))
        _CACHE.clear()
        _CACHE[key] = {"val": (val_x, val_y), "test": (test_x, test_y)}
    return _CACHE[key]


def _numpy(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


_SUBSETS: dict[tuple, str] = {}


def data_directory(path: str | None, train_examples: int | None) -> str | None:
    """`path`, or with `train_examples` a temporary directory of IDX files holding the first `train_examples`
    training images (and every test image): the validation split is then the last 1% of those."""
    if train_examples is None:
        return path
    key = (path, train_examples)
    if key not in _SUBSETS:
        (x_train, y_train), (x_test, y_test) = kdata.load_fashion_mnist_arrays(path)
        directory = tempfile.mkdtemp(prefix="fashion-mnist-subset-")
        names = kdata.fashion_mnist.FASHION_MNIST_FILES
        for role, array in (
            ("train_images", x_train[:train_examples]),
            ("train_labels", y_train[:train_examples]),
            ("test_images", x_test),
            ("test_labels", y_test),
        ):
            kdata.write_idx(os.path.join(directory, names[role]), array)
        _SUBSETS[key] = directory
    return _SUBSETS[key]


def train_dataset(path: str | None, train_examples: int | None, seed: int) -> Any:
    """The paper's training pipeline (`keras_actcoolr.data.load`), on the first `train_examples` images if given."""
    return kdata.load("fashion_mnist", "train", path=data_directory(path, train_examples), seed=seed)


def accuracy_and_finite(model: keras.Model, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> tuple[float, bool]:
    """`quality.accuracy_and_finite` in batches of `batch` (the ConvNet's activations of 10,000 images take 1 GB)."""
    correct, finite = 0, True
    for start in range(0, len(x), batch):
        accuracy, ok = Q.accuracy_and_finite(model, x[start : start + batch], y[start : start + batch])
        correct += int(round(accuracy * len(x[start : start + batch])))
        finite = finite and ok
    return correct / len(x), finite


def train_run(spec: RunSpec, path: str | None) -> dict[str, Any]:
    """Train one run; its result in JSON types."""
    data = arrays(path, spec.train_examples)
    keras.utils.clear_session()
    keras.utils.set_random_seed(spec.seed)
    train = train_dataset(path, spec.train_examples, spec.seed)
    steps = int(train.cardinality())
    total_steps = steps * spec.epochs
    config = UNTUNED.get(spec.method, {"optimizer": "sgdm"})
    controller = None
    callbacks: list = []
    if spec.method in CONTROLLED:
        controller = kac.ActCooLR(**controller_kwargs(config["controller"], spec.controller_options))
        learning_rate: Any = kac.ActCooLRSchedule(spec.rate)
        callbacks.append(controller)
    elif spec.method == "onecycle":
        learning_rate = kac.OneCycle(spec.rate / 10.0, spec.rate, total_steps=total_steps, t_max=0.3)
        callbacks.append(kac.OneCycleMomentum())
    elif spec.method == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(spec.rate, decay_steps=total_steps, alpha=0.0)
    else:
        learning_rate = spec.rate
    recorder = EpochRecorder(*data["test"])
    result: dict[str, Any] = dataclasses.asdict(spec)
    result.update(optimizer=config["optimizer"], steps_per_epoch=steps, total_steps=total_steps)
    result.update(
        controller=controller_kwargs(config["controller"], spec.controller_options) if controller is not None else None
    )
    error = None
    losses: list = []
    val_accuracy = test_accuracy = None
    finite = False
    started = time.perf_counter()
    try:
        # Keras warns that a tf.data input is not shuffled by `fit`: it is, by the pipeline.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        model = build(spec.network, controller is not None)
        model.compile(
            optimizer=make_optimizer(config["optimizer"], learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        with contextlib.redirect_stdout(sys.stderr):
            history = model.fit(
                train,
                epochs=spec.epochs,
                callbacks=[*callbacks, recorder, keras.callbacks.TerminateOnNaN()],
                verbose=0,
            )
        losses = [float(v) for v in history.history["loss"]]
        val_accuracy, _ = accuracy_and_finite(model, *data["val"])
        test_accuracy, finite = accuracy_and_finite(model, *data["test"])
    except Exception as exception:  # noqa: BLE001 - a run that raises is a result (collapsed)
        error = f"{type(exception).__name__}: {exception}"
    final_loss = losses[-1] if losses else None
    result.update(
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
        final_loss=final_loss,
        losses=losses,
        nan_loss=any(not math.isfinite(v) for v in losses),
        error=error,
        finite_outputs=finite,
        collapsed=not finite or Q.is_collapsed(final_loss, test_accuracy, CHANCE, chance_loss=CHANCE_LOSS),
        seconds=time.perf_counter() - started,
        train_seconds=recorder.epochs[-1]["seconds"] if recorder.epochs else None,
        curve=recorder.epochs,
        rate_start=recorder.rates[0] if recorder.rates else None,
        rate_end=recorder.rates[-1] if recorder.rates else None,
    )
    if controller is not None:
        result.update(rates=recorder.rates, never_rises_last_tenth=never_rises_in_last_tenth(recorder.rates))
        # The sigma the controller used: given, or fitted (its records carry it when they have the key).
        fitted = [value for value in map(_record_sigma, getattr(controller, "history", [])) if value]
        result.update(sigma=controller.sigma if controller.sigma is not None else (fitted[-1] if fitted else None))
        keys = (
            "step",
            "learning_rate",
            "temperature",
            "target_temperature",
            "control_temperature",
            "sigma",
            "next_learning_rate",
            "max_learning_rate",
            "runaway",
            "step_scale",
            "layers",
        )
        history = list(getattr(controller, "history", []))
        result.update(
            records=[{k: r.get(k) for k in keys} for r in history if isinstance(r, dict) and "event" not in r],
            events=[r for r in history if isinstance(r, dict) and "event" in r],
        )
    return Q.plain(result)


# ---------------------------------------------------------------- plan and resume


def read_results(path: str) -> list[dict[str, Any]]:
    """The runs of a JSON-lines file (a half-written line is ignored; a run repeated later replaces the earlier)."""
    if not os.path.exists(path):
        return []
    runs: dict[str, dict[str, Any]] = {}
    with open(path) as file:
        for line in file:
            try:
                run = json.loads(line)
            except json.JSONDecodeError:
                continue
            runs[key_of(run)] = run
    return list(runs.values())


def key_of(run: dict[str, Any]) -> str:
    fields = (run[k] for k in ("network", "method", "rate", "seed", "epochs", "train_examples"))
    return RunSpec(*fields, run.get("controller_options", "")).key()


def untuned_rate(method: str) -> float | None:
    return UNTUNED[method]["rate"]


def best_grid_point(runs: list[dict[str, Any]], points: Iterable[float]) -> float | None:
    """The grid point of best validation accuracy on seed 0 (ties: the smaller rate); None until all ran."""
    values = {}
    for rate in points:
        match = [r for r in runs if r["rate"] == rate]
        if not match:
            return None
        values[rate] = Q.val_accuracy_of(match[0])
    return max(values, key=lambda rate: (values[rate], -rate))


def pending(
    networks: Iterable[str],
    methods: Iterable[str],
    seeds: tuple[int, ...],
    epochs: int,
    train_examples: int | None,
    grids: dict[str, tuple[float, ...]],
    done: list[dict[str, Any]],
    controller_options: str = "",
) -> list[RunSpec]:
    """The runs still to make, given those `done`: untuned methods, then grids on the first seed, then the
    chosen grid points on the other seeds (which need the grid's results, so come after them).
    `controller_options` (`--controller`) goes with the runs of ActCooLR's defaults."""
    done_keys = {key_of(r) for r in done}
    specs = []
    for network in networks:
        for method in methods:
            if method in UNTUNED:
                options = controller_options if method in DEFAULTS_CONTROLLED else ""
                specs += [
                    RunSpec(network, method, untuned_rate(method), s, epochs, train_examples, options) for s in seeds
                ]
                continue
            grid = [RunSpec(network, method, rate, seeds[0], epochs, train_examples) for rate in grids[method]]
            specs += grid
            grid_runs = [r for r in done if key_of(r) in {g.key() for g in grid}]
            best = best_grid_point(grid_runs, grids[method])
            if best is not None:
                specs += [RunSpec(network, method, best, s, epochs, train_examples) for s in seeds[1:]]
    return [s for s in specs if s.key() not in done_keys]


def run_plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run every pending run, appending each result to `args.output`; repeats until the plan is complete.

    A run that raised an error is run again by the next invocation (once per invocation)."""
    attempted: set[str] = set()
    while True:
        done = read_results(args.output)
        finished = [r for r in done if not r.get("error")]
        todo = pending(
            args.networks,
            args.methods,
            args.seeds,
            args.epochs,
            args.train_examples,
            args.grids,
            finished,
            args.controller,
        )
        todo = [spec for spec in todo if spec.key() not in attempted]
        if not todo:
            return done
        print(f"{len(done)} runs done, {len(todo)} to run now", file=sys.stderr, flush=True)
        for spec in todo:
            attempted.add(spec.key())
            result = train_run(spec, args.fashion_mnist_dir)
            with open(args.output, "a") as file:
                file.write(json.dumps(result) + "\n")
                file.flush()
                os.fsync(file.fileno())
            outcome = f"ERROR {result['error'][:100]}" if result["error"] else f"test {result['test_accuracy']:.4f}"
            print(
                f"{spec.label()}: {outcome} val {Q.as_float(result['val_accuracy']) or 0:.4f} "
                f"({result['seconds']:.0f} s{', COLLAPSED' if result['collapsed'] else ''})",
                file=sys.stderr,
                flush=True,
            )


# ---------------------------------------------------------------- report


def select(runs: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[list, list]]:
    """`(final runs, all runs)` of each (network, method): the final runs are every seed of an untuned method,
    every seed at a tuned method's chosen point; all runs add the grid's other points (its tuning cost)."""
    groups: dict[tuple[str, str], list] = {}
    for run in runs:
        groups.setdefault((run["network"], run["method"]), []).append(run)
    chosen = {}
    for (network, method), group in groups.items():
        if method in GRIDS:
            _, best = grid_choice(group)
            chosen[(network, method)] = (
                sorted((r for r in group if r["rate"] == best), key=lambda r: r["seed"]),
                group,
            )
        else:
            chosen[(network, method)] = (group, group)
    return chosen


def grid_choice(runs: list[dict[str, Any]]) -> tuple[list[float], float | None]:
    """A tuned method's grid (the rates run on its first seed) and its chosen point (None until all ran)."""
    first = min(r["seed"] for r in runs)
    grid = sorted({r["rate"] for r in runs if r["seed"] == first})
    return grid, best_grid_point([r for r in runs if r["seed"] == first], grid)


def time_to_target(run: dict[str, Any], target: float) -> tuple[float, int] | None:
    """`(training seconds, step)` at the first epoch whose test accuracy reaches `target`, or None."""
    for point in run.get("curve") or []:
        if point["test_accuracy"] is not None and float(point["test_accuracy"]) >= target - 1e-12:
            return float(point["seconds"]), int(point["step"])
    return None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per network and method: accuracy over seeds, cost, time to the tuned one-cycle's median, rate check, collapses."""
    chosen = select(runs)
    summary: dict[str, dict[str, Any]] = {}
    for (network, method), (group, every) in chosen.items():
        accuracies = [Q.accuracy_of(r) for r in group]
        summary.setdefault(network, {})[method] = {
            "rate": group[0]["rate"],
            "seeds": len(group),
            "median": Q.median(accuracies),
            "spread": Q.spread(accuracies),
            "runs": len(every),
            # Over every run the method cost, grid points included.
            "collapsed": sum(bool(r["collapsed"]) for r in every),
            "nan": sum(bool(r.get("nan_loss")) for r in every),
            "never_rises": ([r.get("never_rises_last_tenth") for r in group] if method in CONTROLLED else None),
            "held": ([Q.held_measurements(r) for r in group] if method in CONTROLLED else None),
            "at_edge": method in GRIDS and Q.is_grid_edge(*grid_choice(every)),
            "group": group,
        }
    for methods in summary.values():
        target = methods[TARGET_METHOD]["median"] if TARGET_METHOD in methods else None
        target_by_seed = (
            {r["seed"]: Q.accuracy_of(r) for r in methods[TARGET_METHOD]["group"]} if target is not None else {}
        )
        for method, entry in methods.items():
            entry["target"] = target
            # Paired with the tuned one-cycle: the median over the seeds both ran of (this - one-cycle).
            differences = [
                Q.accuracy_of(r) - target_by_seed[r["seed"]] for r in entry["group"] if r["seed"] in target_by_seed
            ]
            paired = method != TARGET_METHOD and bool(differences)
            entry["paired"] = (Q.median(differences), len(differences)) if paired else None
            reached = [time_to_target(r, target) for r in entry["group"]] if target is not None else []
            hits = [t for t in reached if t is not None]
            entry["reached"] = len(hits)
            entry["seconds_to_target"] = Q.median(t[0] for t in hits) if hits else None
            entry["steps_to_target"] = Q.median(t[1] for t in hits) if hits else None
    return summary


def render(summary: dict[str, dict[str, Any]]) -> str:
    out = []
    header = [
        "method",
        "rate",
        "median test acc. %",
        "spread",
        "runs",
        "time to target (s)",
        "steps to target",
        "minus the target, paired by seed",
        "rate never rises in last tenth",
        "held by the runaway guard",
        "collapsed",
        "NaN",
    ]
    for network, methods in summary.items():
        target = next(iter(methods.values()))["target"]
        note = f"target {100 * target:.2f} % (tuned one-cycle's median)" if target is not None else "no one-cycle runs"
        out.append(f"### {network} ({note})\n")
        rows = []
        for method in METHODS:
            if method not in methods:
                continue
            e = methods[method]
            rate = "default" if e["rate"] is None else f"{e['rate']:g}"
            seeds = e["seeds"]
            reached = f"{e['reached']}/{seeds}"
            seconds = (
                f"{e['seconds_to_target']:.0f} ({reached})" if e["seconds_to_target"] is not None else f"- ({reached})"
            )
            steps = f"{e['steps_to_target']:.0f}" if e["steps_to_target"] is not None else "-"
            rises = "" if e["never_rises"] is None else f"{sum(v is True for v in e['never_rises'])}/{seeds} yes"
            held = "" if e["held"] is None else ", ".join("-" if h is None else f"{h[0]}/{h[1]}" for h in e["held"])
            tuned = " (tuned, grid edge)" if e["at_edge"] else " (tuned)"
            paired = "" if e["paired"] is None else f"{100 * e['paired'][0]:+.2f} ({e['paired'][1]} seeds)"
            rows.append(
                [
                    method,
                    rate + (tuned if method in GRIDS else ""),
                    f"{100 * e['median']:.2f}",
                    f"{100 * e['spread']:.2f}",
                    str(e["runs"]),
                    seconds,
                    steps,
                    paired,
                    rises,
                    held,
                    f"{e['collapsed']}/{e['runs']}",
                    f"{e['nan']}/{e['runs']}",
                ]
            )
        out.append(Q.markdown_table(header, rows) + "\n")
    out.append(
        "Median and spread (max - min) over seeds of the final test accuracy. Runs: what the method cost (a tuned "
        "method: its grid on the first seed plus the other seeds at the chosen point); collapsed and NaN count all "
        "of them (a collapse: non-finite loss or outputs, an error, test accuracy within 2 points of chance, or a "
        "final training loss of at least 95 % of chance's, ln 10, with test accuracy within 10 points of chance). "
        "Time and steps to target: "
        "median over the seeds that reached it, training time without evaluation, at the end of an epoch. "
        "Minus the target, paired by seed: the median, over the seeds both ran, of the method's final test "
        "accuracy minus the tuned one-cycle's on the same seed (points). "
        "Held by the runaway guard: per seed, the measurements at which the guard held the rate (it may not rise "
        "there), of all measurements. Grid edge: the tuned rate is the grid's smallest or largest, so the grid may "
        "be too narrow."
    )
    return "\n".join(out) + "\n"


def plot_curves(summary: dict[str, dict[str, Any]], path: str) -> bool:
    """Test accuracy against training wall time, median over seeds at each epoch, one panel per network."""
    if importlib.util.find_spec("matplotlib") is None:
        print("Figure skipped: matplotlib is not installed.", file=sys.stderr)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4.2), squeeze=False)
    for ax, (network, methods) in zip(axes[0], summary.items()):
        for method in METHODS:
            if method not in methods:
                continue
            curves = [r["curve"] for r in methods[method]["group"] if r.get("curve")]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            seconds = [Q.median(c[i]["seconds"] for c in curves) for i in range(length)]
            accuracy = [100 * Q.median(Q.as_float(c[i]["test_accuracy"]) for c in curves) for i in range(length)]
            style = "-" if method in CONTROLLED else ("--" if method in GRIDS else ":")
            ax.plot(seconds, accuracy, style, marker="o", markersize=3, label=method)
        target = next(iter(methods.values()))["target"]
        if target is not None:
            ax.axhline(100 * target, color="black", linewidth=0.8, label="target (tuned one-cycle)")
        ax.set_title(f"Fashion-MNIST, {network}", fontsize=9)
        ax.set_xlabel("training wall time (s, evaluation excluded)")
        ax.set_ylabel("test accuracy % (median over seeds)")
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# ---------------------------------------------------------------- sigma along training


def sigma_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The paper's controller on convnet4 with a range analysis before training and after every epoch."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(args.seeds[0])
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    train = train_dataset(args.fashion_mnist_dir, args.train_examples, args.seeds[0])
    steps_per_epoch = int(train.cardinality())
    # Keras "epochs" of `every` steps, so that the logger (which runs at epoch ends) analyses `per_epoch` times an epoch.
    every = max(1, steps_per_epoch // args.sigma_per_epoch)
    rounds = max(1, round(steps_per_epoch * args.epochs / every))
    probe = next(iter(kdata.load("fashion_mnist", "train", path=args.fashion_mnist_dir, seed=123, augment=False)))
    model = build("convnet4", True)
    controller = kac.ActCooLR(**controller_kwargs("paper"))
    ranges = kac.RangeAnalysisLogger((probe[0].numpy(), probe[1].numpy()), every_epochs=1, batch_size=64)
    model.compile(
        optimizer=make_optimizer("sgd_paper", kac.ActCooLRSchedule(PAPER.initial_learning_rate)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    with contextlib.redirect_stdout(sys.stderr):
        model.fit(train.repeat(), epochs=rounds, steps_per_epoch=every, callbacks=[controller, ranges], verbose=0)
    records = []
    for record in ranges.history:
        analysis = record["analysis"]
        records.append(
            Q.plain(
                {
                    "epoch": record["step"] / steps_per_epoch,
                    "step": record["step"],
                    "learning_rate": record["learning_rate"],
                    "sigma": analysis.sigma,
                    "mu": analysis.mu,
                    "residual": analysis.residual,
                }
            )
        )
    with open(args.output, "a") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
    for record in records:
        sigma = Q.as_float(record["sigma"])
        shown = f"{sigma:.3f}" if sigma is not None else "n/a (fit failed)"
        print(f"epoch {record['epoch']:.2f} step {record['step']}: sigma {shown}")
    if args.plot and importlib.util.find_spec("matplotlib") is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots(figsize=(5, 3.5))
        points = [(r["step"], Q.as_float(r["sigma"])) for r in records if r["sigma"] is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.axhline(3.0, color="gray", linestyle=":", linewidth=0.8)
        ax.axhline(0.3, color="gray", linestyle=":", linewidth=0.8)
        ax.set_ylabel("fitted sigma")
        ax.set_title("Fashion-MNIST, convnet4, paper's controller: sigma along training", fontsize=8)
        figure.tight_layout()
        figure.savefig(args.plot, dpi=110)
        plt.close(figure)
        print(f"Figure: {args.plot}")
    return records


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=None, help=f"comma-separated among {','.join(NETWORKS)}")
    parser.add_argument("--methods", default=None, help=f"comma-separated among {','.join(METHODS)}")
    parser.add_argument("--seeds", default=None, help="comma-separated integers (default 0,1,2)")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs of every run (default {DEFAULT_EPOCHS})")
    parser.add_argument("--train-examples", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--fashion-mnist-dir", default=None, help="directory of the IDX files (default: search)")
    parser.add_argument("--output", default=None, help="JSON-lines file of the runs (appended; resumes)")
    parser.add_argument("--plot", default=None, help="PNG: test accuracy against wall time (or sigma, --sigma)")
    parser.add_argument("--quick", action="store_true", help="about 10 minutes: a subset (see the docstring)")
    parser.add_argument("--report", nargs="+", default=None, metavar="JSONL", help="no training: report these files")
    parser.add_argument("--sigma", action="store_true", help="sigma along training of convnet4 (section C)")
    parser.add_argument("--sigma-per-epoch", type=int, default=4, help="--sigma: range analyses per epoch")
    parser.add_argument(
        "--controller",
        default="",
        help="JSON keyword arguments added to ActCooLR's defaults in the actcoolr and actcoolr_adam runs "
        "(part of the resume key)",
    )
    args = parser.parse_args(argv)
    if args.controller:
        try:
            options = json.loads(args.controller)
        except json.JSONDecodeError:
            options = None
        if not isinstance(options, dict):
            parser.error(f"--controller takes a JSON object. Received: --controller={args.controller}")
        args.controller = json.dumps(options, sort_keys=True) if options else ""

    def names(value: str | None, known: Iterable[str], option: str, default: Iterable[str]) -> tuple[str, ...]:
        if value is None:
            return tuple(default)
        chosen = tuple(n.strip() for n in value.split(",") if n.strip())
        if not chosen or any(n not in known for n in chosen):
            parser.error(f"{option} takes names among {', '.join(known)}. Received: {option}={value}")
        return chosen

    args.networks = names(args.networks, NETWORKS, "--networks", QUICK["networks"] if args.quick else NETWORKS)
    args.methods = names(args.methods, METHODS, "--methods", QUICK["methods"] if args.quick else METHODS)
    try:
        args.seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    except ValueError:
        parser.error(f"--seeds takes integers. Received: --seeds={args.seeds}")
    args.seeds = args.seeds or (QUICK["seeds"] if args.quick else SEEDS)
    if args.epochs is None:
        args.epochs = QUICK["epochs"] if args.quick else DEFAULT_EPOCHS
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1. Received: --epochs={args.epochs}")
    if args.train_examples is None and args.quick:
        args.train_examples = QUICK["train_examples"]
    if args.train_examples is not None and args.train_examples < 64:
        parser.error(f"--train-examples must be >= 64 (one batch). Received: --train-examples={args.train_examples}")
    args.grids = dict(GRIDS, **QUICK["grids"]) if args.quick else dict(GRIDS)
    if args.output is None:
        args.output = (
            "fashion_mnist_sigma.jsonl" if args.sigma else ("quick.jsonl" if args.quick else "fashion_mnist.jsonl")
        )
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.sigma:
        return {"sigma": sigma_run(args)}
    started = time.perf_counter()
    if args.report:
        # As within one file, a run repeated in a later file replaces the earlier (a rerun of some methods).
        runs = list({key_of(run): run for path in args.report for run in read_results(path)}.values())
    else:
        runs = run_plan(args)
        # Only this invocation's plan, not other runs the file may hold.
        runs = [
            r
            for r in runs
            if r["network"] in args.networks
            and r["method"] in args.methods
            and r["seed"] in args.seeds
            and (r["epochs"], r["train_examples"]) == (args.epochs, args.train_examples)
            and r.get("controller_options", "") == (args.controller if r["method"] in DEFAULTS_CONTROLLED else "")
        ]
    summary = summarize(runs)
    print(render(summary))
    if not args.report:
        print(f"{len(runs)} runs; this invocation {time.perf_counter() - started:.0f} s.")
    if args.plot and plot_curves(summary, args.plot):
        print(f"Figure: {args.plot}")
    return {"runs": runs, "summary": summary}


if __name__ == "__main__":
    main()
