"""The README's quick start runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_code():
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_trains_and_reports_temperatures(capsys):
    pytest.importorskip("sklearn")
    namespace = {}
    exec(compile(quick_start_code(), str(README), "exec"), namespace)
    model, controller = namespace["model"], namespace["controller"]
    history = model.history.history
    assert len(history["temperature"]) == 5 and len(history["learning_rate"]) == 5
    # 1797 images, 80% for training, batches of 64: 23 steps per epoch, 115 in all.
    assert [r["step"] for r in controller.history] == list(range(0, 115, 10))
    assert set(model.layer_temperatures()) == {layer.name for layer in model.apt_layers()}
    printed = capsys.readouterr().out
    assert str(controller.history[-1]["step"]) in printed.splitlines()[-1]
