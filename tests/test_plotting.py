"""keras_actcoolr.plotting: the figures hold the data given, PNG files are written, matplotlib stays optional."""

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import special

PACKAGE = Path(__file__).resolve().parents[1] / "keras_actcoolr"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 5_000  # an empty 800x300 canvas compresses to about 2 KB


def assert_png(path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > MIN_PNG_BYTES


def test_no_module_imports_matplotlib_at_import_time():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; imports inside functions are the point
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(name.split(".")[0] == "matplotlib" for name in names), path.name


MISSING_MATPLOTLIB = (
    'keras_actcoolr.plotting needs matplotlib: install the `plot` extra, `pip install "keras_actcoolr[plot]"`'
)


def test_figure_without_matplotlib_is_a_clear_import_error(monkeypatch):
    from keras_actcoolr import plotting

    # As if matplotlib were not installed: every matplotlib module already loaded is hidden too.
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=re.escape(MISSING_MATPLOTLIB)):
        plotting.plot_temperature_vs_learning_rate([0.1, 1.0], [0.5, 2.0], sigma=1.0, mu=0.0)


@pytest.mark.slow
def test_works_without_matplotlib_until_a_figure_is_asked_for():
    # A fresh process: importing the package (and Keras) must work with matplotlib missing.
    # `import keras` itself imports matplotlib when it is installed, so block it.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["matplotlib"] = None  # as if it were not installed
        import keras_actcoolr
        from keras_actcoolr import plotting
        try:
            plotting.plot_temperature_vs_learning_rate([0.1, 1.0], [0.5, 2.0], sigma=1.0, mu=0.0)
        except ImportError as error:
            print("ImportError:", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"ImportError: {MISSING_MATPLOTLIB}" in result.stdout


matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from keras_actcoolr import plotting  # noqa: E402

RECORDS = [
    {"step": 10 * i, "temperature": 0.0, "layers": {"conv": 0.5 * i, "dense": 3.0 - 0.25 * i, "out": 1.0}}
    for i in range(6)
]


class TestLayerTemperatures:
    def test_heat_map_has_layers_on_y_and_steps_on_x(self, tmp_path):
        path = tmp_path / "sub" / "layers.png"
        figure = plotting.plot_layer_temperatures(RECORDS, path=path, title="t")
        ax = figure.axes[0]
        image = ax.images[0]
        expected = np.array([[0.5 * i for i in range(6)], [3.0 - 0.25 * i for i in range(6)], [1.0] * 6])
        np.testing.assert_array_equal(image.get_array(), expected)  # row = layer, first layer at the bottom
        assert image.origin == "lower"
        assert [label.get_text() for label in ax.get_yticklabels()] == ["conv", "dense", "out"]
        assert image.get_extent() == pytest.approx([-5.0, 55.0, -0.5, 2.5])  # steps 0 to 50, one cell each
        assert ax.get_xlabel() == "step" and ax.get_title() == "t"
        assert figure.axes[1].get_ylabel() == "temperature"  # the colour bar
        assert_png(path)

    def test_epochs_on_x(self):
        figure = plotting.plot_layer_temperatures(RECORDS, steps_per_epoch=20)
        assert figure.axes[0].images[0].get_extent()[:2] == pytest.approx([-0.25, 2.75])
        assert figure.axes[0].get_xlabel() == "epoch"

    def test_no_records_is_refused(self):
        with pytest.raises(ValueError, match="empty"):
            plotting.plot_layer_temperatures([])


class TestTraining:
    def test_three_shared_panels_one_line_per_run(self, tmp_path):
        path = tmp_path / "training.png"
        histories = {
            # per-epoch lists, as keras History holds them
            "a": {"learning_rate": [0.1, 0.05, 0.01], "val_accuracy": [0.5, 0.7, 0.9], "temperature": [2.0, 1.0, 0.5]},
            # per-step (x, y) pairs and measurement records
            "b": {
                "learning_rate": ([0.0, 0.5, 1.0, 1.5], [0.2, 0.3, 0.4, 0.5]),
                "val_accuracy": [0.6, 0.8, 0.95],
                "temperature": RECORDS,
            },
        }
        figure = plotting.plot_training(histories, path=path, steps_per_epoch=20, title="runs")
        axes = figure.axes
        assert [ax.get_ylabel() for ax in axes] == ["learning rate", "validation accuracy", "mean temperature"]
        assert axes[0].get_shared_x_axes().joined(axes[0], axes[2])
        for ax in axes:
            assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
        lr_a, lr_b = axes[0].get_lines()
        np.testing.assert_array_equal(lr_a.get_xdata(), [1, 2, 3])  # end of each epoch
        np.testing.assert_array_equal(lr_a.get_ydata(), [0.1, 0.05, 0.01])
        np.testing.assert_array_equal(lr_b.get_xdata(), [0.0, 0.5, 1.0, 1.5])
        temperature_b = axes[2].get_lines()[1]
        np.testing.assert_array_equal(temperature_b.get_xdata(), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])  # step / 20
        np.testing.assert_array_equal(temperature_b.get_ydata(), [0.0] * 6)
        assert axes[2].get_xlabel() == "epoch"
        assert_png(path)

    def test_keras_history_and_log_scale(self):
        class History:  # what keras.callbacks.History exposes
            history = {"learning_rate": [1e-3, 1e-1], "val_accuracy": [0.1, 0.2]}

        figure = plotting.plot_training({"h": History()}, learning_rate_scale="log", accuracy_label="test accuracy")
        assert figure.axes[0].get_yscale() == "log"
        assert figure.axes[1].get_ylabel() == "test accuracy"
        assert len(figure.axes[2].get_lines()) == 0  # no temperature in this run

    def test_records_need_steps_per_epoch(self):
        with pytest.raises(ValueError, match="steps_per_epoch"):
            plotting.plot_training({"r": {"temperature": RECORDS}})


def erf_temperature(learning_rates, sigma, mu):
    probability = 0.5 * (1 + special.erf((np.log(learning_rates) - mu) / (sigma * np.sqrt(2))))
    return -np.log2(1 - probability)


class TestTemperatureVsLearningRate:
    LEARNING_RATES = np.logspace(-3.2, 2.0, 25)  # Table 1

    def test_given_model_is_drawn_through_the_points(self, tmp_path):
        path = tmp_path / "range.png"
        temperatures = erf_temperature(self.LEARNING_RATES, 1.5, -1.0)
        figure = plotting.plot_temperature_vs_learning_rate(
            self.LEARNING_RATES, temperatures, sigma=1.5, mu=-1.0, path=path
        )
        ax = figure.axes[0]
        points, curve = ax.get_lines()
        np.testing.assert_array_equal(points.get_xdata(), self.LEARNING_RATES)
        np.testing.assert_array_equal(points.get_ydata(), temperatures)
        x = np.asarray(curve.get_xdata())
        assert x[0] == pytest.approx(self.LEARNING_RATES[0]) and x[-1] == pytest.approx(100.0)
        finite = x < 10  # P rounds to 1 beyond, where the temperature is unbounded
        y = np.asarray(curve.get_ydata())
        np.testing.assert_allclose(y[finite], erf_temperature(x[finite], 1.5, -1.0), rtol=1e-9)
        assert curve.get_label() == "erf model, sigma=1.5, mu=-1"
        assert ax.get_xscale() == "log"
        assert ax.get_ylim() == pytest.approx((0.0, 1.1 * temperatures.max()))
        assert_png(path)

    def test_model_is_fitted_when_not_given(self):
        temperatures = erf_temperature(self.LEARNING_RATES, 0.8, 0.5)
        figure = plotting.plot_temperature_vs_learning_rate(self.LEARNING_RATES, temperatures)
        assert figure.axes[0].get_lines()[1].get_label() == "erf model, sigma=0.8, mu=0.5"

    def test_overlay_into_given_axes(self):
        first = plotting.plot_temperature_vs_learning_rate([0.01, 0.1, 1.0], [0.1, 1.0, 3.0], sigma=1.0, mu=-2.0)
        ax = first.axes[0]
        again = plotting.plot_temperature_vs_learning_rate(
            [0.01, 0.1, 1.0], [0.2, 2.0, 5.0], sigma=1.0, mu=-3.0, ax=ax, label="later"
        )
        assert again is first and len(ax.get_lines()) == 4
        assert ax.get_ylim()[1] == pytest.approx(5.5)

    def test_unfittable_points_are_drawn_alone(self):
        with pytest.warns(UserWarning, match="points only"):
            figure = plotting.plot_temperature_vs_learning_rate([0.1, 1.0], [1.0, 1.0])
        assert len(figure.axes[0].get_lines()) == 1

    def test_half_a_model_is_refused(self):
        with pytest.raises(ValueError, match="both"):
            plotting.plot_temperature_vs_learning_rate([0.1, 1.0], [1.0, 2.0], sigma=1.0)
