"""`benchmarks/fashion_mnist.py`: its smallest run in-process on a tiny synthetic IDX directory, resume, and its report logic."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from keras_actcoolr import data

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("fashion_mnist_benchmark", BENCHMARKS / "fashion_mnist.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def curve(*points):
    """Epoch records `(seconds, step, accuracy)`."""
    return [{"epoch": i + 1, "seconds": s, "step": n, "test_accuracy": a} for i, (s, n, a) in enumerate(points)]


def run(method, seed, test, val=None, rate=0.1, network="convnet4", points=(), **extra):
    record = {
        "network": network,
        "method": method,
        "rate": rate,
        "seed": seed,
        "epochs": 3,
        "train_examples": None,
        "test_accuracy": test,
        "val_accuracy": test if val is None else val,
        "collapsed": False,
        "nan_loss": False,
        "curve": curve(*points),
        "error": None,
    }
    record.update(extra)
    return record


@pytest.mark.slow
def test_smallest_run_and_resume(bench, tmp_path, monkeypatch):
    directory = data.write_fake_fashion_mnist(tmp_path / "idx", train=200, test=40)
    output = tmp_path / "runs.jsonl"
    argv = ["--fashion-mnist-dir", str(directory), "--networks", "convnet4", "--methods", "adam"]
    argv += ["--seeds", "0", "--epochs", "1", "--output", str(output)]
    bench.main(argv)
    lines = output.read_text().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert (result["network"], result["method"], result["rate"], result["seed"], result["epochs"]) == (
        "convnet4",
        "adam",
        1e-3,
        0,
        1,
    )
    # 200 images less 1% (2) for validation: 198 in batches of 64 -> 4 steps.
    assert result["steps_per_epoch"] == 4 and result["total_steps"] == 4
    assert len(result["curve"]) == 1 and result["curve"][0]["step"] == 4
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["error"] is None
    # The accuracy after the only epoch is the final one (the same weights, evaluated twice).
    assert result["curve"][0]["test_accuracy"] == pytest.approx(result["test_accuracy"])

    def must_not_train(spec, path):
        raise AssertionError(f"{spec} was run again")

    monkeypatch.setattr(bench, "train_run", must_not_train)
    again = bench.main(argv)
    assert len(output.read_text().splitlines()) == 1
    assert len(again["runs"]) == 1

    ran = []

    def fake_run(spec, path):
        ran.append(spec)
        return dict(result, seed=spec.seed)

    monkeypatch.setattr(bench, "train_run", fake_run)
    bench.main([a if a != "0" else "0,1" for a in argv])  # seeds 0 and 1
    # Only the missing seed ran, and the file gained one line.
    assert [spec.seed for spec in ran] == [1]
    assert len(output.read_text().splitlines()) == 2


def test_half_written_line_and_repeated_runs(bench, tmp_path):
    path = tmp_path / "r.jsonl"
    first, second = run("adam", 0, 0.5), run("adam", 0, 0.6)
    path.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n" + '{"network": "conv')
    runs = bench.read_results(str(path))
    assert len(runs) == 1 and runs[0]["test_accuracy"] == 0.6


def test_report_of_several_files_keeps_the_last_of_a_repeated_run(bench, tmp_path, capsys):
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text("".join(json.dumps(run("adam", seed, 0.5, rate=1e-3)) + "\n" for seed in (0, 1)))
    new.write_text(json.dumps(run("adam", 1, 0.7, rate=1e-3)) + "\n")
    runs = bench.main(["--report", str(old), str(new)])["runs"]
    assert sorted((r["seed"], r["test_accuracy"]) for r in runs) == [(0, 0.5), (1, 0.7)]
    # Median of 0.5 and 0.7, in percent: the rerun counted once.
    assert "| adam | 0.001 | 60.00 |" in capsys.readouterr().out


def test_rate_never_rises_in_last_tenth(bench):
    # 20 steps: the last tenth is steps 18 and 19.
    falling = [1.0] * 18 + [0.5, 0.4]
    assert bench.never_rises_in_last_tenth(falling) is True
    rising = [1.0] * 18 + [0.5, 0.6]
    assert bench.never_rises_in_last_tenth(rising) is False
    flat = [0.1] * 10  # last tenth: step 9 only
    assert bench.never_rises_in_last_tenth(flat) is True
    assert bench.never_rises_in_last_tenth([]) is None


def test_grid_then_seeds(bench):
    grids = {"onecycle": (0.1, 0.3)}
    plan = bench.pending(["convnet4"], ["onecycle"], (0, 1, 2), 3, None, grids, [])
    # Before the grid has run: only its points on seed 0.
    assert [(s.rate, s.seed) for s in plan] == [(0.1, 0), (0.3, 0)]
    done = [run("onecycle", 0, 0.80, val=0.7, rate=0.1), run("onecycle", 0, 0.90, val=0.6, rate=0.3)]
    plan = bench.pending(["convnet4"], ["onecycle"], (0, 1, 2), 3, None, grids, done)
    # Chosen on validation (0.7 > 0.6), not test: rate 0.1 on seeds 1 and 2.
    assert [(s.rate, s.seed) for s in plan] == [(0.1, 1), (0.1, 2)]


def test_summary_time_to_target(bench):
    runs = [
        # Tuned one-cycle: grid on seed 0 (0.3 wins on validation), then seeds 1 and 2 at 0.3. Median 0.90.
        run("onecycle", 0, 0.85, val=0.5, rate=0.1, points=[(10, 100, 0.85)]),
        run("onecycle", 0, 0.90, val=0.8, rate=0.3, points=[(10, 100, 0.7), (20, 200, 0.90)]),
        run("onecycle", 1, 0.88, rate=0.3, points=[(10, 100, 0.7), (20, 200, 0.88)]),
        run("onecycle", 2, 0.91, rate=0.3, points=[(10, 100, 0.8), (20, 200, 0.91)]),
        # ActCooLR reaches 0.90 at epoch 1 on seed 0, epoch 2 on seed 1, never on seed 2.
        run("actcoolr", 0, 0.92, points=[(12, 100, 0.90), (24, 200, 0.92)], never_rises_last_tenth=True),
        run("actcoolr", 1, 0.91, points=[(12, 100, 0.85), (26, 200, 0.91)], never_rises_last_tenth=False),
        run("actcoolr", 2, 0.89, points=[(12, 100, 0.85), (25, 200, 0.89)], never_rises_last_tenth=True),
    ]
    summary = bench.summarize(runs)["convnet4"]
    onecycle, actcoolr = summary["onecycle"], summary["actcoolr"]
    assert onecycle["rate"] == 0.3 and onecycle["runs"] == 4 and onecycle["seeds"] == 3
    assert onecycle["median"] == pytest.approx(0.90) and onecycle["spread"] == pytest.approx(0.03)
    assert actcoolr["target"] == pytest.approx(0.90)
    # Reached by seeds 0 (12 s, step 100) and 1 (26 s, step 200): medians 19 s and 150 steps.
    assert actcoolr["reached"] == 2
    assert actcoolr["seconds_to_target"] == pytest.approx(19.0) and actcoolr["steps_to_target"] == 150
    # One-cycle: seeds 0 and 2 reach 0.90 at 20 s (seed 1 ends at 0.88).
    assert onecycle["reached"] == 2 and onecycle["seconds_to_target"] == pytest.approx(20.0)
    text = bench.render(bench.summarize(runs))
    row = next(line for line in text.splitlines() if line.startswith("| actcoolr |"))
    # Paired with the one-cycle's seeds: 92 - 90, 91 - 88, 89 - 91 = +2, +3, -2 points, median +2.
    # Runs without records: the runaway guard's holds are unknown ("-").
    assert (
        row
        == "| actcoolr | 0.1 | 91.00 | 3.00 | 3 | 19 (2/3) | 150 | +2.00 (3 seeds) | 2/3 yes | -, -, - | 0/3 | 0/3 |"
    )
    assert actcoolr["paired"] == (pytest.approx(0.02), 3) and onecycle["paired"] is None
    # 0.3 is the largest point of the grid {0.1, 0.3}: the grid may be too narrow.
    row = next(line for line in text.splitlines() if line.startswith("| onecycle |"))
    assert "| 0.3 (tuned, grid edge) | 90.00 |" in row
    # The one-cycle grid point that diverged counts among the method's 5 runs; 0.3 is now inside {0.1, 0.3, 1}.
    runs.append(run("onecycle", 0, 0.10, val=0.1, rate=1.0, collapsed=True, nan_loss=True))
    row = next(line for line in bench.render(bench.summarize(runs)).splitlines() if line.startswith("| onecycle |"))
    assert row.endswith("|  | 1/5 | 1/5 |") and "| 0.3 (tuned) | 90.00 |" in row


def test_report_counts_the_measurements_the_runaway_guard_held(bench):
    def records(*held):
        return [{"step": 10 * i, "runaway": h} for i, h in enumerate(held)]

    runs = [
        run("actcoolr", 0, 0.90, records=records(False, False, False, False)),
        # Held at its 2nd and 3rd of 5 measurements; a missing flag is no hold.
        run("actcoolr", 1, 0.91, records=records(False, True, True, False) + [{"step": 40}]),
        run("actcoolr", 2, 0.89, records=records(True, True, True)),
        run("adam", 0, 0.88),
    ]
    summary = bench.summarize(runs)["convnet4"]
    assert summary["actcoolr"]["held"] == [(0, 4), (2, 5), (3, 3)]
    assert summary["adam"]["held"] is None
    # No one-cycle runs: nothing to pair with.
    assert summary["actcoolr"]["paired"] is None
    lines = bench.render(bench.summarize(runs)).splitlines()
    assert "| 0/4, 2/5, 3/3 |" in next(line for line in lines if line.startswith("| actcoolr |"))


def test_bad_arguments(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "adam,bogus"])
    assert "--methods takes names" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--epochs", "0"])
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_quick_plan(bench):
    args = bench.parse_args(["--quick"])
    assert args.networks == ("convnet4",) and args.seeds == (0,) and args.epochs == 2
    assert args.train_examples == 6000
    plan = bench.pending(args.networks, args.methods, args.seeds, args.epochs, args.train_examples, args.grids, [])
    # 6 untuned methods x 1 seed + one-cycle's 2 grid points.
    assert len(plan) == 6 + 2


def test_controller_option_goes_with_the_defaults_runs_and_the_resume_key(bench, capsys):
    args = bench.parse_args(["--controller", '{"adam_units": false}', "--methods", "actcoolr_adam,adam,paper"])
    assert args.controller == '{"adam_units": false}'
    plan = bench.pending(["convnet4"], args.methods, (0,), 1, None, {}, [], args.controller)
    options = {s.method: s.controller_options for s in plan}
    # Only the runs of ActCooLR's defaults take it; the paper's preset and the plain optimizers do not.
    assert options == {"actcoolr_adam": '{"adam_units": false}', "adam": "", "paper": ""}
    assert bench.controller_kwargs("defaults", options["actcoolr_adam"]) == {"adam_units": False}
    # A run made without the option does not stand for one with it (and the other way round).
    done = [run("actcoolr_adam", 0, 0.9, rate=1e-3, epochs=1)]
    again = bench.pending(["convnet4"], ["actcoolr_adam"], (0,), 1, None, {}, done, args.controller)
    assert [s.controller_options for s in again] == ['{"adam_units": false}']
    assert bench.pending(["convnet4"], ["actcoolr_adam"], (0,), 1, None, {}, done, "") == []
    with pytest.raises(SystemExit):
        bench.parse_args(["--controller", "[1, 2]"])
    assert "--controller takes a JSON object" in capsys.readouterr().err


def test_paired_difference_uses_the_seeds_both_methods_ran(bench):
    runs = [
        run("onecycle", 0, 0.880, rate=0.3),
        run("onecycle", 1, 0.885, rate=0.3),
        run("actcoolr", 0, 0.875),
        run("actcoolr", 1, 0.880),
        run("actcoolr", 2, 0.900),  # no one-cycle seed 2: left out of the pairing
    ]
    summary = bench.summarize(runs)["convnet4"]
    # 87.5 - 88.0 and 88.0 - 88.5: -0.5 points both, over 2 seeds (the unpaired median would be 88.0 - 88.25).
    assert summary["actcoolr"]["paired"] == (pytest.approx(-0.005), 2)
    row = next(line for line in bench.render(bench.summarize(runs)).splitlines() if line.startswith("| actcoolr |"))
    assert "| -0.50 (2 seeds) |" in row


def test_the_mlp_is_two_hidden_layers_of_256_and_converts_them(bench):
    import keras

    import keras_actcoolr as kac

    plain, controlled = bench.build("mlp", False), bench.build("mlp", True)
    # Parameters by hand: 784 -> 256 -> 256 -> 10, each Dense with its bias.
    assert plain.count_params() == (784 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    assert controlled.count_params() == plain.count_params()
    assert [layer.name for layer in controlled.layers if isinstance(layer, kac.APTReLU)] == [
        "dense1_relu",
        "dense2_relu",
    ]
    assert not any(isinstance(layer, kac.APTReLU) for layer in plain.layers)
    assert plain.output_shape == (None, 10) and tuple(plain.input_shape[1:]) == (28, 28, 1)
    # The hidden layers see the image row by row: the first kernel has one row per pixel.
    assert plain.get_layer("dense1").kernel.shape == (28 * 28, 256)
    assert isinstance(plain.get_layer("flatten"), keras.layers.Flatten)
