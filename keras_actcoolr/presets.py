"""The hyperparameters of the ActCooLR paper's experiments (supplementary Tables 2 and 3) as data.

Each `Preset` is one row of a table: data set, epochs, network, method and
the method's hyperparameters. `python -m keras_actcoolr.experiments --list`
prints them and `--preset NAME` runs one (see `keras_actcoolr.experiments`).

Values the tables do not state are filled in, and each `Preset.assumed` says
which: Table 2 states momentum 0.9 and weight decay 5e-5 for all its rows
(also used for VGG-16 and ResNet-32, whose rows give only `T0` and `gamma`);
the initial rate of ActCooLR is 0.1, and 0.5 on ImageNet (supplementary
section B); Table 2's 1-cycle rows do not give `lambda_init`: we start at
`lambda_max / 10`, and every 1-cycle run ends at rate 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_actcoolr import validation

__all__ = ["METHODS", "PRESETS", "Preset", "get_preset"]

METHODS = ("actcoolr", "one_cycle", "constant")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One experiment of the paper.

    Attributes:
        name: Name of the preset.
        source: Where the row comes from ("Table 2", "Table 3", "Figure 5").
        dataset: A name of `keras_actcoolr.data.DATASETS`.
        epochs: Number of training epochs.
        network: A name of `keras_actcoolr.zoo.NETWORKS`.
        method: `"actcoolr"`, `"one_cycle"` or `"constant"`.
        start_temperature: ActCooLR's `T0`.
        gamma: ActCooLR's speed of cooling `gamma`.
        momentum: SGD momentum (ActCooLR and constant rate: fixed).
        weight_decay: Weight decay `eta`.
        initial_learning_rate: `lambda_init`: ActCooLR's rate before its first
            measurement, 1-cycle's first rate, or the constant rate.
        max_learning_rate: 1-cycle's `lambda_max`.
        t_max: 1-cycle's peak as a fraction of training.
        base_momentum: 1-cycle's `alpha_base` (momentum at the peak rate).
        max_momentum: 1-cycle's `alpha_max` (momentum at both ends).
        batch_size: Batch size, or `None` for the data set's default (section E).
        every_step: Steps between two temperature measurements (ActCooLR's
            controller and the temperature records of every method).
        sigma: ActCooLR's `sigma`, or `None` to estimate it from a range
            analysis of the first measured batch, as the paper does.
        published_error: Top-1 test error the paper reports (Table 2), or `None`.
        assumed: The fields the paper does not state, and why they hold these values.
    """

    name: str
    source: str
    dataset: str
    epochs: int
    network: str
    method: str
    start_temperature: float | None = None
    gamma: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-5
    initial_learning_rate: float = 0.1
    max_learning_rate: float | None = None
    t_max: float | None = None
    base_momentum: float = 0.765
    max_momentum: float = 0.9
    batch_size: int | None = None
    every_step: int = 10
    sigma: float | None = None
    published_error: float | None = None
    assumed: str = ""

    def __post_init__(self) -> None:
        validation.one_of("method", self.method, METHODS)
        if self.method == "actcoolr" and (self.start_temperature is None or self.gamma is None):
            raise ValueError(f"Preset {self.name!r}: ActCooLR needs `start_temperature` and `gamma`.")
        if self.method == "one_cycle" and (self.max_learning_rate is None or self.t_max is None):
            raise ValueError(f"Preset {self.name!r}: 1-cycle needs `max_learning_rate` and `t_max`.")

    def hyperparameters(self) -> str:
        """The method's hyperparameters as the tables write them."""
        if self.method == "actcoolr":
            text = f"T0={self.start_temperature:g}, gamma={self.gamma:g}, alpha={self.momentum:g}"
        elif self.method == "one_cycle":
            text = (
                f"lambda_init={self.initial_learning_rate:g}, lambda_max={self.max_learning_rate:g}, "
                f"t_max={self.t_max:g}, alpha={self.base_momentum:g}-{self.max_momentum:g}"
            )
        else:
            text = f"lambda={self.initial_learning_rate:g}, alpha={self.momentum:g}"
        return f"{text}, eta={self.weight_decay:g}"

    def replace(self, **changes: Any) -> Preset:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


_TABLE2 = "Table 2"
_T2_ASSUMED_1CYCLE = "lambda_init = lambda_max / 10 and final rate 0 (Table 2 states neither)"
_T2_ASSUMED_ACT = "initial rate 0.1 (supplementary section B); momentum fixed at 0.9 (Table 2's caption)"


def _table2(epochs: int, network: str, method: str, error: float, **values: Any) -> Preset:
    short = {"resnet18": "resnet18", "pyramidnet110": "pyramidnet110"}[network]
    if method == "one_cycle":
        values.setdefault("initial_learning_rate", round(values["max_learning_rate"] / 10, 10))
    return Preset(
        name=f"cifar10-{short}-{epochs}ep-{method.replace('_', '')}",
        source=_TABLE2,
        dataset="cifar10",
        epochs=epochs,
        network=network,
        method=method,
        published_error=error,
        assumed=_T2_ASSUMED_1CYCLE if method == "one_cycle" else _T2_ASSUMED_ACT,
        **values,
    )


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        # Table 2: CIFAR-10, momentum 0.9, weight decay 5e-5; 1-cycle momentum 0.765-0.9.
        _table2(25, "resnet18", "one_cycle", 7.53, max_learning_rate=1.7, t_max=0.7),
        _table2(25, "resnet18", "actcoolr", 8.11, start_temperature=4.32, gamma=2.0),
        _table2(25, "pyramidnet110", "one_cycle", 6.3, max_learning_rate=3.5, t_max=0.1),
        _table2(25, "pyramidnet110", "actcoolr", 6.19, start_temperature=2.885, gamma=1.0),
        _table2(50, "resnet18", "one_cycle", 6.7, max_learning_rate=1.9, t_max=0.15),
        _table2(50, "resnet18", "actcoolr", 6.94, start_temperature=3.678, gamma=5.5),
        _table2(50, "pyramidnet110", "one_cycle", 5.04, max_learning_rate=3.5, t_max=0.3),
        _table2(50, "pyramidnet110", "actcoolr", 6.17, start_temperature=4.34, gamma=10.0),
        # Table 3: the hyperparameters of the main paper's Table 1.
        Preset(
            name="fashion_mnist-convnet4-constant",
            source="Table 3",
            dataset="fashion_mnist",
            epochs=200,
            network="convnet4",
            method="constant",
            initial_learning_rate=0.1,
            momentum=0.9,
            weight_decay=0.0,
        ),
        Preset(
            name="fashion_mnist-convnet4-actcoolr",
            source="Table 3",
            dataset="fashion_mnist",
            epochs=200,
            network="convnet4",
            method="actcoolr",
            start_temperature=1.25,
            gamma=1.86,
            momentum=0.0,
            weight_decay=0.0,
            assumed="initial rate 0.1 (supplementary section B)",
        ),
        Preset(
            name="cifar10-vgg16-actcoolr",
            source="Table 3",
            dataset="cifar10",
            epochs=300,
            network="vgg16",
            method="actcoolr",
            start_temperature=2.423,
            gamma=10.0,
            assumed="momentum 0.9 and weight decay 5e-5 (Table 2's; Table 3 states neither); initial rate 0.1",
        ),
        Preset(
            name="imagenet-resnet50-onecycle",
            source="Table 3",
            dataset="imagenet",
            epochs=20,
            network="resnet50",
            method="one_cycle",
            initial_learning_rate=0.5,
            max_learning_rate=1.0,
            t_max=0.1,
            base_momentum=0.765,
            max_momentum=0.9,
            weight_decay=1e-5,
            assumed="final rate 0",
        ),
        Preset(
            name="imagenet-resnet50-actcoolr",
            source="Table 3",
            dataset="imagenet",
            epochs=20,
            network="resnet50",
            method="actcoolr",
            start_temperature=4.905,
            gamma=7.0,
            initial_learning_rate=0.5,
            momentum=0.5,
            weight_decay=1e-5,
        ),
        # Supplementary Figure 5 (and the main paper's ResNet-32 runs).
        Preset(
            name="cifar10-resnet32-actcoolr",
            source="Figure 5",
            dataset="cifar10",
            epochs=50,
            network="resnet32",
            method="actcoolr",
            start_temperature=3.03,
            gamma=1.0,
            momentum=0.9,
            assumed="weight decay 5e-5 (Table 2's; Figure 5 does not state it); initial rate 0.1",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset `name` of `PRESETS`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}: choose one of {sorted(PRESETS)} (`--list`). Received: {name!r}")
    return PRESETS[name]
