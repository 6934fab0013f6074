"""The typed records of keras_actcoolr.measurement, against hand counts (docs/method.md#definitions)."""

import dataclasses

import numpy as np
import pytest

from keras_actcoolr.measurement import Measurement, RangeCounts


class TestMeasurement:
    def test_from_hand_counts(self):
        # Layer a: 3 of 8 positions unchanged, 1 of 4 channels dead; layer b: 4 of 4 unchanged.
        counts = np.array([[3.0, 8.0, 1.0, 4.0], [4.0, 4.0, 0.0, 2.0]])
        record = Measurement.from_counts(7, 0.05, ["a", "b"], counts, loss=1.5, examples=2)
        assert record.layers == {"a": pytest.approx(np.log2(8 / 3)), "b": 0.0}
        assert record.temperature == pytest.approx(np.log2(8 / 3) / 2)
        assert record.dead == {"a": 0.25, "b": 0.0}
        assert record.positions == {"a": 8.0, "b": 4.0}
        assert record.saturated == ["a", "b"]  # fewer than 8 unchanged positions each
        assert (record.step, record.learning_rate, record.loss, record.examples) == (7, 0.05, 1.5, 2)

    def test_reads_like_the_dict_it_replaces(self):
        record = Measurement.from_counts(0, 0.1, ["a"], np.array([[16.0, 32.0, 0.0, 2.0]]))
        # No loss and no example count: no such keys, as the dict records had.
        assert set(record) == {"step", "learning_rate", "temperature", "layers", "dead", "positions", "saturated"}
        assert record["temperature"] == 1.0 and record.get("loss") is None
        with pytest.raises(KeyError, match="loss"):
            record["loss"]
        assert dict(record) == record.as_dict() == {
            "step": 0, "learning_rate": 0.1, "temperature": 1.0, "layers": {"a": 1.0},
            "dead": {"a": 0.0}, "positions": {"a": 32.0}, "saturated": [],
        }  # fmt: skip
        assert record == dict(record)
        assert dict(record, target_temperature=2.0)["target_temperature"] == 2.0

    def test_is_immutable(self):
        record = Measurement.from_counts(0, 0.1, ["a"], np.array([[16.0, 32.0, 0.0, 2.0]]))
        with pytest.raises(dataclasses.FrozenInstanceError, match="temperature"):
            record.temperature = 0.0


class TestRangeCounts:
    def test_temperatures_from_counts(self):
        rates = np.array([0.01, 0.1])
        counts = np.array([[[8.0, 8.0], [6.0, 12.0]], [[2.0, 8.0], [0.0, 12.0]]])
        analysis = RangeCounts(rates, counts)
        # -log2(max(U, 0.5) / N) per rate and layer, then the mean over layers.
        expected = np.array([[0.0, 1.0], [2.0, np.log2(24.0)]])
        np.testing.assert_allclose(analysis.layer_temperatures, expected, rtol=1e-12)
        np.testing.assert_allclose(analysis["temperatures"], expected.mean(axis=1), rtol=1e-12)
        assert set(analysis) == {"learning_rates", "temperatures", "layer_temperatures", "counts"}
        np.testing.assert_array_equal(analysis["counts"], counts)
