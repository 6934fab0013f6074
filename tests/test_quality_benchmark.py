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
            "digits_mlp": "held-out",
            "breast_cancer_mlp": "held-out",
            "teacher_mlp": "development",
        }

    @pytest.mark.parametrize(
        "name, features, classes, total",
        [
            ("digits_cnn", (8, 8, 1), 10, 1797),
            ("digits_cnn_bn", (8, 8, 1), 10, 1797),
            ("digits_resnet", (8, 8, 1), 10, 1797),
            ("digits_mlp", (64,), 10, 1797),
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

    def test_digits_features_are_the_digits_pixels_in_reading_order(self, quality):
        from sklearn.datasets import load_digits

        digits = load_digits()
        data = quality.TASKS["digits_mlp"].load()
        images = quality.TASKS["digits_cnn"].load()
        # The same split as the images: every feature vector is one image's 64 pixels, row by row, / 16.
        for x, y, x_image, y_image in (
            (data.x_train, data.y_train, images.x_train, images.y_train),
            (data.x_test, data.y_test, images.x_test, images.y_test),
        ):
            np.testing.assert_array_equal(y, y_image)
            for vector, image in zip(x[:5], x_image[:5]):
                np.testing.assert_array_equal(vector, [image[row, col, 0] for row in range(8) for col in range(8)])
        # Each test vector is a row of scikit-learn's `data` (its flattened images) divided by 16.
        rows = {tuple(row): label for row, label in zip(digits.data / 16.0, digits.target)}
        for vector, label in zip(data.x_test[:20], data.y_test[:20]):
            assert rows[tuple(vector.astype(np.float64))] == label

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

    def test_chance_loss(self, quality):
        # Breast cancer: the binary entropy of the training labels' share of class 1, by hand.
        cancer = quality.TASKS["breast_cancer_mlp"]
        data = cancer.load()
        p = np.mean(data.y_train == 1)
        assert cancer.chance_loss(data) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
        # Balanced labels: ln(classes); a class that never occurs adds nothing.
        tasks = sys.modules["_quality_tasks"]  # imported by the benchmark
        assert tasks.label_entropy(np.array([0, 1, 2, 3] * 5), 4) == pytest.approx(math.log(4))
        assert tasks.label_entropy(np.array([0, 2] * 5), 3) == pytest.approx(math.log(2))


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

    @pytest.mark.parametrize(
        "loss, accuracy, collapsed",
        [
            (2.2, 0.15, True),  # 0.95 * ln 10 = 2.1874
            (2.18, 0.15, False),
            (2.29, 0.15, True),
            (2.29, 0.20, True),  # 10 points above chance
            (2.29, 0.21, False),  # a slow start that already sorts some examples, not a collapse
            (2.29, 0.44, False),
            (0.3, 0.15, False),
        ],
    )
    def test_a_loss_at_chance_near_chance_accuracy_is_a_collapse(self, quality, loss, accuracy, collapsed):
        # 15 % on ten classes is 5 points above chance: the accuracy rule alone does not count it.
        assert quality.is_collapsed(loss, accuracy, 0.1, chance_loss=math.log(10)) is collapsed
        assert quality.is_collapsed(loss, accuracy, 0.1) is False


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
        assert s["rose_last_tenth"] is None  # runs without the field
        flags = [True, True, False, True, None, True]  # one rose; one had no rates (None: not a rise)
        runs = [dict(run, never_rises_last_tenth=flag) for run, flag in zip(runs, flags)]
        assert quality.summarize_controlled(runs)["rose_last_tenth"] == 1

    def test_never_rises_in_last_tenth(self, quality):
        # 20 steps: the last tenth is steps 18 and 19.
        falling = [0.1 * (20 - i) for i in range(20)]
        assert quality.never_rises_in_last_tenth(falling) is True
        assert quality.never_rises_in_last_tenth(falling[:19] + [falling[18] * 1.01]) is False
        assert quality.never_rises_in_last_tenth([0.5] * 20) is True
        assert quality.never_rises_in_last_tenth([]) is None

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
        # The last tenth: not checked without the field (older files), else no run may have raised its rate.
        assert checks["last_tenth"]["pass"] is None
        assert quality.check(dict(controlled, rose_last_tenth=0), {})["last_tenth"]["pass"] is True
        assert quality.check(dict(controlled, rose_last_tenth=1), {})["last_tenth"] == {"pass": False, "value": 1}
        # Without peers the two peer checks are not made.
        assert checks["best_peer"]["pass"] is None and checks["adam_peer"]["pass"] is None

    def test_peer_checks(self, quality):
        controlled = {"median": 0.950, "rate_spread": 0.0, "collapsed": 0}
        peers = {
            "adam_1e-3": {"median": 0.962},
            "sgdm_0.01": {"median": 0.953},
            "schedule_free_adamw": {"median": 0.940},
        }
        sgdm = quality.check(controlled, {}, peers, "sgdm")
        # Best peer: Adam 1e-3 at 96.2; 95.0 - 96.2 = -1.2 < -0.3. The Adam check is for ActCooLR driving Adam only.
        assert sgdm["best_peer"]["pass"] is False and sgdm["best_peer"]["value"] == pytest.approx(-1.2)
        assert sgdm["adam_peer"]["pass"] is None
        adam = quality.check(controlled, {}, peers, "adam")
        # 95.0 - 96.2 = -1.2 < -1.
        assert adam["adam_peer"]["pass"] is False and adam["adam_peer"]["value"] == pytest.approx(-1.2)
        close = quality.check(dict(controlled, median=0.955), {}, peers, "adam")
        # 95.5 - 96.2 = -0.7: within 1 point of Adam, but more than 0.3 below the best peer.
        assert close["adam_peer"]["pass"] is True and close["best_peer"]["pass"] is False
        edge = quality.check(dict(controlled, median=0.959), {}, peers, "adam")
        # 95.9 - 96.2 = -0.3: exactly the margin passes.
        assert edge["best_peer"]["pass"] is True and edge["best_peer"]["value"] == pytest.approx(-0.3)
        above = quality.check(dict(controlled, median=0.97), {}, {"sgdm_0.01": {"median": 0.953}}, "adam")
        # No Adam peer: n/a; 97.0 - 95.3 = +1.7 against the best (only) peer.
        assert above["adam_peer"]["pass"] is None and above["best_peer"]["value"] == pytest.approx(1.7)

    def test_peer_summary(self, quality):
        runs = [run_record("peer", 1e-3, seed, acc, optimizer="adam_1e-3") for seed, acc in enumerate((0.9, 0.8, 0.95))]
        runs[1]["collapsed"] = True
        s = quality.summarize_peer(runs)
        assert s["median"] == pytest.approx(0.9) and s["seed_spread"] == pytest.approx(0.15)
        assert (s["rate"], s["collapsed"], s["runs"], s["runs_to_tune"]) == (1e-3, 1, 3, 0)

    def test_mixed_controllers_refused(self, quality):
        runs = [run_record("actcoolr", 0.1, 0, 0.9), run_record("actcoolr", 0.1, 1, 0.9)]
        runs[0]["controller"], runs[1]["controller"] = {}, {"gamma": 2.0}
        with pytest.raises(ValueError, match="used different controller arguments"):
            quality.summarize(runs)


def hand_made_runs(peers=False):
    runs = []
    for seed, accuracy in enumerate((0.97, 0.98, 0.96)):
        for rate in (1e-4, 1.0):
            runs.append(run_record("actcoolr", rate, seed, accuracy))
        runs.append(run_record("constant", 0.1, seed, accuracy + 0.01))
        runs.append(run_record("onecycle", 0.3, seed, accuracy + 0.02))
        if peers:
            runs.append(run_record("peer", 1e-3, seed, accuracy - 0.005, optimizer="adam_1e-3"))
            runs.append(run_record("peer", 0.01, seed, accuracy + 0.002, optimizer="sgdm_0.01"))
    return runs


class TestOutput:
    def test_markdown(self, quality):
        runs = hand_made_runs()
        text = quality.render_markdown(quality.summarize(runs), runs, {"digits_cnn_bn": 3})
        assert "### digits_cnn_bn (development)" in text
        tables = [line for line in text.splitlines() if line.startswith("|")]
        # Overview: header, separator, one row; per task: header, separator, ActCooLR, constant, one-cycle;
        # checks: header, separator, one row.
        assert len(tables) == 3 + 5 + 3
        assert all(line.count("|") == tables[3].count("|") for line in tables[3:8])
        actcoolr = next(line for line in tables if "| ActCooLR |" in line)
        # Median 97.0 (both rates), seed spread 2.0, spread over rates 0.0, nothing collapsed, no tuning.
        # Runs without records: the runaway guard's holds are unknown ("-").
        assert actcoolr.endswith("| 97.0 | 2.0 | 0.0 | 0/6 | 0 | - |")
        checks = tables[-1]
        # 97.0 - 98.0 = -1.0 passes; 97.0 - 99.0 = -2.0 fails.
        assert "pass (-1.0)" in checks and "FAIL (-2.0)" in checks
        assert "development tasks: 3 of 4 checks pass." in text
        # Overview: ActCooLR 97.0 (spread 0.0), constant 98.0, one-cycle 99.0, no cosine, no peers.
        assert (
            tables[2]
            == "| digits_cnn_bn (development) | SGD m=0.9 | 97.0 (0.0) | 98.0 | 99.0 | - | - | misses: one-cycle |"
        )

    def test_runaway_holds(self, quality):
        runs = hand_made_runs()
        flags = {0: (False, True, True), 1: (False, False), 2: (True, False, False, True)}
        for r in runs:
            if r["method"] == "actcoolr":
                r["records"] = [{"step": 10 * i, "runaway": h} for i, h in enumerate(flags[r["seed"]])]
        summary = quality.summarize(runs)
        # Each seed at both initial rates: 2 x (2 + 0 + 2) held of 2 x (3 + 2 + 4) measurements.
        assert summary["digits_cnn_bn"]["sgdm"]["methods"]["actcoolr"]["held"] == (8, 18)
        actcoolr = next(line for line in quality.render_markdown(summary, runs).splitlines() if "| ActCooLR |" in line)
        assert actcoolr.endswith("| 0/6 | 0 | 8/18 |")

    def test_markdown_with_peers(self, quality):
        runs = hand_made_runs(peers=True)
        summary = quality.summarize(runs)
        text = quality.render_markdown(summary, runs)
        tables = [line for line in text.splitlines() if line.startswith("|")]
        # Peers: Adam 1e-3 medians 96.5, SGD m=0.9 at 0.01 97.2 (97 + 0.2): the best; ActCooLR 97.0 is 0.2 below.
        assert tables[2] == (
            "| digits_cnn_bn (development) | SGD m=0.9 | 97.0 (0.0) | 98.0 | 99.0 | - | 97.2 (SGD m=0.9, 0.01) "
            "| misses: one-cycle |"
        )
        adam_row = next(line for line in tables if line.startswith("| Adam 1e-3 | untuned peer |"))
        # Median 96.5, seed spread 2.0, 0 of 3 collapsed, no tuning.
        assert adam_row == "| Adam 1e-3 | untuned peer | 0.001 (default, not tuned) | 96.5 | 2.0 |  | 0/3 | 0 |  |"
        checks = tables[-1]
        assert "| pass (-0.2) | n/a |" in checks  # best peer, then the Adam check (not an Adam row)
        # Two peer entries but still one checks row (peers have no checks of their own).
        assert sum(line.startswith("| digits_cnn_bn | development |") for line in tables) == 1
        assert "development tasks: 4 of 5 checks pass." in text

    def test_plan_sizes(self, quality):
        q = quality
        full = q.plan_runs(q.FULL_PLAN, q.FULL_PLAN, q.DEFAULT_METHODS, q.SEEDS, q.INITIAL_RATES, None, {})
        # 18 task-optimizer pairs x (5 initial rates + 3 grids of 7) x 3 seeds, plus 6 tasks x 3 peers x 3 seeds.
        assert sum(len(v) for v in quality.FULL_PLAN.values()) == 18
        assert len(quality.PEERS) == 3  # ScheduleFreeAdamW is in the installed Keras
        assert len(full) == 18 * (5 + 21) * 3 + 6 * 3 * 3
        quick = q.plan_runs(q.QUICK_PLAN, q.QUICK_PLAN, q.DEFAULT_METHODS, (0,), q.QUICK_RATES, None, {}, quick=True)
        # 3 tasks x (3 initial rates + 3 grids of 3 + 3 peers) x 1 seed.
        assert len(quick) == 3 * (3 + 9 + 3)
        peers = {(s.optimizer, s.rate) for s in quick if s.method == "peer"}
        assert peers == {("adam_1e-3", 1e-3), ("sgdm_0.01", 0.01), ("schedule_free_adamw", 0.0025)}
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

    def test_peer_optimizers(self, quality):
        adam = quality.make_optimizer("adam_1e-3", 1e-3)
        assert isinstance(adam, keras.optimizers.Adam) and float(adam.learning_rate) == pytest.approx(1e-3)
        sgd = quality.make_optimizer("sgdm_0.01", 0.01)
        assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9
        assert float(sgd.learning_rate) == pytest.approx(0.01)
        free = quality.make_optimizer("schedule_free_adamw", 0.0025)
        assert isinstance(free, keras.optimizers.ScheduleFreeAdamW)
        assert float(free.learning_rate) == pytest.approx(0.0025) and free.weight_decay is None

    def test_figure(self, quality, tmp_path):
        pytest.importorskip("matplotlib")
        runs = hand_made_runs(peers=True)
        path = tmp_path / "quality.png"
        assert quality.save_figure(quality.summarize(runs), str(path)) is True
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_one_run_of_each_kind(quality):
    for method in ("constant", "onecycle", "cosine", "actcoolr", "peer"):
        optimizer = "schedule_free_adamw" if method == "peer" else "sgdm"
        spec = quality.RunSpec("breast_cancer_mlp", optimizer, method, 0.01, 0, 1)
        result = quality.train_run(spec)
        assert result["error"] is None, result["error"]
        assert result["epochs_run"] == 1 and 0.0 <= result["test_accuracy"] <= 1.0
        assert json.loads(json.dumps(result)) == result
        if method == "actcoolr":
            assert result["records"] and {"step", "learning_rate", "temperature"} <= set(result["records"][0])
            assert result["never_rises_last_tenth"] is True  # the final-anneal guard
        else:
            assert "never_rises_last_tenth" not in result
