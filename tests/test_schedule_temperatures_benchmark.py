"""`benchmarks/schedule_temperatures.py`: the warm-up target, the tenths, and a run whose temperatures are known."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(
        "schedule_temperatures_benchmark", BENCHMARKS / "schedule_temperatures.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class TestWarmupTarget:
    def test_rises_then_falls_linearly(self, bench):
        target = bench.warmup_target(2.0, 0.25, 0.5)
        # Hand values: 2 * (0.5 + 0.5 * p / 0.25) before 0.25, then 2 * (1 - p) / 0.75.
        assert target(0.0) == pytest.approx(1.0)
        assert target(0.125) == pytest.approx(1.5)
        assert target(0.25) == pytest.approx(2.0)
        assert target(0.625) == pytest.approx(1.0)
        assert target(1.0) == pytest.approx(0.0)

    @pytest.mark.parametrize("args", [(0.0, 0.3, 0.5), (1.0, 0.0, 0.5), (1.0, 1.0, 0.5), (1.0, 0.3, 1.5)])
    def test_rejects_out_of_range(self, bench, args):
        with pytest.raises(ValueError, match="warmup takes"):
            bench.warmup_target(*args)


class TestByTenth:
    def test_means_per_tenth(self, bench):
        # 100 steps: steps 0-9 are the first tenth, 90-99 the last; step 100 (the end) counts in the last.
        points = [(0, 1.0), (5, 3.0), (10, 4.0), (95, 0.5), (100, 0.25), (50, None)]
        tenths = bench.by_tenth(points, 100)
        assert tenths[0] == pytest.approx(2.0)
        assert tenths[1] == pytest.approx(4.0)
        assert tenths[9] == pytest.approx(0.375)
        assert tenths[5] is None  # only an unmeasured value there
        assert sum(v is not None for v in tenths) == 3


class TestArguments:
    @pytest.mark.parametrize("option", [["--warmup", "1.5,0.3,0.5"], ["--controller", '{"full_tracking": true}']])
    def test_controller_and_warmup_need_actcoolr(self, bench, option):
        with pytest.raises(SystemExit):
            bench.parse_args(["--task", "teacher_mlp", "--method", "onecycle", *option])

    def test_unknown_task(self, bench):
        with pytest.raises(SystemExit):
            bench.parse_args(["--task", "mnist", "--method", "onecycle"])

    def test_warmup_parsed(self, bench):
        args = bench.parse_args(["--task", "teacher_mlp", "--method", "actcoolr", "--warmup", "1.5,0.3,0.5"])
        assert args.warmup == (1.5, 0.3, 0.5)
        assert args.rate == 0.1


def test_a_run_at_rate_zero_reads_the_resolution_floor(bench, tmp_path):
    """At rate 0 no weight moves, so no pattern changes; the controller reads a change probability of 0, which
    it raises to the count's resolution, 0.5 / N with N the measured positions (the examples of the batch, for a
    Dense layer): temperature -log2(1 - 0.5 / N)."""
    output = tmp_path / "runs.jsonl"
    runs = bench.main(
        [
            "--task",
            "breast_cancer_mlp",
            "--method",
            "constant",
            "--rate",
            "0",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--every-step",
            "1",
            "--output",
            str(output),
        ]
    )
    (result,) = runs
    task = bench.TASKS["breast_cancer_mlp"]
    train = len(task.load().x_train)
    steps = math.ceil(train / task.batch_size)
    assert result["total_steps"] == steps
    batch_sizes = [task.batch_size] * (steps - 1) + [train - task.batch_size * (steps - 1)]
    expected = [-math.log2(1.0 - 0.5 / n) for n in batch_sizes]
    measured = dict(result["temperatures"])
    assert sorted(measured) == list(range(steps))
    np.testing.assert_allclose([measured[s] for s in range(steps)], expected, rtol=1e-6)
    assert result["peak_rate"] == 0.0
    assert json.loads(output.read_text().splitlines()[0])["seed"] == 0
