"""TemperatureLogger's CSV and TensorBoard output, the heat-map image and RangeAnalysisLogger."""

import csv
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_actcoolr as kac
from keras_actcoolr.callbacks import heat_map_image

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def setup(seed=1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(12, activation="relu", name="a")(inputs)
    x = keras.layers.Dense(8, activation="relu", name="b")(x)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(x)))
    model.compile(optimizer=keras.optimizers.SGD(0.2), loss=LOSS)
    rng = np.random.default_rng(seed)
    return model, rng.normal(size=(80, 10)).astype("float32"), rng.integers(0, 3, 80)


def read_events(log_dir):
    values = {}
    for path in glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append((event.step, tf.make_ndarray(value.tensor)))
    return values


class TestTemperatureLogger:
    def test_csv_rows_equal_the_records(self, tmp_path):
        model, x, y = setup()
        path = tmp_path / "apt.csv"
        logger = kac.TemperatureLogger(every_step=3, csv_path=path)
        model.fit(x, y, batch_size=10, epochs=2, callbacks=[logger], verbose=0)
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
        assert rows[0] == [
            "step",
            "learning_rate",
            "temperature",
            "a_relu",
            "b_relu",
            "dead/a_relu",
            "dead/b_relu",
            "group_temperature",
            "group/a_relu",
            "group/b_relu",
        ]
        assert len(rows) == 1 + 6  # steps 0, 3, ..., 15 of 16
        for row, record in zip(rows[1:], logger.history):
            assert int(row[0]) == record["step"]
            values = [float(v) for v in row[1:]]
            expected = [
                record["learning_rate"],
                record["temperature"],
                *record["layers"].values(),
                record["dead"]["a_relu"],
                record["dead"]["b_relu"],
                record["group_temperature"],
                *record["group_layers"].values(),
            ]
            np.testing.assert_allclose(values, expected, rtol=1e-12)
            np.testing.assert_allclose(values[1], np.mean(values[2:4]), rtol=1e-12)
            np.testing.assert_allclose(values[6], np.mean(values[7:9]), rtol=1e-12)
            assert all(0.0 <= v <= 1.0 for v in values[4:6])

    def test_tensorboard_scalars_and_heat_map(self, tmp_path):
        model, x, y = setup()
        logger = kac.TemperatureLogger(every_step=4, log_dir=tmp_path / "logs")
        model.fit(x, y, batch_size=10, epochs=2, callbacks=[logger], verbose=0)
        events = read_events(str(tmp_path / "logs"))
        assert {
            "learning_rate",
            "temperature/network",
            "temperature/a_relu",
            "temperature/b_relu",
            "dead/a_relu",
            "dead/b_relu",
            "group_temperature/network",
            "group_temperature/a_relu",
            "group_temperature/b_relu",
        } <= set(events)
        for (_, value), record in zip(events["group_temperature/a_relu"], logger.history):
            np.testing.assert_allclose(float(value), record["group_layers"]["a_relu"], rtol=1e-6)
        for (_, value), record in zip(events["dead/a_relu"], logger.history):
            np.testing.assert_allclose(float(value), record["dead"]["a_relu"], rtol=1e-6)
        steps = [step for step, _ in events["temperature/network"]]
        assert steps == [r["step"] for r in logger.history] == [0, 4, 8, 12]
        for (_, value), record in zip(events["temperature/b_relu"], logger.history):
            np.testing.assert_allclose(float(value), record["layers"]["b_relu"], rtol=1e-6)
        for (_, value), _record in zip(events["learning_rate"], logger.history):
            np.testing.assert_allclose(float(value), 0.2, rtol=1e-6)
        images = events["temperature/heat_map"]
        assert [step for step, _ in images] == [0, 1]
        # An image summary holds width, height and the encoded PNG.
        width, height = (int(v) for v in images[-1][1][:2])
        assert (height, width) == (2 * 8, 4)


class TestHeatMap:
    def test_colours_follow_the_temperatures(self):
        records = [
            {"layers": {"a": 0.0, "b": 2.0}},
            {"layers": {"a": 1.0, "b": 0.5}},
        ]
        image = heat_map_image(records, pixels=2)
        assert image.shape == (4, 2, 3)
        np.testing.assert_allclose(image[0, 0], np.array([68, 1, 84]) / 255, rtol=1e-6)  # coldest
        np.testing.assert_allclose(image[2, 0], np.array([253, 231, 37]) / 255, rtol=1e-6)  # hottest
        # 1.0 of 2.0 is the middle anchor of the colour map.
        np.testing.assert_allclose(image[1, 1], np.array([33, 145, 140]) / 255, rtol=1e-6)
        np.testing.assert_array_equal(image[0], image[1])


class TestRangeAnalysisLogger:
    def test_runs_at_the_requested_epochs_without_changing_training(self):
        model, x, y = setup()
        reference, _, _ = setup()
        ranges = kac.RangeAnalysisLogger((x, y), every_epochs=2, learning_rates=[0.01, 1.0, 50.0], batch_size=20)
        history = model.fit(x, y, batch_size=10, epochs=4, callbacks=[ranges], verbose=0, shuffle=False)
        plain = reference.fit(x, y, batch_size=10, epochs=4, verbose=0, shuffle=False)
        np.testing.assert_allclose(history.history["loss"], plain.history["loss"], rtol=1e-6)
        assert [h["epoch"] for h in ranges.history] == [0, 2, 4]
        assert [h["step"] for h in ranges.history] == [0, 16, 32]
        for entry in ranges.history:
            analysis = entry["analysis"]
            assert analysis.layer_names == ("a_relu", "b_relu")
            assert analysis.temperatures[0] < analysis.temperatures[-1]
            assert entry["learning_rate"] == pytest.approx(0.2)

    def test_bad_every_epochs_is_refused(self):
        with pytest.raises(ValueError, match="every_epochs=0"):
            kac.RangeAnalysisLogger(None, every_epochs=0)
