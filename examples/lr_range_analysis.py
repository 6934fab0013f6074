"""Learning-rate range analysis of a converted model (supplementary Figure 3), on scikit-learn digits.

    python examples/lr_range_analysis.py [--train-epochs 0] [--batches 8] [--output outputs/range.png]

Takes, from the model's current state, one optimizer step per learning rate
of Table 1, measures the temperature of each over `--batches` batches, fits
the erf model, prints sigma and mu with the table of temperatures, and saves
the plot (temperature against learning rate with the fitted curve). The model
is not changed by the analysis. With `--train-epochs N` the analysis is
repeated after N epochs of training at a constant rate, as the paper does
along training (Figure 2).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_actcoolr as kac

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quickstart import build_model, load_digits  # noqa: E402


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="batches of 64 measured per rate")
    parser.add_argument("--train-epochs", type=int, default=0, help="also analyse after this many epochs")
    parser.add_argument("--learning-rate", type=float, default=0.05, help="constant rate of the training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="outputs/range.png")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), _ = load_digits(args.seed)
    model = kac.convert(build_model())
    model.compile(
        optimizer=keras.optimizers.SGD(args.learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    data = (x_train, y_train)
    results = [("initial state", kac.lr_range_analysis(model, data, batch_size=64, batches=args.batches))]
    if args.train_epochs:
        model.fit(x_train, y_train, batch_size=64, epochs=args.train_epochs, verbose=0)
        results.append(
            (
                f"after {args.train_epochs} epochs",
                kac.lr_range_analysis(model, data, batch_size=64, batches=args.batches),
            )
        )

    for name, result in results:
        print(
            f"\n{name}: sigma = {result.sigma:.3f}, mu = {result.mu:.3f} "
            f"(lr at P = 1/2: {np.exp(result.mu):.3g}), rms residual = {result.residual:.3f}, "
            f"{result.examples} examples"
        )
        print(f"  {'learning rate':>13}  {'network T':>9}  " + "  ".join(f"{n:>13}" for n in result.layer_names))
        for k, rate in enumerate(result.learning_rates):
            layers = "  ".join(f"{t:13.3f}" for t in result.layer_temperatures[k])
            print(f"  {rate:13.4g}  {result.temperatures[k]:9.3f}  {layers}")

    try:
        from keras_actcoolr import plotting
    except ImportError:  # pragma: no cover
        plotting = None
    if plotting is not None:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        figure = None
        for name, result in results:
            ax = None if figure is None else figure.axes[0]
            figure = plotting.plot_temperature_vs_learning_rate(
                result.learning_rates, result.temperatures, result.sigma, result.mu, label=name, ax=ax
            )
        figure.savefig(args.output, dpi=100)
        print(f"\nsaved {args.output}")
    return results


if __name__ == "__main__":
    main()
