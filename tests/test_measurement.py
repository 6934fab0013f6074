"""The typed records of keras_actcoolr.measurement and keras_actcoolr.records, against hand counts (docs/method.md#definitions)."""

import dataclasses

import numpy as np
import pytest
from scipy import stats

import keras_actcoolr as kac
from keras_actcoolr import analysis, measurement
from keras_actcoolr.measurement import Measurement, RangeCounts, range_measure, record_measure
from keras_actcoolr.records import RangeAnalysis


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


class TestRangeAnalysis:
    def test_old_names_are_the_one_type(self):
        assert RangeCounts is RangeAnalysis is kac.RangeAnalysis is analysis.RangeAnalysis
        assert measurement.RangeAnalysis is RangeAnalysis

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

    def test_one_rate_reads_like_the_dict_of_measure_temperature(self):
        # Layer a: 6 of 8 positions unchanged, 30 of 32 group positions; layer b: 1 of 4, 3 of 8.
        counts = np.array([[[6.0, 8.0, 30.0, 32.0], [1.0, 4.0, 3.0, 8.0]]])
        single = RangeAnalysis([0.2], counts, layer_names=("a", "b"), examples=4)
        layers = {"a": -np.log2(6 / 8), "b": -np.log2(1 / 4)}
        groups = {"a": -np.log2(30 / 32), "b": -np.log2(3 / 8)}
        assert single.learning_rate == 0.2 and single["learning_rate"] == 0.2
        assert single.layers == pytest.approx(layers) and single["layers"] == pytest.approx(layers)
        assert single.temperature == pytest.approx((layers["a"] + layers["b"]) / 2)
        assert single.unchanged == {"a": 6.0, "b": 1.0} and single.positions == {"a": 8.0, "b": 4.0}
        assert single.group_layers == pytest.approx(groups)
        assert single.group_temperature == pytest.approx((groups["a"] + groups["b"]) / 2)
        assert single.group_unchanged == {"a": 30.0, "b": 3.0} and single.group_positions == {"a": 32.0, "b": 8.0}
        assert single["examples"] == 4
        keys = {"learning_rate", "temperature", "layers", "unchanged", "positions", "examples"}
        assert keys | {f"group_{key}" for key in ("temperature", "layers", "unchanged", "positions")} <= set(single)
        assert "sigma" not in single and single.get("sigma") is None  # not fitted: no key

    def test_many_rates_have_no_single_rate_fields(self):
        analysis_ = RangeAnalysis([0.1, 1.0], np.ones((2, 1, 2)), layer_names=("a",))
        assert (analysis_.learning_rate, analysis_.temperature, analysis_.layers) == (None, None, None)
        assert "temperature" not in analysis_ and "layers" not in analysis_

    def test_fitted_recovers_a_known_erf_model(self):
        # Counts of the erf model itself: U = N * (1 - P(lr)) of N = 2**40 positions at each rate.
        rates = np.concatenate([[0.0], kac.temperature.RANGE_LEARNING_RATES])
        sigma, mu, positions = 1.3, np.log(0.05), 2.0**40
        unchanged = positions * (1 - stats.norm.cdf((np.log(np.maximum(rates, 1e-300)) - mu) / sigma))
        counts = np.stack([unchanged, np.full_like(unchanged, positions)], axis=-1)[:, None, :]
        fitted = RangeAnalysis(rates, counts).fitted()
        np.testing.assert_allclose([fitted.sigma, fitted.mu], [sigma, mu], rtol=1e-4)
        assert fitted.residual < 1e-6
        assert fitted["sigma"] == fitted.sigma and (fitted.group_sigma, fitted.group_mu) == (None, None)
        expected = np.exp(mu + sigma * stats.norm.ppf(1 - 2.0**-1.5))
        np.testing.assert_allclose(fitted.predicted_learning_rate(1.5), expected, rtol=1e-3)

    def test_fitted_without_a_fit_gives_nones(self):
        flat = RangeAnalysis([0.1, 1.0], np.array([[[4.0, 8.0]], [[4.0, 8.0]]])).fitted()
        assert (flat.sigma, flat.mu, flat.residual) == (None, None, None)
        with pytest.raises(ValueError, match="could not be fitted"):
            flat.predicted_learning_rate(1.0)

    def test_combined_adds_counts_examples_and_batches(self):
        first = RangeAnalysis([0.1, 1.0], np.array([[[8.0, 8.0]], [[1.0, 8.0]]]), examples=2, batches=1)
        second = RangeAnalysis([0.1, 1.0], np.array([[[4.0, 8.0]], [[3.0, 8.0]]]), examples=2, batches=1)
        pooled = first.combined(second)
        np.testing.assert_array_equal(pooled.counts, [[[12.0, 16.0]], [[4.0, 16.0]]])
        np.testing.assert_allclose(pooled.temperatures, [-np.log2(12 / 16), -np.log2(4 / 16)])
        assert (pooled.examples, pooled.batches) == (4, 2)
        with pytest.raises(ValueError, match="same learning rates"):
            first.combined(RangeAnalysis([0.1, 2.0], first.counts))

    def test_measure_and_the_controller_keys(self):
        counts = np.array([[[8.0, 8.0, 16.0, 16.0]], [[2.0, 8.0, 12.0, 16.0]]])
        grouped = range_measure(RangeAnalysis([0.1, 1.0], counts), "grouped")
        assert grouped["measure"] == "grouped" and grouped.measured == "grouped"
        np.testing.assert_array_equal(grouped.counts, counts[..., 2:])
        kept = grouped.replace(step_temperature=0.5, sigma=2.0, mu=-1.0)
        assert (kept["step_temperature"], kept["sigma"], kept["mu"]) == (0.5, 2.0, -1.0)
        with pytest.raises(ValueError, match="measure"):
            RangeAnalysis([0.1], np.ones((1, 1, 2))).measure("grouped")

    def test_layer_and_as_dict(self):
        analysis_ = RangeAnalysis(
            [0.1, 1.0], np.array([[[8.0, 8.0], [4.0, 8.0]], [[2.0, 8.0], [1.0, 8.0]]]), layer_names=["a", "b"]
        )
        np.testing.assert_allclose(analysis_.layer("b"), [1.0, 3.0])
        with pytest.raises(ValueError, match="Received: name='c'"):
            analysis_.layer("c")
        plain = analysis_.as_dict()
        assert plain["layer_names"] == ["a", "b"] and plain["sigma"] is None
        assert plain["layer_temperatures"] == [[0.0, 1.0], [2.0, 3.0]] and plain["temperatures"] == [0.5, 2.5]
        assert plain["learning_rates"] == [0.1, 1.0]


class TestRecordMeasure:
    def test_typed_records_and_their_dicts_agree(self):
        record = Measurement.from_counts(0, 0.1, ["a"], np.array([[2.0, 8.0, 0.0, 4.0, 6.0, 16.0]]))
        for measure in ("vector", "grouped"):
            assert record_measure(record, measure) == record_measure(dict(record), measure)
        assert record_measure(record, "grouped") == ({"a": -np.log2(6 / 16)}, {"a": 16.0}, ["a"])
