"""examples/lr_range_analysis.py prints the fit and saves the Figure-3 plot."""

import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_range_analysis_example(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import lr_range_analysis

    output = tmp_path / "range.png"
    results = lr_range_analysis.main(["--batches", "1", "--output", str(output)])
    printed = capsys.readouterr().out
    ((name, result),) = results
    assert f"sigma = {result.sigma:.3f}, mu = {result.mu:.3f}" in printed
    assert len(result.temperatures) == 25 and np.all(np.isfinite(result.temperatures))
    assert output.stat().st_size > 10_000
    sys.modules.pop("lr_range_analysis", None)
