"""examples/quickstart.py: `--compare` trains every schedule and writes its table and figures."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def quickstart():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def has_matplotlib():
    return importlib.util.find_spec("matplotlib") is not None


@pytest.mark.slow
def test_compare_all_prints_one_row_per_schedule_and_saves_figures(tmp_path, capsys):
    module = quickstart()
    result = module.main(["--compare", "all", "--epochs", "1", "--verbose", "0", "--output-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    names = list(module.SCHEDULES)
    assert names == ["actcoolr", "dynamic", "constant", "step", "cyclic", "onecycle"]
    assert list(result["schedules"]) == names

    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["schedule", "test", "acc"])
    number = r"-?\d+\.\d+"
    for name, line in zip(names, lines[header + 1 : header + 1 + len(names)]):
        # name, accuracy, loss, three temperatures, two rates, time
        numbers = r"\s+".join([f"({number})"] * 5)
        pattern = rf"\s*{name}\s+{numbers}\s+(\S+)\s+(\S+)\s+({number}) s"
        match = re.fullmatch(pattern, line)
        assert match, line
        summary = result["schedules"][name]
        assert float(match.group(1)) == pytest.approx(summary["test_accuracy"], abs=5e-5)
        # A hand count: 1797 digits, 20% held out for testing, so the accuracy is k / 360.
        assert summary["test_accuracy"] * 360 == pytest.approx(round(summary["test_accuracy"] * 360), abs=1e-3)
        assert all(np.isfinite(summary["temperatures"])) and min(summary["temperatures"]) >= 0.0
        low, high = summary["learning_rate_range"]
        # The rate of the first step (the example's defaults: 0.1 for the controllers, 0.05 for constant
        # and step decay, 0.01 for cyclic and one-cycle) lies in the range of the rates of every step.
        first = {"actcoolr": 0.1, "dynamic": 0.1, "constant": 0.05, "step": 0.05, "cyclic": 0.01, "onecycle": 0.01}
        assert low <= first[name] * (1 + 1e-6) and first[name] * (1 - 1e-6) <= high
        assert float(match.group(6)) == pytest.approx(low, rel=1e-2)

    # One epoch of 23 steps with the example's defaults: constant 0.05; step decay from 0.05, divided
    # by 10 on steps 11 and 17; one-cycle from 0.01 up to 0.4 at step 0.3 * 22 = 6.6 and down to 0.
    schedules = result["schedules"]
    assert schedules["constant"]["learning_rate_range"] == pytest.approx((0.05, 0.05), rel=1e-6)
    assert schedules["step"]["learning_rate_range"] == pytest.approx((0.0005, 0.05), rel=1e-6)
    one_cycle = np.interp(np.arange(23), [0, 6.6, 22], [0.01, 0.4, 0.0])
    assert schedules["onecycle"]["learning_rate_range"] == pytest.approx((0.0, one_cycle.max()), rel=1e-6, abs=1e-7)

    if not has_matplotlib():
        assert result["figures"] == []
        return
    expected = [tmp_path / f"layers_{name}.png" for name in names] + [tmp_path / "training_compare.png"]
    assert [Path(p) for p in result["figures"]] == expected
    for path in expected:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
        assert str(path) in printed


@pytest.mark.slow
def test_default_run_prints_the_actcoolr_table(tmp_path, capsys):
    module = quickstart()
    result = module.main(["--epochs", "1", "--verbose", "0", "--output-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "ActCooLR on scikit-learn digits" in printed
    for row in (
        "test accuracy",
        "temperature first / final",
        "final target temperature",
        "sigma (estimated)",
        "learning rate min / max",
        "final learning rate",
        "last tenth: max rate / its first",
        "measurements",
        "training time",
    ):
        assert re.search(rf"^  {re.escape(row)}\s+\S", printed, re.M), row
    assert result["measurements"] == 3  # steps 0, 10 and 20 of 23
    assert result["sigma"] > 0


def test_the_runaway_anchor_reaches_the_controller():
    module = quickstart()
    for argv, anchor in (([], "rise"), (["--runaway-anchor", "coolest"], "coolest")):
        _, _, controller = module.schedule_and_callbacks("actcoolr", module.parse_args(argv), 23, 23)
        assert controller.runaway_anchor == anchor
    with pytest.raises(SystemExit):
        module.parse_args(["--runaway-anchor", "start"])


def test_the_dynamic_schedule_starts_at_one_half_or_at_the_given_temperature():
    module = quickstart()
    # By hand: P = 1 - 2 ** -T; no temperature given: 1/2; T = 1.5: 1 - 2 ** -1.5 = 0.646447.
    for argv, probability in (
        ([], 0.5),
        (["--start-temperature", "1.5"], 0.646447),
        (["--start-probability", "0.3"], 0.3),
    ):
        _, _, controller = module.schedule_and_callbacks("dynamic", module.parse_args(argv), 23, 23)
        assert controller.start_probability == pytest.approx(probability, abs=1e-6)


def test_bad_compare_is_refused():
    module = quickstart()
    with pytest.raises(SystemExit):
        module.parse_args(["--compare", "actcoolr,adam"])


@pytest.mark.slow
def test_full_quickstart_reaches_97_percent_and_its_rate_falls_over_the_last_tenth(tmp_path, capsys):
    module = quickstart()
    (x_train, _), _ = module.load_digits(0)
    result = module.main(["--verbose", "0", "--output-dir", str(tmp_path)])  # the defaults: 30 epochs
    assert result["test_accuracy"] >= 0.97
    steps = int(np.ceil(len(x_train) / 64)) * 30  # the example's batch of 64, 30 epochs
    rates = np.array(result["rates"])
    assert len(rates) == steps
    tail = int(np.ceil(0.9 * steps))
    assert rates[tail:].max() <= rates[tail] * (1 + 1e-6)
    assert result["final_tenth_rise"] == pytest.approx(rates[tail:].max() / rates[tail])
