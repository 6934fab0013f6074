"""Does ActCooLR depend on the initial learning rate? (supplementary material, section B and Figure 5)

    python examples/initial_lr.py [--epochs 30] [--rates 1.0,0.1,0.01,0.001,0.0001,0.00001]

Trains the quickstart's CNN on scikit-learn's digits with ActCooLR from each
initial learning rate (same data, seed, initial weights and target curve), and
prints a table of the test accuracy and of the learning rate the controller
reaches after 1, 5, 15 epochs and at the end. The initial rate is used for the
first measurement only; the controller then moves the rate towards the one its
erf model predicts for the target temperature. It saves the learning-rate
profiles, test accuracies and mean temperatures as one figure
(`<output-dir>/initial_lr.png`) when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import quickstart  # noqa: E402  (the example next to this one)

RATES = (1.0, 0.1, 1e-2, 1e-3, 1e-4, 1e-5)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES), help="comma-separated initial rates")
    parser.add_argument("--output-dir", default="outputs")
    args, rest = parser.parse_known_args(argv)
    # Everything else (--epochs, --start-temperature, --gamma, --seed, ...) as in the quickstart.
    run_args = quickstart.parse_args(["--verbose", "0", *rest])
    data = quickstart.load_digits(run_args.seed)

    results = {}
    for rate in (float(r) for r in args.rates.split(",")):
        run_args.initial_learning_rate = rate
        print(f"initial learning rate {rate:g} ...", flush=True)
        results[rate] = quickstart.train("actcoolr", run_args, data)

    epochs = run_args.epochs
    marks = sorted({1, min(5, epochs), min(15, epochs), epochs})
    header = ["initial lr", "test acc", "final loss", "sigma", *[f"lr @ epoch {e}" for e in marks], "time"]
    rows = []
    summary = {}
    for rate, result in results.items():
        spe, rates, records = result["steps_per_epoch"], result["rates"], result["records"]
        at_marks = [rates[min(e * spe, len(rates)) - 1] for e in marks]  # the rate of the last step of epoch e
        summary[rate] = {
            "test_accuracy": result["test_accuracy"],
            "final_loss": result["final_loss"],
            "sigma": records[-1]["sigma"],
            "learning_rates": dict(zip(marks, at_marks)),
            "seconds": result["seconds"],
        }
        rows.append(
            [
                f"{rate:g}",
                f"{result['test_accuracy']:.4f}",
                f"{result['final_loss']:.4f}",
                f"{records[-1]['sigma']:.3f}",
                *[f"{value:.4g}" for value in at_marks],
                f"{result['seconds']:.1f} s",
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(
        f"\nActCooLR from different initial learning rates on scikit-learn digits "
        f"(T0 = {run_args.start_temperature or 'the default'}, gamma = {run_args.gamma:g}, {epochs} epochs, seed {run_args.seed})"
    )
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

    figure_path = None
    if importlib.util.find_spec("matplotlib") is None:
        print('Figure skipped: matplotlib is not installed (pip install "keras_actcoolr[plot]").')
    else:
        from keras_actcoolr import plotting

        histories = {
            f"initial lr {rate:g}": {
                "learning_rate": (np.arange(len(r["rates"])) / r["steps_per_epoch"], r["rates"]),
                "val_accuracy": r["history"]["val_accuracy"],
                "temperature": quickstart.epoch_temperatures(r["records"], r["steps_per_epoch"]),
            }
            for rate, r in results.items()
        }
        figure_path = os.path.join(args.output_dir, "initial_lr.png")
        plotting.plot_training(
            histories,
            path=figure_path,
            accuracy_label="test accuracy",
            learning_rate_scale="log",
            title="ActCooLR from six initial learning rates (digits CNN)",
        )
        print(f"Figure: {figure_path}")
    return {"runs": summary, "figure": figure_path}


if __name__ == "__main__":
    main()
