"""The grouped measurement: patterns of groups of 8 channels, against a NumPy reference of its definition."""

import math

import keras
import numpy as np
import pytest

import keras_actcoolr as kac
from keras_actcoolr.layers import measuring
from keras_actcoolr.measurement import Measurement, RangeCounts

GROUP = 8  # docs/method.md: a group is 8 consecutive channels along the channel axis


def measure(layer, before, after):
    """`(unchanged, positions, group unchanged, group positions)` of one record/compare measurement."""
    with measuring() as measurement:
        layer(before)
        measurement.start_compare()
        layer(after)
        counts = measurement.layer_counts(layer) + measurement.group_counts(layer)
    return [float(c) for c in counts]


def reference(before, after, axis=-1, threshold=0.0, max_value=None):
    """The definition in NumPy: piece indices, then whole-vector and per-group comparisons."""

    def pieces(z):
        p = (z > threshold).astype(int)
        if max_value is not None:
            p = p + (z >= max_value).astype(int)
        return np.moveaxis(p, axis, -1)

    p0, p1 = pieces(before), pieces(after)
    channels = p0.shape[-1]
    positions = p0[..., 0].size
    same = p0 == p1
    groups = math.ceil(channels / GROUP)
    group_same = [np.all(same[..., g * GROUP : (g + 1) * GROUP], axis=-1) for g in range(groups)]
    return [
        float(np.all(same, axis=-1).sum()),
        float(positions),
        float(sum(s.sum() for s in group_same)),
        float(positions * groups),
    ]


class TestHandCounts:
    def test_one_channel_of_the_second_group_flips_at_three_positions(self):
        # 5 positions x 16 channels = 2 groups per position, 10 group positions.
        before = np.full((5, 16), -1.0, "float32")
        after = before.copy()
        after[[0, 2, 4], 11] = 1.0  # channel 11 is in the second group (channels 8..15)
        counts = measure(kac.APTReLU(), before, after)
        # Whole vectors: 3 of 5 changed. Groups: 3 of 10 changed.
        assert counts == [2.0, 5.0, 7.0, 10.0]

    def test_flips_in_both_groups_of_one_position_count_twice(self):
        before = np.full((2, 16), 1.0, "float32")
        after = before.copy()
        after[0, [0, 15]] = -1.0
        assert measure(kac.APTReLU(), before, after) == [1.0, 2.0, 2.0, 4.0]

    def test_channels_not_a_multiple_of_eight(self):
        # 10 channels: groups 0..7 and 8..9 (a short group), 3 positions -> 6 group positions.
        before = np.full((3, 10), 1.0, "float32")
        after = before.copy()
        after[1, 9] = -1.0
        assert measure(kac.APTReLU(), before, after) == [2.0, 3.0, 5.0, 6.0]

    def test_max_value_plane_belongs_to_the_same_group(self):
        # relu6: channel 3 goes from the linear piece to the clipped one (only its second bit-plane
        # changes); channel 12 stays clipped. One group of the two changes, at one position.
        before = np.full((1, 16), 3.0, "float32")
        before[0, 12] = 7.0
        after = before.copy()
        after[0, 3] = 7.0
        assert measure(kac.APTReLU(max_value=6.0), before, after) == [0.0, 1.0, 1.0, 2.0]


LAYOUTS = {
    "dense": ((6, None), -1),
    "conv_last": ((3, 4, 5, None), -1),
    "conv_first": ((3, None, 4, 5), 1),
    "sequence_middle": ((4, None, 6), 1),
}


class TestAgainstNumpy:
    @pytest.mark.parametrize("channels", [5, 8, 9, 20, 100])
    @pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
    @pytest.mark.parametrize("max_value", [None, 1.0], ids=["relu", "clipped"])
    def test_random_pre_and_post_activations(self, channels, layout, max_value):
        shape, axis = LAYOUTS[layout]
        shape = tuple(channels if s is None else s for s in shape)
        rng = np.random.default_rng(channels)
        before = rng.normal(size=shape).astype("float32")
        # Few changes, so that both counts are far from 0 and from all positions.
        flip = rng.random(shape) < 0.3 / channels
        after = np.where(flip, rng.normal(scale=2.0, size=shape), before).astype("float32")
        layer = kac.APTReLU(max_value=max_value, axis=axis)
        counts = measure(layer, before, after)
        expected = reference(before, after, axis=axis, max_value=max_value)
        assert counts == expected
        if channels <= GROUP:
            # One group per position: the grouped measurement is the paper's.
            assert counts[2:] == counts[:2]

    def test_the_grouped_temperature_is_cooler_for_wide_layers(self):
        rng = np.random.default_rng(3)
        before = rng.normal(size=(16, 256)).astype("float32")
        after = before + rng.normal(scale=0.05, size=before.shape).astype("float32")
        unchanged, positions, group_unchanged, group_positions = measure(kac.APTReLU(), before, after)
        vector = kac.temperature.layer_temperature(unchanged, positions)
        grouped = kac.temperature.layer_temperature(group_unchanged, group_positions)
        assert group_positions == 16 * 32
        assert 0 < grouped < vector


class TestRecords:
    def test_measurement_from_six_columns(self):
        names = ["a", "b"]
        counts = np.array([[9.0, 12.0, 0.0, 16.0, 30.0, 32.0], [2.0, 8.0, 1.0, 16.0, 5.0, 16.0]])
        record = Measurement.from_counts(3, 0.1, names, counts)
        assert record["layers"] == pytest.approx({"a": -np.log2(9 / 12), "b": -np.log2(2 / 8)})
        assert record["group_layers"] == pytest.approx({"a": -np.log2(30 / 32), "b": -np.log2(5 / 16)})
        assert record["group_temperature"] == pytest.approx((-np.log2(30 / 32) - np.log2(5 / 16)) / 2)
        assert record["group_positions"] == {"a": 32.0, "b": 16.0}
        assert record["saturated"] == ["b"]  # 2 < 8 unchanged positions (a: 9)
        assert record["group_saturated"] == ["b"]  # 5 < 8 (a: 30)
        assert record.measure("grouped") == (record["group_layers"], record["group_positions"], ["b"])

    def test_measurement_from_four_columns_has_no_grouped_keys(self):
        record = Measurement.from_counts(0, 0.1, ["a"], np.array([[6.0, 8.0, 0.0, 16.0]]))
        assert "group_layers" not in record
        with pytest.raises(ValueError, match="measure"):
            record.measure("grouped")

    def test_range_counts_split_four_columns(self):
        rates = np.array([0.1, 1.0])
        counts = np.array([[[8.0, 8.0, 16.0, 16.0]], [[2.0, 8.0, 12.0, 16.0]]])
        analysis = RangeCounts(rates, counts)
        assert analysis.counts.shape == (2, 1, 2)
        np.testing.assert_allclose(analysis.temperatures, [0.0, 2.0])
        np.testing.assert_allclose(analysis.group_temperatures, [0.0, -np.log2(12 / 16)])
        grouped = analysis.measure("grouped")
        np.testing.assert_allclose(grouped.temperatures, analysis.group_temperatures)
        np.testing.assert_allclose(analysis.measure("vector").counts, analysis.counts)


def _model(width=32):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(width, activation="relu")(inputs)
    x = keras.layers.Dense(width, activation="relu")(x)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(x)))
    model.compile(optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.05)), loss="sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0).astype("int64")


class TestControllers:
    @pytest.mark.parametrize("measure", ["grouped", "vector"])
    def test_actcoolr_follows_the_measure_it_was_given(self, measure):
        model = _model()
        x, y = _data()
        controller = kac.ActCooLR(measure=measure, sigma=1.0, initial_learning_rate=None, guards=False, every_step=2)
        model.fit(x, y, batch_size=16, epochs=2, callbacks=[controller], verbose=0)
        records = controller.measurements
        assert records
        differs = False
        for record in records:
            assert record["measure"] == measure
            followed = record["group_layers"] if measure == "grouped" else record["layers"]
            # guards=False: the network temperature is the mean of the layers' (no filter).
            assert record["control_temperature"] == pytest.approx(np.mean(list(followed.values())), rel=1e-9)
            differs |= record["group_temperature"] != pytest.approx(record["temperature"])
        assert differs  # 32 channels: 4 groups per position, the two measures differ

    def test_actcoolr_fits_sigma_to_the_grouped_analysis(self):
        model = _model()
        x, y = _data()
        controller = kac.ActCooLR(measure="grouped", sigma_examples=16)
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[controller], verbose=0)
        analysis = controller.range_analysis
        assert analysis["measure"] == "grouped"
        counts = np.asarray(analysis["counts"])
        expected = kac.temperature.layer_temperature(counts[..., 0], counts[..., 1]).mean(axis=1)
        np.testing.assert_allclose(analysis["temperatures"], expected)
        # Group positions: 16 examples x 4 groups of the 32 channels, at every rate and layer.
        np.testing.assert_array_equal(counts[..., 1], 16 * 4)
        # The pooled state holds the followed measure's counts in its [25, L, 2] shape.
        pooled = kac.state.controller_state(model.optimizer)["sigma"].read().pool_counts
        assert pooled.shape == (25, 2, 2)
        batches = pooled[0, 0, 1] / (16 * 4)
        assert batches >= 1 and batches == int(batches)

    def test_dynamic_follows_the_measure_it_was_given(self):
        model = _model()
        x, y = _data()
        controller = kac.DynamicActCooLR(measure="grouped", every_step=2)
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[controller], verbose=0)
        for record in controller.history:
            probabilities = kac.temperature.temperature_to_probability(np.array(list(record["group_layers"].values())))
            assert record["probability"] == pytest.approx(np.mean(probabilities), rel=1e-9)
            assert record["measure"] == "grouped"

    @pytest.mark.parametrize("cls", [kac.ActCooLR, kac.DynamicActCooLR])
    def test_unknown_measure_is_refused(self, cls):
        with pytest.raises(ValueError, match="measure='patterns'"):
            cls(measure="patterns")
