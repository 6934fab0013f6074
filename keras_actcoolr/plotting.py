"""Figures of the ActCooLR paper for your own runs (matplotlib is optional).

- `plot_layer_temperatures(records)`: per-layer temperature heat map along
  training (supplementary Figure 1).
- `plot_training(histories)`: learning rate, validation accuracy and mean
  temperature of several runs on shared axes (supplementary Figure 2).
- `plot_temperature_vs_learning_rate(learning_rates, temperatures)`: a
  learning-rate range analysis with its fitted erf model (Figure 3).

Each returns a `matplotlib.figure.Figure` and saves a PNG when given `path=`.
matplotlib is imported inside the functions, so `import keras_actcoolr` works
without it; install it with `pip install "keras_actcoolr[plot]"`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_actcoolr import temperature as T
from keras_actcoolr import validation

__all__ = ["plot_layer_temperatures", "plot_temperature_vs_learning_rate", "plot_training"]

PathLike = str | os.PathLike


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "keras_actcoolr.plotting needs matplotlib: install the `plot` extra, "
            '`pip install "keras_actcoolr[plot]"` (or `pip install matplotlib`).'
        ) from error
    return Figure


def _new_figure(figsize: tuple[float, float], rows: int = 1) -> tuple[Any, Any]:
    # A Figure outside pyplot: no GUI backend, no global state, nothing to close.
    figure = _figure_class()(figsize=figsize, layout="constrained")
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return figure, axes


def _save(figure: Any, path: PathLike | None, dpi: int) -> None:
    if path is not None:
        directory = os.path.dirname(os.fspath(path))
        if directory:
            os.makedirs(directory, exist_ok=True)
        figure.savefig(path, dpi=dpi, format="png")


def plot_layer_temperatures(
    records: Sequence[Mapping[str, Any]],
    path: PathLike | None = None,
    title: str | None = None,
    steps_per_epoch: int | None = None,
    dpi: int = 100,
) -> Any:
    """Heat map of the per-layer temperatures along training (supplementary Figure 1).

    Layers are on the y axis (the first layer at the bottom), measurements on
    the x axis (training steps, or epochs with `steps_per_epoch`), and the
    colour is the temperature.

    Example:

    ```python
    logger = keras_actcoolr.TemperatureLogger(every_step=10)
    model.fit(x, y, epochs=10, callbacks=[logger])
    keras_actcoolr.plotting.plot_layer_temperatures(logger.history, path="layers.png")
    ```

    Args:
        records: The `history` of `TemperatureLogger`, `ActCooLR` or
            `DynamicActCooLR`: dicts with `"step"` and `"layers"`
            (`{layer name: temperature}`), in step order.
        path: Where to save the figure as PNG, or `None`. Defaults to `None`.
        title: Title of the figure, or `None`. Defaults to `None`.
        steps_per_epoch: Integer >= 1 to label the x axis in epochs, or `None`
            for steps. Defaults to `None`.
        dpi: Resolution of the saved PNG. Defaults to `100`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    records = [record for record in records if "layers" in record]  # not the collapse events
    if not records:
        raise ValueError("`records` is empty: there is no measurement to plot.")
    names = list(records[0]["layers"])
    steps = np.array([record["step"] for record in records], dtype=np.float64)
    values = np.array([[record["layers"][name] for record in records] for name in names], dtype=np.float64)
    scale = float(steps_per_epoch) if steps_per_epoch else 1.0
    x = steps / scale
    width = float(np.median(np.diff(x))) if len(x) > 1 else 1.0 / scale
    figure, (ax,) = _new_figure((8.0, 1.2 + 0.35 * len(names)))
    image = ax.imshow(
        values,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap="inferno",
        extent=(x[0] - width / 2, x[-1] + width / 2, -0.5, len(names) - 0.5),
    )
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("epoch" if steps_per_epoch else "step")
    ax.set_ylabel("layer")
    figure.colorbar(image, ax=ax, label="temperature")
    if title:
        ax.set_title(title)
    _save(figure, path, dpi)
    return figure


_PANELS = ("learning_rate", "val_accuracy", "temperature")


def _series(value: Any, key: str, steps_per_epoch: int | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """`(x in epochs, y)` of one series of `plot_training`'s input."""
    if isinstance(value, tuple) and len(value) == 2 and all(np.ndim(part) == 1 for part in value):
        return np.asarray(value[0], dtype=np.float64), np.asarray(value[1], dtype=np.float64)
    value = list(value)
    if value and isinstance(value[0], Mapping):
        if not steps_per_epoch:
            raise ValueError(
                f"`{key}` of '{name}' is a list of measurement records: give `steps_per_epoch` to place "
                "their steps on the epoch axis."
            )
        value = [record for record in value if "event" not in record]  # not the collapse events
        x = np.array([record["step"] for record in value], dtype=np.float64) / steps_per_epoch
        return x, np.array([record[key] for record in value], dtype=np.float64)
    y = np.asarray(value, dtype=np.float64)
    return np.arange(1, len(y) + 1, dtype=np.float64), y


def plot_training(
    histories: Mapping[str, Any],
    path: PathLike | None = None,
    title: str | None = None,
    steps_per_epoch: int | None = None,
    accuracy_label: str = "validation accuracy",
    learning_rate_scale: str = "linear",
    dpi: int = 100,
) -> Any:
    """Learning rate, validation accuracy and mean temperature of several runs (supplementary Figure 2).

    Three panels share the x axis (epochs): the learning rate, the validation
    accuracy and the mean (network) temperature, one line per run.

    Each run is a `keras.callbacks.History` (its `history` dict) or a dict with
    any of the keys `"learning_rate"`, `"val_accuracy"` and `"temperature"`.
    A series is one of

    - a list of numbers, one per epoch, placed at the end of each epoch
      (x = 1, 2, ...), as `History.history` holds them;
    - an `(x, y)` pair of sequences, x in epochs (fractional for per-step
      values: `step / steps_per_epoch`);
    - a list of measurement records (the `history` of `TemperatureLogger`,
      `ActCooLR` or `DynamicActCooLR`), placed at `step / steps_per_epoch`.

    A run's dict may carry its own `"steps_per_epoch"`.

    Example:

    ```python
    keras_actcoolr.plotting.plot_training(
        {"ActCooLR": {"val_accuracy": history.history["val_accuracy"],
                      "learning_rate": controller.history,
                      "temperature": controller.history}},
        steps_per_epoch=23, path="training.png")
    ```

    Args:
        histories: `{run name: History or dict}`, in legend order.
        path: Where to save the figure as PNG, or `None`. Defaults to `None`.
        title: Title of the figure, or `None`. Defaults to `None`.
        steps_per_epoch: Integer >= 1, steps of an epoch for series given as
            measurement records. Defaults to `None`.
        accuracy_label: Label of the accuracy axis. Defaults to
            `"validation accuracy"`.
        learning_rate_scale: `"linear"` or `"log"`, scale of the learning-rate
            axis. Defaults to `"linear"`.
        dpi: Resolution of the saved PNG. Defaults to `100`.

    Returns:
        The `matplotlib.figure.Figure`, with the axes in the order above.
    """
    if not histories:
        raise ValueError("`histories` is empty: there is no run to plot.")
    validation.one_of("learning_rate_scale", learning_rate_scale, ("linear", "log"))
    figure, axes = _new_figure((8.0, 7.0), rows=len(_PANELS))
    for name, run in histories.items():
        run = getattr(run, "history", run)
        run_steps = run.get("steps_per_epoch", steps_per_epoch)
        for ax, key in zip(axes, _PANELS):
            if key in run and len(run[key]):
                x, y = _series(run[key], key, run_steps, name)
                ax.plot(x, y, label=name, drawstyle="default", linewidth=1.2)
    for ax, label in zip(axes, ("learning rate", accuracy_label, "mean temperature")):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_yscale(learning_rate_scale)
    axes[0].legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("epoch")
    if title:
        figure.suptitle(title)
    _save(figure, path, dpi)
    return figure


def plot_temperature_vs_learning_rate(
    learning_rates: Sequence[float] | np.ndarray,
    temperatures: Sequence[float] | np.ndarray,
    sigma: float | None = None,
    mu: float | None = None,
    path: PathLike | None = None,
    title: str | None = None,
    label: str | None = None,
    ax: Any = None,
    dpi: int = 100,
) -> Any:
    """Temperature against learning rate with the fitted erf model (Figure 3).

    The measured points, and the erf model
    `T(lr) = -log2(1 - Phi((ln(lr) - mu) / sigma))` as a curve; when `sigma`
    and `mu` are not given, they are fitted to the points
    (`keras_actcoolr.temperature.fit_erf_model`).

    Example:

    ```python
    result = keras_actcoolr.lr_range_analysis(model, (x, y))
    keras_actcoolr.plotting.plot_temperature_vs_learning_rate(
        result.learning_rates, result.temperatures, result.sigma, result.mu, path="range.png")
    ```

    Args:
        learning_rates: 1-D positive learning rates.
        temperatures: 1-D measured temperatures, same length.
        sigma: `sigma` of the erf model, or `None` to fit it (with `mu`).
            Defaults to `None`.
        mu: `mu` of the erf model, or `None` to fit it (with `sigma`).
            Defaults to `None`.
        path: Where to save the figure as PNG, or `None`. Defaults to `None`.
        title: Title of the axes, or `None`. Defaults to `None`.
        label: Legend label of the points, or `None` for "measured".
            Defaults to `None`.
        ax: A matplotlib `Axes` to draw into (to overlay several analyses),
            or `None` for a new figure. Defaults to `None`.
        dpi: Resolution of the saved PNG. Defaults to `100`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    learning_rates = np.asarray(learning_rates, dtype=np.float64).ravel()
    temperatures = np.asarray(temperatures, dtype=np.float64).ravel()
    if learning_rates.shape != temperatures.shape or not learning_rates.size:
        raise ValueError(
            "`learning_rates` and `temperatures` must be non-empty and of the same length. "
            f"Received: {learning_rates.size} and {temperatures.size} values."
        )
    if (sigma is None) != (mu is None):
        raise ValueError(f"Give both `sigma` and `mu`, or neither. Received: sigma={sigma!r}, mu={mu!r}")
    if sigma is None:
        try:
            sigma, mu = T.fit_erf_model(learning_rates, temperatures)
        except ValueError as error:
            warnings.warn(f"{error} The figure shows the points only.", stacklevel=2)
    if ax is None:
        figure, (ax,) = _new_figure((6.0, 4.0))
    else:
        figure = ax.figure
    points = ax.plot(learning_rates, temperatures, "o", markersize=4, label=label or "measured")[0]
    if sigma is not None:
        grid = np.logspace(np.log10(learning_rates.min()), np.log10(learning_rates.max()), 200)
        probability = np.clip(T.erf_probability(grid, sigma, mu), 0.0, 1.0 - 1e-12)
        ax.plot(
            grid,
            T.probability_to_temperature(probability),
            "-",
            color=points.get_color(),
            label=f"erf model, sigma={sigma:.3g}, mu={mu:.3g}",
        )
    # The model's temperature grows without bound where P rounds to 1: frame the measurements.
    measured = [np.nanmax(line.get_ydata()) for line in ax.lines if line.get_linestyle() == "None"]
    ax.set_ylim(0.0, 1.1 * max(max(measured), 1e-3))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("temperature")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    if title:
        ax.set_title(title)
    _save(figure, path, dpi)
    return figure
