"""`benchmarks/wide_layers.py`: ActCooLR(measure="grouped") on MobileNetV2 at 32x32, batch 16 (slow tier)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
STEPS = 30


def load_benchmark():
    spec = importlib.util.spec_from_file_location("wide_layers_benchmark", BENCHMARKS / "wide_layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mobilenet_run():
    return load_benchmark().run("mobilenetv2", 32, "grouped", STEPS)


@pytest.mark.slow
def test_grouped_measurement_resolves_mobilenetv2(mobilenet_run):
    result = mobilenet_run
    assert result["layers"] == 35
    # The targets of issue 17 that the grouped measurement is for.
    assert result["saturated"] <= 0.25
    assert 0.2 <= result["sigma_start"] <= 10.0
    assert result["non_finite_rates"] == 0
    assert math.isfinite(result["rate_min"]) and math.isfinite(result["rate_max"])
    assert result["rate_max"] <= 10.0


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason=(
        "Measured: this untrained MobileNetV2 reads a grouped temperature of about 5.6 already at the "
        "smallest Table-1 rate (6.3e-4) and about 1 near 1e-6..1e-5, so the erf model puts the start "
        "rate below min_learning_rate (1e-7); the loss rose in the 30 steps, not explained yet "
        "(docs/method.md#wide-networks)."
    ),
)
def test_rate_and_loss_targets_on_mobilenetv2(mobilenet_run):
    result = mobilenet_run
    assert result["rate_min"] >= 1e-6
    assert result["loss_end"] < result["loss_start"]
