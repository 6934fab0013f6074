"""Run the ActCooLR paper's experiments: `python -m keras_actcoolr.experiments --preset NAME`.

```
python -m keras_actcoolr.experiments --list
python -m keras_actcoolr.experiments --preset cifar10-resnet18-25ep-actcoolr --output-dir runs/r18
python -m keras_actcoolr.experiments --preset cifar10-resnet18-25ep-actcoolr --epochs 5 --gamma 3
python -m keras_actcoolr.experiments --preset imagenet-resnet50-actcoolr --manual-dir ~/imagenet-tars
python -m keras_actcoolr.experiments --preset cifar10-vgg16-actcoolr --smoke     # a few steps on mock data
```

A run builds the preset's network (`keras_actcoolr.zoo`) and input pipelines
(`keras_actcoolr.data`), trains with its method (ActCooLR, 1-cycle or a
constant rate; the temperature is recorded under every method), evaluates on
the test split and writes to `--output-dir`:

- `results.json`: the preset with the overrides, test metrics (and the top-1
  error next to the published one), training time, devices, sigma;
- `history.json`: Keras' `History.history` (per epoch);
- `temperatures.csv`: `TemperatureLogger`'s records (step, rate, network and
  per-layer temperatures);
- `controller.json` (ActCooLR): the controller's records (target, sigma, next rate);
- `layer_temperatures.png`, `training.png`: figures, when matplotlib is installed.

With several GPUs visible, training runs under `tf.distribute.MirroredStrategy`
(the batch size is global). Every field of a preset can be overridden with a
flag of the same name (`--start-temperature`, `--weight-decay`, ...).

`--smoke` runs the preset end to end for 2 epochs of 2 steps of 4 examples on
`tfds.testing.mock_data` (random examples, no download; Tiny ImageNet: a small
random directory) with small images (8x8, 32x32 for VGG-16 and ResNet-50) and
Keras' eager mode (no tracing, which costs more than tiny steps): it checks the
wiring, not the results.
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
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_actcoolr import data, validation, zoo
from keras_actcoolr.callbacks import ActCooLR, OneCycleMomentum, TemperatureLogger
from keras_actcoolr.presets import METHODS, PRESETS, Preset, get_preset
from keras_actcoolr.schedules import ActCooLRSchedule, OneCycle

__all__ = ["build_parser", "choose_strategy", "main", "run"]

SMOKE_EPOCHS = 2
SMOKE_STEPS = 2
SMOKE_BATCH = 4
SMOKE_IMAGE_SIZE = 8
# Networks whose pooling needs larger inputs than SMOKE_IMAGE_SIZE.
SMOKE_MIN_IMAGE_SIZE = {"vgg16": 32, "resnet50": 32}

# Preset fields that are not flags: they describe the row rather than the run.
_DESCRIPTIVE = ("name", "source", "published_error", "assumed")
_TYPES = {"int": int, "float": float, "str": str}


def _field_type(field: dataclasses.Field) -> type:
    annotation = str(field.type).replace(" ", "").replace("|None", "")
    return _TYPES[annotation]


def build_parser() -> argparse.ArgumentParser:
    """The command line: run options, and one flag per preset field to override it."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_actcoolr.experiments",
        description="Run an experiment of the ActCooLR paper (supplementary Tables 2 and 3).",
    )
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--preset", help="name of the preset to run (see --list)")
    parser.add_argument("--output-dir", help="where results go (default: outputs/<preset>)")
    parser.add_argument("--data-dir", help="tensorflow-datasets data directory (default: its own)")
    parser.add_argument("--manual-dir", help="ImageNet: directory holding ILSVRC2012_img_{train,val}.tar")
    parser.add_argument("--tiny-imagenet-dir", help="Tiny ImageNet: the tiny-imagenet-200 directory")
    parser.add_argument(
        "--fashion-mnist-dir",
        help="Fashion-MNIST: directory of its IDX files (default: Keras' cache, then /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing data set")
    parser.add_argument("--smoke", action="store_true", help="a few steps on mock data (checks the wiring)")
    parser.add_argument("--steps-per-epoch", type=int, help="limit the steps of an epoch (default: the whole split)")
    parser.add_argument(
        "--strategy",
        choices=("auto", "mirrored", "default"),
        default="auto",
        help="auto: MirroredStrategy when several GPUs are visible (default: auto)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras fit verbosity (default: 2)")
    fields = parser.add_argument_group("preset fields (override the preset's value)")
    for field in dataclasses.fields(Preset):
        if field.name in _DESCRIPTIVE:
            continue
        flag = "--" + field.name.replace("_", "-")
        kwargs: dict[str, Any] = {"type": _field_type(field), "default": None, "dest": field.name}
        if field.name == "method":
            kwargs["choices"] = METHODS
        elif field.name == "dataset":
            kwargs["choices"] = sorted(data.DATASETS)
        elif field.name == "network":
            kwargs["choices"] = sorted(zoo.NETWORKS)
        fields.add_argument(flag, **kwargs)
    return parser


def list_presets(stream: Any = None) -> None:
    """Print the presets as a table."""
    stream = stream or sys.stdout
    rows = [("preset", "source", "data set", "epochs", "network", "method", "hyperparameters", "published error")]
    for preset in PRESETS.values():
        error = "-" if preset.published_error is None else f"{preset.published_error:g}%"
        rows.append(
            (
                preset.name,
                preset.source,
                preset.dataset,
                str(preset.epochs),
                preset.network,
                preset.method,
                preset.hyperparameters(),
                error,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=stream)


def choose_strategy(name: str = "auto", gpus: int | None = None) -> tf.distribute.Strategy:
    """`MirroredStrategy` for `"mirrored"`, or for `"auto"` when more than one GPU is visible; else the default."""
    validation.one_of("name", name, ("auto", "mirrored", "default"))
    if gpus is None:
        gpus = len(tf.config.list_logical_devices("GPU"))
    if name == "mirrored" or (name == "auto" and gpus > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _write_json(path: str, value: Any) -> None:
    with open(path, "w") as f:
        json.dump(_jsonable(value), f, indent=2)
        f.write("\n")


def _training(preset: Preset, total_steps: int, csv_path: str) -> tuple[keras.optimizers.Optimizer, list, Any]:
    """The optimizer, the callbacks and the ActCooLR controller (or None) of a preset."""
    weight_decay = preset.weight_decay or None
    logger = TemperatureLogger(every_step=preset.every_step, csv_path=csv_path)
    callbacks: list = [logger, keras.callbacks.TerminateOnNaN()]
    controller = None
    if preset.method == "actcoolr":
        schedule: Any = ActCooLRSchedule(preset.initial_learning_rate)
        momentum = preset.momentum
        controller = ActCooLR(
            start_temperature=preset.start_temperature,
            gamma=preset.gamma,
            every_step=preset.every_step,
            sigma=preset.sigma,
            initial_learning_rate=None,  # the preset's recipe gives the first rate
        )
        callbacks.insert(0, controller)
    elif preset.method == "one_cycle":
        schedule = OneCycle(preset.initial_learning_rate, preset.max_learning_rate, total_steps, t_max=preset.t_max)
        momentum = preset.max_momentum
        callbacks.insert(0, OneCycleMomentum(base_momentum=preset.base_momentum, max_momentum=preset.max_momentum))
    else:
        schedule = preset.initial_learning_rate
        momentum = preset.momentum
    optimizer = keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=weight_decay)
    return optimizer, callbacks, (logger, controller)


def _figures(output_dir: str, preset: Preset, history: dict, records: list, steps_per_epoch: int) -> list[str]:
    """Write the figures when matplotlib is installed; returns the files written."""
    if not records or importlib.util.find_spec("matplotlib") is None:
        return []
    try:
        from keras_actcoolr import plotting
    except ImportError:
        return []
    layers = os.path.join(output_dir, "layer_temperatures.png")
    plotting.plot_layer_temperatures(records, path=layers, title=preset.name, steps_per_epoch=steps_per_epoch)
    training = os.path.join(output_dir, "training.png")
    run = {"learning_rate": records, "temperature": records, "steps_per_epoch": steps_per_epoch}
    if history.get("val_accuracy"):
        run["val_accuracy"] = history["val_accuracy"]
    plotting.plot_training({preset.method: run}, path=training, title=preset.name)
    return [layers, training]


def _smoke_sizes(
    preset: Preset, epochs: int, steps_per_epoch: int | None, batch_size: int, image_size: int
) -> tuple[Preset, int, int, int, int]:
    """`(preset, epochs, steps_per_epoch, batch_size, image_size)` cut to a smoke run's."""
    return (
        preset.replace(every_step=min(preset.every_step, SMOKE_STEPS)),
        min(epochs, SMOKE_EPOCHS),
        min(steps_per_epoch or SMOKE_STEPS, SMOKE_STEPS),
        min(batch_size, SMOKE_BATCH),
        min(image_size, max(SMOKE_IMAGE_SIZE, SMOKE_MIN_IMAGE_SIZE.get(preset.network, 0))),
    )


def _splits(
    stack: contextlib.ExitStack, preset: Preset, output_dir: str, smoke: bool, sizes: tuple, seed: int, where: dict
) -> tuple[dict, int]:
    """`(data.load_splits of the preset's data set, steps per epoch)`.

    `sizes` is `(batch_size, image_size, steps_per_epoch or None)`; `where` holds `data_dir`,
    `manual_dir`, `tiny_imagenet_dir`, `fashion_mnist_dir` and `download`. A smoke run reads mock
    (tfds) or fake data for the rest of `stack`.
    """
    batch_size, image_size, steps_per_epoch = sizes
    where = dict(where)
    paths = {name: where.pop(f"{name}_dir") for name in ("tiny_imagenet", "fashion_mnist")}
    fake_dir = _enter_smoke_data(stack, preset.dataset, output_dir, batch_size) if smoke else None
    path = fake_dir or (paths["fashion_mnist"] if preset.dataset == "fashion_mnist" else paths["tiny_imagenet"])
    splits = data.load_splits(
        preset.dataset, batch_size=batch_size, image_size=image_size, path=path, seed=seed, **where
    )
    steps = steps_per_epoch or int(splits["train"].cardinality())
    if steps < 1:
        raise ValueError(
            "The number of training steps per epoch is unknown: pass --steps-per-epoch. "
            f"Received: cardinality={steps!r}"
        )
    return splits, steps


def _enter_smoke_data(stack: contextlib.ExitStack, dataset: str, output_dir: str, batch_size: int) -> str | None:
    """Mock the tfds data sets for the rest of `stack`; the directory of fake files for the others, or None."""
    import tensorflow_datasets as tfds

    stack.enter_context(tfds.testing.mock_data(num_examples=batch_size * SMOKE_STEPS * SMOKE_EPOCHS))
    if dataset == "tiny_imagenet":
        return data.write_fake_tiny_imagenet(os.path.join(output_dir, "smoke-data"), per_class=34, size=16)
    if dataset == "fashion_mnist":
        return data.write_fake_fashion_mnist(os.path.join(output_dir, "smoke-data"), 200, 20)
    return None


def _loss_and_metrics(spec: data.DatasetSpec) -> tuple[Any, list]:
    """The loss (on logits) and the accuracy metrics of a data set (top-5 with many classes)."""
    if spec.one_hot:
        metrics: list = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if spec.num_classes > 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
        return keras.losses.CategoricalCrossentropy(from_logits=True), metrics
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if spec.num_classes > 100:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics


def _compiled_model(
    preset: Preset, spec: data.DatasetSpec, image_size: int, total_steps: int, output_dir: str, smoke: bool
) -> tuple[keras.Model, list, Any]:
    """The preset's network, compiled with its optimizer, loss and metrics; its callbacks; `(logger, controller)`."""
    model = zoo.get(preset.network, input_shape=(image_size, image_size, spec.channels), num_classes=spec.num_classes)
    optimizer, callbacks, observers = _training(preset, total_steps, os.path.join(output_dir, "temperatures.csv"))
    loss, metrics = _loss_and_metrics(spec)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, run_eagerly=smoke)
    return model, callbacks, observers


def _fit_and_test(
    model: keras.Model,
    splits: dict,
    epochs: int,
    steps_per_epoch: int | None,
    callbacks: list,
    verbose: int,
    smoke: bool,
) -> tuple[keras.callbacks.History, float, dict]:
    """Train on the training split (validating on the validation split), then evaluate on the test split.

    Returns:
        `(history, training time in seconds, test metrics)`.
    """
    started = time.perf_counter()
    history = model.fit(
        splits["train"],
        validation_data=splits["validation"],
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_steps=1 if smoke else None,
        shuffle=False,  # the training split is shuffled by its pipeline
        callbacks=callbacks,
        verbose=verbose,
    )
    training_time = time.perf_counter() - started
    test = model.evaluate(splits["test"], steps=1 if smoke else None, return_dict=True, verbose=verbose)
    return history, training_time, test


def _run_facts(model: keras.Model, distribution: tf.distribute.Strategy, controller: Any) -> dict:
    """The replicas, devices, parameters and last sigma of a run, for `results.json`."""
    sigma = None
    if controller is not None:
        sigma = next((r["sigma"] for r in reversed(controller.measurements) if "sigma" in r), None)
    return {
        "replicas": distribution.num_replicas_in_sync,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "parameters": zoo.count_parameters(model),
        "sigma": sigma,
    }


def run(
    preset: Preset,
    output_dir: str | os.PathLike,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    tiny_imagenet_dir: str | None = None,
    fashion_mnist_dir: str | None = None,
    download: bool = True,
    smoke: bool = False,
    steps_per_epoch: int | None = None,
    strategy: str = "auto",
    seed: int = 0,
    verbose: int = 2,
    overrides: dict | None = None,
) -> dict:
    """Train, evaluate on the test split and write the results of one experiment; returns `results.json`'s content."""
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    spec = data.DATASETS[preset.dataset]
    epochs, batch_size, image_size = preset.epochs, preset.batch_size or spec.batch_size, spec.image_size
    if smoke:
        preset, epochs, steps_per_epoch, batch_size, image_size = _smoke_sizes(
            preset, epochs, steps_per_epoch, batch_size, image_size
        )
    with contextlib.ExitStack() as stack:
        where = dict(data_dir=data_dir, manual_dir=manual_dir, download=download)
        where.update(tiny_imagenet_dir=tiny_imagenet_dir, fashion_mnist_dir=fashion_mnist_dir)
        splits, steps = _splits(
            stack, preset, output_dir, smoke, (batch_size, image_size, steps_per_epoch), seed, where
        )
        distribution = choose_strategy(strategy)
        with distribution.scope():
            model, callbacks, (logger, controller) = _compiled_model(
                preset, spec, image_size, epochs * steps, output_dir, smoke
            )
        history, training_time, test = _fit_and_test(model, splits, epochs, steps_per_epoch, callbacks, verbose, smoke)
    history_dict = _jsonable(history.history)
    _write_json(os.path.join(output_dir, "history.json"), history_dict)
    if controller is not None:
        _write_json(os.path.join(output_dir, "controller.json"), controller.history)
    sizes = dict(epochs=epochs, steps_per_epoch=steps, batch_size=batch_size, image_size=image_size)
    results = {
        "preset": dataclasses.asdict(preset),
        "overrides": overrides or {},
        "smoke": smoke,
        **sizes,
        **_run_facts(model, distribution, controller),
        "training_time_seconds": training_time,
        "test": test,
        "test_top1_error_percent": 100.0 * (1.0 - float(test["accuracy"])),
        "published_top1_error_percent": preset.published_error,
        "measurements": len(logger.history),
        "figures": [os.path.basename(f) for f in _figures(output_dir, preset, history_dict, logger.history, steps)],
    }
    _write_json(os.path.join(output_dir, "results.json"), results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        list_presets()
        return 0
    if not args.preset:
        parser.error("give --preset NAME (or --list)")
    try:
        preset = get_preset(args.preset)
    except ValueError as error:
        parser.error(str(error))
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Preset)
        if field.name not in _DESCRIPTIVE and getattr(args, field.name) is not None
    }
    try:
        preset = preset.replace(**overrides)
    except ValueError as error:
        parser.error(str(error))
    output_dir = args.output_dir or os.path.join("outputs", preset.name)
    try:
        results = run(
            preset,
            output_dir,
            data_dir=args.data_dir,
            manual_dir=args.manual_dir,
            tiny_imagenet_dir=args.tiny_imagenet_dir,
            fashion_mnist_dir=args.fashion_mnist_dir,
            download=not args.no_download,
            smoke=args.smoke,
            steps_per_epoch=args.steps_per_epoch,
            strategy=args.strategy,
            seed=args.seed,
            verbose=args.verbose,
            overrides=overrides,
        )
    except data.DatasetNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    published = results["published_top1_error_percent"]
    print(
        f"{preset.name}: test accuracy {results['test']['accuracy']:.4f}, "
        f"top-1 error {results['test_top1_error_percent']:.2f}%"
        + ("" if published is None else f" (published: {published:g}%)")
        + f", {results['training_time_seconds']:.1f} s of training; results in {output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
