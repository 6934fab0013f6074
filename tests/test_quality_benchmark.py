"""`benchmarks/quality.py`: its tasks, its collapse rule, its statistics and its tables (no full training)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_actcoolr as kac

pytest.importorskip("sklearn")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", BENCHMARKS / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_record(method, rate, seed, test, val=None, loss=0.1, task="digits_cnn_bn", optimizer="sgdm", collapsed=False):
    """A hand-made result with the keys the summary reads."""
    return {
        "task": task,
        "optimizer": optimizer,
        "method": method,
        "rate": rate,
        "seed": seed,
        "epochs": 3,
        "test_accuracy": test,
        "val_accuracy": test if val is None else val,
        "final_loss": loss,
        "collapsed": collapsed,
        "chance": 0.1,
        "error": None,
        "seconds": 1.0,
    }


class TestTasks:
    def test_roles(self, quality):
        roles = {name: task.role for name, task in quality.TASKS.items()}
        assert roles == {
            "digits_cnn": "held-out",
            "digits_cnn_bn": "development",
            "digits_resnet": "held-out",
            "breast_cancer_mlp": "held-out",
            "teacher_mlp": "development",
        }

    @pytest.mark.parametrize(
        "name, features, classes, total",
        [
            ("digits_cnn", (8, 8, 1), 10, 1797),
            ("digits_cnn_bn", (8, 8, 1), 10, 1797),
            ("digits_resnet", (8, 8, 1), 10, 1797),
            ("breast_cancer_mlp", (30,), 2, 569),
            ("teacher_mlp", (8,), 4, 5000),
        ],
    )
    def test_data_and_model_shapes(self, quality, name, features, classes, total):
        task = quality.TASKS[name]
        data = task.load()
        sizes = [len(data.x_train), len(data.x_val), len(data.x_test)]
        assert sum(sizes) == total
        for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
            assert x.shape[1:] == features and x.dtype == np.float32
            assert len(y) == len(x) and set(np.unique(y)) == set(range(classes))
        assert data.num_classes == classes
        model = task.build(features, classes)
        assert model.output_shape == (None, classes)
        assert tuple(model.input_shape[1:]) == features
        converted = kac.convert(model)
        assert any(isinstance(layer, kac.APTReLU) for layer in converted.layers)

    def test_digits_split_is_stratified_60_20_20(self, quality):
        from sklearn.datasets import load_digits

        counts = np.bincount(load_digits().target)
        data = quality.TASKS["digits_cnn"].load()
        train, val = np.bincount(data.y_train), np.bincount(data.y_val)
        # Per class: round(0.6 n) for training, round(0.2 n) for validation.
        np.testing.assert_array_equal(train, np.round(0.6 * counts))
        np.testing.assert_array_equal(val, np.round(0.2 * counts))
        np.testing.assert_array_equal(np.bincount(data.y_test), counts - train - val)

    def test_batch_norm_only_where_named(self, quality):
        def has_bn(name):
            data = quality.TASKS[name].load()
            model = quality.TASKS[name].build(data.x_train.shape[1:], data.num_classes)
            return any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)

        assert not has_bn("digits_cnn")
        assert has_bn("digits_cnn_bn") and has_bn("digits_resnet")

    def test_breast_cancer_standardized_on_training_split(self, quality):
        data = quality.TASKS["breast_cancer_mlp"].load()
        np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-5)

    def test_teacher_labels_are_the_teachers_and_balanced(self, quality):
        tasks = sys.modules["_quality_tasks"]
        data = quality.TASKS["teacher_mlp"].load()
        weights = tasks.teacher_weights()
        # The teacher by hand: ReLU hidden layer, argmax of the logits.
        (k1, b1), (k2, b2) = weights
        expected = np.argmax(np.maximum(data.x_test.astype(np.float64) @ k1 + b1, 0) @ k2 + b2, axis=1)
        np.testing.assert_array_equal(data.y_test, expected)
        np.testing.assert_array_equal(np.bincount(data.y_train), [750, 750, 750, 750])
        np.testing.assert_array_equal(np.bincount(data.y_test), [250, 250, 250, 250])

    def test_chance(self, quality):
        digits = quality.TASKS["digits_cnn"]
        assert digits.chance_accuracy(digits.load()) == pytest.approx(0.1)
        cancer = quality.TASKS["breast_cancer_mlp"]
        data = cancer.load()
        majority = max(np.sum(data.y_test == 0), np.sum(data.y_test == 1)) / len(data.y_test)
        assert cancer.chance_accuracy(data) == pytest.approx(majority)
        assert majority > 0.5


class TestCollapse:
    @pytest.mark.parametrize(
        "loss, accuracy, chance, collapsed",
        [
            (0.3, 0.95, 0.1, False),
            (math.nan, 0.95, 0.1, True),
            (math.inf, 0.95, 0.1, True),
            (None, None, 0.1, True),
            (0.3, None, 0.1, True),
            (0.3, 0.12, 0.1, True),  # exactly 2 points above chance
            (0.3, 0.125, 0.1, False),
            (0.3, 0.64, 0.626, True),  # majority class of a tabular set
            (0.3, 0.66, 0.626, False),
        ],
    )
    def test_rule(self, quality, loss, accuracy, chance, collapsed):
        assert quality.is_collapsed(loss, accuracy, chance) is collapsed


class TestSummary:
    def test_controlled(self, quality):
        runs = [
            run_record("actcoolr", 1e-4, 0, 0.90),
            run_record("actcoolr", 1e-4, 1, 0.95),
            run_record("actcoolr", 1e-4, 2, 0.93),
            run_record("actcoolr", 1.0, 0, 0.80),
            run_record("actcoolr", 1.0, 1, 0.99),
            run_record("actcoolr", 1.0, 2, 0.10, loss=math.nan, collapsed=True),
        ]
        s = quality.summarize_controlled(runs)
        # Per-rate medians 0.93 and 0.80; per-rate spreads 0.05 and 0.89.
        assert s["per_rate"][1e-4]["median"] == pytest.approx(0.93)
        assert s["per_rate"][1.0]["median"] == pytest.approx(0.80)
        assert s["median"] == pytest.approx((0.93 + 0.80) / 2)
        assert s["rate_spread"] == pytest.approx(0.13)
        assert s["seed_spread"] == pytest.approx(0.89)
        assert s["worst_rate"] == 1.0 and s["worst_median"] == pytest.approx(0.80)
        assert (s["collapsed"], s["runs"], s["runs_to_tune"]) == (1, 6, 0)

    def test_baseline_chosen_on_validation(self, quality):
        runs = [
            # Rate 0.01: best test accuracy, but not on validation.
            run_record("constant", 0.01, 0, 0.99, val=0.90),
            run_record("constant", 0.01, 1, 0.98, val=0.91),
            run_record("constant", 0.01, 2, 0.97, val=0.92),
            run_record("constant", 0.1, 0, 0.95, val=0.96),
            run_record("constant", 0.1, 1, 0.90, val=0.95),
            run_record("constant", 0.1, 2, 0.96, val=0.90),
            run_record("constant", 1.0, 0, 0.10, val=0.10, collapsed=True),
            run_record("constant", 1.0, 1, 0.10, val=0.10, collapsed=True),
            run_record("constant", 1.0, 2, 0.93, val=0.94),
        ]
        s = quality.summarize_baseline(runs)
        # Validation medians: 0.91, 0.95, 0.10 -> rate 0.1; its test median 0.95 and spread 0.06.
        assert s["best_rate"] == 0.1
        assert s["median"] == pytest.approx(0.95)
        assert s["seed_spread"] == pytest.approx(0.06)
        assert s["at_edge"] is False
        assert (s["collapsed"], s["runs"], s["runs_to_tune"]) == (2, 9, 9)

    def test_baseline_tie_goes_to_smaller_rate_and_edge_is_flagged(self, quality):
        runs = [run_record("cosine", rate, 0, 0.9, val=0.9) for rate in (0.3, 0.03)]
        s = quality.summarize_baseline(runs)
        assert s["best_rate"] == 0.03 and s["at_edge"] is True

    def test_checks(self, quality):
        controlled = {"median": 0.950, "rate_spread": 0.021, "collapsed": 0}
        baselines = {"constant": {"median": 0.959}, "onecycle": {"median": 0.966}}
        checks = quality.check(controlled, baselines)
        # 95.0 - 95.9 = -0.9 >= -1; 95.0 - 96.6 = -1.6 < -1.5; 2.1 > 2.
        assert checks["constant"]["pass"] is True and checks["constant"]["value"] == pytest.approx(-0.9)
        assert checks["onecycle"]["pass"] is False and checks["onecycle"]["value"] == pytest.approx(-1.6)
        assert checks["rate_spread"]["pass"] is False and checks["rate_spread"]["value"] == pytest.approx(2.1)
        assert checks["no_collapse"]["pass"] is True
        assert quality.check(dict(controlled, collapsed=2), {})["no_collapse"]["pass"] is False
        assert quality.check(None, baselines)["constant"]["pass"] is None


    def test_mixed_controllers_refused(self, quality):
        runs = [run_record("actcoolr", 0.1, 0, 0.9), run_record("actcoolr", 0.1, 1, 0.9)]
        runs[0]["controller"], runs[1]["controller"] = {}, {"gamma": 2.0}
        with pytest.raises(ValueError, match="used different controller arguments"):
            quality.summarize(runs)


def hand_made_runs():
    runs = []
    for seed, accuracy in enumerate((0.97, 0.98, 0.96)):
        for rate in (1e-4, 1.0):
            runs.append(run_record("actcoolr", rate, seed, accuracy))
        runs.append(run_record("constant", 0.1, seed, accuracy + 0.01))
        runs.append(run_record("onecycle", 0.3, seed, accuracy + 0.02))
    return runs


class TestOutput:
    def test_markdown(self, quality):
        runs = hand_made_runs()
        text = quality.render_markdown(quality.summarize(runs), runs, {"digits_cnn_bn": 3})
        assert "### digits_cnn_bn (development)" in text
        tables = [line for line in text.splitlines() if line.startswith("|")]
        # Header, separator, ActCooLR, constant, one-cycle; header, separator, one row of checks.
        assert len(tables) == 8
        assert all(line.count("|") == tables[0].count("|") for line in tables[:5])
        actcoolr = next(line for line in tables if "| ActCooLR |" in line)
        # Median 97.0 (both rates), seed spread 2.0, spread over rates 0.0, nothing collapsed, no tuning.
        assert "| 97.0 | 2.0 | 0.0 | 0/6 | 0 |" in actcoolr
        checks = tables[-1]
        # 97.0 - 98.0 = -1.0 passes; 97.0 - 99.0 = -2.0 fails.
        assert "pass (-1.0)" in checks and "FAIL (-2.0)" in checks
        assert "development tasks: 3 of 4 checks pass." in text

    def test_plan_sizes(self, quality):
        q = quality
        full = q.plan_runs(q.FULL_PLAN, q.FULL_PLAN, q.DEFAULT_METHODS, q.SEEDS, q.INITIAL_RATES, None, {})
        # 15 task-optimizer pairs x (5 initial rates + 3 grids of 7) x 3 seeds.
        assert sum(len(v) for v in quality.FULL_PLAN.values()) == 15
        assert len(full) == 15 * (5 + 21) * 3
        quick = q.plan_runs(q.QUICK_PLAN, q.QUICK_PLAN, q.DEFAULT_METHODS, (0,), q.QUICK_RATES, None, {}, quick=True)
        # 3 tasks x (3 initial rates + 3 grids of 3) x 1 seed.
        assert len(quick) == 3 * (3 + 9)
        assert {s.rate for s in quick if s.method == "constant" and s.optimizer == "sgdm"} == {3e-3, 3e-2, 0.3}

    @pytest.mark.parametrize(
        "optimizer, constant, onecycle",
        [
            ("sgdm", (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0), (3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)),
            ("sgdm_wd", (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0), (3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)),
            ("sgd", (3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0), (1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)),
            ("adam", (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2), (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)),
        ],
    )
    def test_grids(self, quality, optimizer, constant, onecycle):
        grids = quality.GRIDS[optimizer]
        assert grids == {"constant": constant, "onecycle": onecycle, "cosine": constant}

    def test_controller_arguments(self, quality, monkeypatch):
        specs = quality.plan_runs(
            ["teacher_mlp"], {"teacher_mlp": ("adam",)}, ["actcoolr", "paper"], (0,), (1e-2,), 2, {"gamma": 2.0}
        )
        actcoolr, paper = specs
        assert quality.controller_kwargs(actcoolr) == {"gamma": 2.0}

        class WithGuards:
            def __init__(self, start_temperature=1.0, guards=True):
                pass

        expected = {"start_temperature": 3.03}
        if "guards" in __import__("inspect").signature(kac.ActCooLR).parameters:
            expected["guards"] = False
        assert quality.controller_kwargs(paper) == expected
        monkeypatch.setattr(kac, "ActCooLR", WithGuards)
        assert quality.controller_kwargs(paper) == {"start_temperature": 3.03, "guards": False}

    def test_json_values(self, quality):
        value = quality.plain({"a": np.float32(0.5), "b": [math.nan, math.inf, -math.inf], "c": np.arange(2)})
        assert json.loads(json.dumps(value)) == {"a": 0.5, "b": ["nan", "inf", "-inf"], "c": [0, 1]}
        assert math.isnan(quality.as_float("nan"))

    @pytest.mark.parametrize(
        "argv, message",
        [
            (["--methods", "actcoolr,bogus"], "--methods takes names"),
            (["--controller", "[1]"], "--controller takes a JSON object"),
            (["--controller", "{bad"], "--controller takes a JSON object"),
            (["--epochs", "0"], "--epochs must be >= 1"),
        ],
    )
    def test_bad_arguments(self, quality, capsys, argv, message):
        with pytest.raises(SystemExit, match="2"):
            quality.parse_args(argv)
        assert message in capsys.readouterr().err

    def test_figure(self, quality, tmp_path):
        pytest.importorskip("matplotlib")
        runs = hand_made_runs()
        path = tmp_path / "quality.png"
        assert quality.save_figure(quality.summarize(runs), str(path)) is True
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_one_run_of_each_kind(quality):
    for method in ("constant", "onecycle", "cosine", "actcoolr"):
        spec = quality.RunSpec("breast_cancer_mlp", "sgdm", method, 0.01, 0, 1)
        result = quality.train_run(spec)
        assert result["error"] is None, result["error"]
        assert result["epochs_run"] == 1 and 0.0 <= result["test_accuracy"] <= 1.0
        assert json.loads(json.dumps(result)) == result
        if method == "actcoolr":
            assert result["records"] and {"step", "learning_rate", "temperature"} <= set(result["records"][0])
