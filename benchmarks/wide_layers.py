"""ActCooLR on wide networks: do the temperatures resolve, is the start fit sane, does the loss fall?

    python benchmarks/wide_layers.py                                   # 32x32 and 96x96, the default measure
    python benchmarks/wide_layers.py --sizes 32 --measures grouped,vector   # both measures at 32x32

`keras.applications` MobileNetV2, ResNet50V2 and DenseNet121 (`weights=None`,
`classes=10`) converted with `keras_actcoolr.convert`, trained on the
scikit-learn digits (8x8, scaled to [0, 1], upsampled bilinearly to the input
size and tiled to 3 channels) with SGD (momentum 0.9), an
`ActCooLRSchedule()` and `ActCooLR(measure=...)` with its other defaults,
for `--steps` steps (batch 16 at 32x32, batch 8 at 96x96).

Per run it prints:

- `saturated`: the share of layers saturated in the records of the measure
  the controller follows (fewer than `temperature.SATURATION_COUNT` unchanged
  positions), the mean over the records; `sat. vector` / `sat. grouped`: the
  same for each measure, whichever is followed;
- `sigma start`: sigma of the range analysis before the first step
  (`controller.range_analysis`), `sigma pooled`: of the pooled analyses
  (`controller.sigma_analysis`), `-` when it could not be fitted;
- `rate min` / `rate max`: over the rates of the records and the rates the
  controller set, `non-finite`: how many of them are not finite;
- `loss start` / `loss end`: mean batch loss of the first / last 10 steps;
- `pass`: the targets, at most a quarter of layers saturated, start sigma in
  [0.2, 10], every rate finite in [1e-6, 10], loss end < loss start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_actcoolr as kac  # noqa: E402

NETWORKS = {
    "mobilenetv2": keras.applications.MobileNetV2,
    "resnet50v2": keras.applications.ResNet50V2,
    "densenet121": keras.applications.DenseNet121,
}

#: Input size -> batch size.
BATCH_SIZES = {32: 16, 96: 8}

TARGETS = {"saturated": 0.25, "sigma": (0.2, 10.0), "rate": (1e-6, 10.0)}


def digits_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits as `(N, size, size, 3)` float32 images in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    images = tf.image.resize(images, (size, size), method="bilinear").numpy()
    return np.repeat(images, 3, axis=-1), digits.target.astype("int64")


class BatchLosses(keras.callbacks.Callback):
    """Each batch's own loss, from Keras's running mean of the epoch (`m_b (b + 1) - m_(b-1) b`)."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []
        self._previous = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._previous = 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        mean = float(logs["loss"])
        self.losses.append(mean * (batch + 1) - self._previous * batch)
        self._previous = mean


def run(network: str, size: int, measure: str, steps: int, seed: int = 0, **controller: Any) -> dict[str, Any]:
    """One training run; the numbers the table prints."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    batch_size = BATCH_SIZES.get(size, 16)
    x, y = digits_images(size)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    base = NETWORKS[network](weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None)
    model = kac.convert(base)
    model.compile(
        optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    actcoolr = kac.ActCooLR(measure=measure, **controller)
    losses = BatchLosses()
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch_size)
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, callbacks=[actcoolr, losses], verbose=0)
    seconds = time.perf_counter() - start
    records = actcoolr.measurements
    shares = {}
    for name, key in (("vector", "saturated"), ("grouped", "group_saturated")):
        shares[name] = (
            float(np.mean([len(r[key]) / max(len(r["layers"]), 1) for r in records])) if records else math.nan
        )
    rates = [r["learning_rate"] for r in records] + [r["next_learning_rate"] for r in records]
    finite = [r for r in rates if math.isfinite(r)]
    start_analysis = actcoolr.range_analysis or {}
    pooled = actcoolr.sigma_analysis or {}
    result = {
        "network": network,
        "size": size,
        "batch_size": batch_size,
        "measure": measure,
        "steps": steps,
        "layers": len(model.apt_layers()),
        "records": len(records),
        "saturated": shares[measure],
        "saturated_vector": shares["vector"],
        "saturated_grouped": shares["grouped"],
        "sigma_start": start_analysis.get("sigma"),
        "sigma_pooled": pooled.get("sigma"),
        "rate_min": min(finite) if finite else math.nan,
        "rate_max": max(finite) if finite else math.nan,
        "non_finite_rates": len(rates) - len(finite),
        "loss_start": float(np.mean(losses.losses[:10])),
        "loss_end": float(np.mean(losses.losses[-10:])),
        "collapses": len(actcoolr.events),
        "seconds": seconds,
    }
    result["pass"] = passes(result)
    return result


def passes(result: dict[str, Any]) -> dict[str, bool]:
    """The targets of one run."""
    sigma = result["sigma_start"]
    low, high = TARGETS["rate"]
    return {
        "saturated": bool(result["saturated"] <= TARGETS["saturated"]),
        "sigma": sigma is not None and TARGETS["sigma"][0] <= sigma <= TARGETS["sigma"][1],
        "rates": result["non_finite_rates"] == 0 and low <= result["rate_min"] and result["rate_max"] <= high,
        "loss": bool(result["loss_end"] < result["loss_start"]),
    }


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def table(results: list[dict[str, Any]]) -> str:
    header = [
        "network",
        "input, batch",
        "measure",
        "saturated",
        "sat. vector",
        "sat. grouped",
        "sigma start",
        "sigma pooled",
        "rate min",
        "rate max",
        "non-finite",
        "loss start",
        "loss end",
        "pass",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        failed = [name for name, ok in r["pass"].items() if not ok]
        row = [
            r["network"],
            f"{r['size']}x{r['size']}, {r['batch_size']}",
            r["measure"],
            f"{r['saturated']:.2f}",
            f"{r['saturated_vector']:.2f}",
            f"{r['saturated_grouped']:.2f}",
            _number(r["sigma_start"]),
            _number(r["sigma_pooled"]),
            _number(r["rate_min"]),
            _number(r["rate_max"]),
            str(r["non_finite_rates"]),
            _number(r["loss_start"]),
            _number(r["loss_end"]),
            "all" if not failed else "misses: " + ", ".join(failed),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated, among {','.join(NETWORKS)}")
    parser.add_argument("--sizes", default="32,96", help="input sizes (32: batch 16, 96: batch 8)")
    parser.add_argument("--measures", default=None, help="comma-separated measures (default: ActCooLR's default)")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--controller", default="{}", help="more ActCooLR keyword arguments, as JSON")
    parser.add_argument("--output", default=None, help="JSON file of the results")
    args = parser.parse_args(argv)
    from keras_actcoolr.measurement import DEFAULT_MEASURE

    measures = args.measures.split(",") if args.measures else [DEFAULT_MEASURE]
    controller = json.loads(args.controller)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        for network in args.networks.split(","):
            for measure in measures:
                result = run(network, size, measure, args.steps, args.seed, **controller)
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
    print(table(results))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(results, file, indent=1)
    return results


if __name__ == "__main__":
    main()
