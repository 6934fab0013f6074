"""keras_actcoolr.presets and `python -m keras_actcoolr.experiments`: the tables as data, every preset end to end."""

import csv
import importlib.util
import json
import runpy
import sys
import warnings

import pytest
import tensorflow as tf

from keras_actcoolr import data, experiments, zoo
from keras_actcoolr.presets import PRESETS

pytest.importorskip("tensorflow_datasets")

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


pytestmark = pytest.mark.usefixtures("fresh_session")


# Supplementary Table 2 (CIFAR-10; momentum 0.9, weight decay 5e-5; 1-cycle momentum 0.765-0.9):
# (epochs, network, method, hyperparameters, top-1 error in %)
TABLE_2 = [
    (25, "resnet18", "one_cycle", {"max_learning_rate": 1.7, "t_max": 0.7}, 7.53),
    (25, "resnet18", "actcoolr", {"start_temperature": 4.32, "gamma": 2.0}, 8.11),
    (25, "pyramidnet110", "one_cycle", {"max_learning_rate": 3.5, "t_max": 0.1}, 6.3),
    (25, "pyramidnet110", "actcoolr", {"start_temperature": 2.885, "gamma": 1.0}, 6.19),
    (50, "resnet18", "one_cycle", {"max_learning_rate": 1.9, "t_max": 0.15}, 6.7),
    (50, "resnet18", "actcoolr", {"start_temperature": 3.678, "gamma": 5.5}, 6.94),
    (50, "pyramidnet110", "one_cycle", {"max_learning_rate": 3.5, "t_max": 0.3}, 5.04),
    (50, "pyramidnet110", "actcoolr", {"start_temperature": 4.34, "gamma": 10.0}, 6.17),
]

# Supplementary Table 3: (data set, epochs, network, method, hyperparameters)
TABLE_3 = [
    ("fashion_mnist", 200, "convnet4", "constant", {"initial_learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0}),
    (
        "fashion_mnist",
        200,
        "convnet4",
        "actcoolr",
        {"start_temperature": 1.25, "gamma": 1.86, "momentum": 0.0, "weight_decay": 0},
    ),
    ("cifar10", 300, "vgg16", "actcoolr", {"start_temperature": 2.423, "gamma": 10.0}),
    (
        "imagenet",
        20,
        "resnet50",
        "one_cycle",
        {
            "initial_learning_rate": 0.5,
            "max_learning_rate": 1.0,
            "t_max": 0.1,
            "base_momentum": 0.765,
            "max_momentum": 0.9,
            "weight_decay": 1e-5,
        },
    ),
    (
        "imagenet",
        20,
        "resnet50",
        "actcoolr",
        {"start_temperature": 4.905, "gamma": 7, "initial_learning_rate": 0.5, "momentum": 0.5, "weight_decay": 1e-5},
    ),
]


def matching(dataset, epochs, network, method):
    return [
        p for p in PRESETS.values() if (p.dataset, p.epochs, p.network, p.method) == (dataset, epochs, network, method)
    ]


class TestPresets:
    @pytest.mark.parametrize("epochs, network, method, values, error", TABLE_2)
    def test_table_2(self, epochs, network, method, values, error):
        (preset,) = matching("cifar10", epochs, network, method)
        assert preset.source == "Table 2"
        for key, value in values.items():
            assert getattr(preset, key) == pytest.approx(value), key
        assert preset.momentum == 0.9 and preset.weight_decay == pytest.approx(5e-5)
        if method == "one_cycle":
            assert (preset.base_momentum, preset.max_momentum) == (0.765, 0.9)
        assert preset.published_error == pytest.approx(error)

    @pytest.mark.parametrize("dataset, epochs, network, method, values", TABLE_3)
    def test_table_3(self, dataset, epochs, network, method, values):
        (preset,) = matching(dataset, epochs, network, method)
        assert preset.source == "Table 3"
        for key, value in values.items():
            assert getattr(preset, key) == pytest.approx(value), key

    def test_every_preset_names_a_known_network_and_data_set(self):
        for preset in PRESETS.values():
            assert preset.network in zoo.NETWORKS and preset.dataset in data.DATASETS
        assert len(PRESETS) == len(TABLE_2) + len(TABLE_3) + 1  # + Figure 5's ResNet-32

    def test_list_command(self, capsys, monkeypatch):
        # `python -m keras_actcoolr.experiments --list`, run in this process.
        monkeypatch.setattr(sys, "argv", ["keras_actcoolr.experiments", "--list"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is imported already
            with pytest.raises(SystemExit) as exit_info:
                runpy.run_module("keras_actcoolr.experiments", run_name="__main__")
        assert exit_info.value.code == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split()[:3] == ["preset", "source", "data"]
        for name in PRESETS:
            assert any(line.startswith(name + " ") for line in lines), name
        assert any("T0=4.32, gamma=2" in line and "8.11%" in line for line in lines)


def run_smoke(tmp_path, *arguments):
    output = tmp_path / "out"
    code = experiments.main([*arguments, "--smoke", "--output-dir", str(output), "--verbose", "0"])
    assert code == 0
    with open(output / "results.json") as f:
        return output, json.load(f)


# The presets on the small Fashion-MNIST network run in the default test run; the CIFAR and ImageNet
# networks (up to a minute each on 2 cores) in the slow tier.
LIGHT = ("convnet4",)


@pytest.mark.parametrize(
    "name",
    [n if PRESETS[n].network in LIGHT else pytest.param(n, marks=pytest.mark.slow) for n in PRESETS],
)
def test_every_preset_runs_smoke_end_to_end(tmp_path, capsys, name):
    output, results = run_smoke(tmp_path, "--preset", name)
    assert f"{name}: test accuracy" in capsys.readouterr().out
    preset = PRESETS[name]
    assert results["smoke"] and results["preset"]["name"] == name
    assert (results["epochs"], results["steps_per_epoch"]) == (experiments.SMOKE_EPOCHS, experiments.SMOKE_STEPS)
    # A hand count: --smoke evaluates one batch of 4 images, so the accuracy is k / 4.
    assert results["test"]["accuracy"] * 4 == pytest.approx(round(results["test"]["accuracy"] * 4), abs=1e-6)
    assert results["published_top1_error_percent"] == preset.published_error
    with open(output / "history.json") as f:
        history = json.load(f)
    assert len(history["loss"]) == len(history["val_accuracy"]) == experiments.SMOKE_EPOCHS
    with open(output / "temperatures.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["step", "learning_rate", "temperature"] and len(rows[0]) > 3
    # 2 epochs of 2 steps, measured every 2 steps: steps 0 and 2.
    assert [int(row[0]) for row in rows[1:]] == [0, 2] == list(range(0, 4, 2))
    assert results["measurements"] == 2
    if preset.method == "actcoolr":
        with open(output / "controller.json") as f:
            records = json.load(f)
        assert len(records) == 2 and results["sigma"] > 0
        assert records[0]["target_temperature"] == pytest.approx(preset.start_temperature)
    else:
        assert not (output / "controller.json").exists()
    if HAS_MATPLOTLIB:
        for figure in ("layer_temperatures.png", "training.png"):
            assert (output / figure).read_bytes()[:4] == b"\x89PNG"


def test_flags_override_preset_fields(tmp_path):
    output, results = run_smoke(
        tmp_path,
        "--preset",
        "fashion_mnist-convnet4-actcoolr",
        "--start-temperature",
        "1.5",
        "--gamma",
        "3",
        "--momentum",
        "0.5",
        "--every-step",
        "1",
        "--batch-size",
        "2",
    )
    overrides = {"start_temperature": 1.5, "gamma": 3.0, "momentum": 0.5, "every_step": 1, "batch_size": 2}
    assert results["overrides"] == overrides
    assert results["preset"]["gamma"] == 3.0 and results["batch_size"] == 2
    with open(output / "controller.json") as f:
        records = json.load(f)
    assert [r["step"] for r in records] == [0, 1, 2, 3]  # every step
    # T*(progress) = T0 * (1 - progress) ** gamma over 4 steps, with the overridden T0 and gamma.
    for record in records:
        assert record["target_temperature"] == pytest.approx(1.5 * (1 - record["step"] / 4) ** 3)


@pytest.mark.slow
def test_other_data_set_and_network_through_flags(tmp_path):
    output, results = run_smoke(
        tmp_path, "--preset", "cifar10-resnet32-actcoolr", "--dataset", "tiny_imagenet", "--network", "pyramidnet41"
    )
    assert results["preset"]["dataset"] == "tiny_imagenet" and results["preset"]["network"] == "pyramidnet41"
    assert (output / "smoke-data" / "tiny-imagenet-200" / "wnids.txt").exists()


def test_missing_data_set_is_a_clear_error(tmp_path, capsys):
    code = experiments.main(
        [
            "--preset",
            "cifar10-resnet32-actcoolr",
            "--data-dir",
            str(tmp_path),
            "--no-download",
            "--output-dir",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1
    assert "tfds build cifar10" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments",
    [[], ["--preset", "cifar10-resnet19"], ["--preset", "cifar10-resnet32-actcoolr", "--method", "one_cycle"]],
    ids=["no_preset", "unknown_preset", "incomplete_override"],
)
def test_command_line_errors(arguments, capsys):
    with pytest.raises(SystemExit) as info:
        experiments.main(arguments)
    assert info.value.code == 2


class TestStrategy:
    def test_mirrored_when_several_gpus(self):
        assert isinstance(experiments.choose_strategy("auto", gpus=2), tf.distribute.MirroredStrategy)

    @pytest.mark.parametrize("gpus", [0, 1])
    def test_default_with_one_gpu_or_none(self, gpus):
        strategy = experiments.choose_strategy("auto", gpus=gpus)
        assert not isinstance(strategy, tf.distribute.MirroredStrategy)
        assert strategy.num_replicas_in_sync == 1

    def test_forced(self):
        assert isinstance(experiments.choose_strategy("mirrored", gpus=0), tf.distribute.MirroredStrategy)
        assert not isinstance(experiments.choose_strategy("default", gpus=8), tf.distribute.MirroredStrategy)
