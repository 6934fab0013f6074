"""The layer filter reads a layer whose whole-vector count saturates through its groups of 8 channels."""

import math
import warnings

import keras
import numpy as np
import pytest
from scipy import optimize, special, stats

import keras_actcoolr as kac
from keras_actcoolr.temperature import is_wide, vector_temperature_from_groups, wide_layer_counts

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_independent_flips_give_the_vector_temperature_of_the_groups():
    # 20 channels: groups of 8, 8 and 4; every channel flips independently with probability p.
    rng = np.random.default_rng(0)
    channels, positions, p = 20, 200_000, 0.02
    flips = rng.random((positions, channels)) < p
    vector_unchanged = np.sum(~flips.any(axis=1))
    group_unchanged = sum(np.sum(~flips[:, a : a + 8].any(axis=1)) for a in range(0, channels, 8))
    group_positions = 3 * positions
    t_vector = -math.log2(vector_unchanged / positions)
    t_group = -math.log2(group_unchanged / group_positions)
    # Groups of 8, 8 and 4 channels: with independent flips temperatures add up over the groups
    # (T is -log2 of an unchanged share), so 3 times their pooled temperature is the vector's, up to
    # the pooling of unequal groups (about 1 % here) and the sampling noise.
    estimate = vector_temperature_from_groups(t_group, positions, group_positions)
    assert estimate == pytest.approx(t_vector, rel=0.02)
    # Equal groups (16 channels): exact up to the sampling noise.
    flips = flips[:, :16]
    vector_unchanged = np.sum(~flips.any(axis=1))
    group_unchanged = sum(np.sum(~flips[:, a : a + 8].any(axis=1)) for a in (0, 8))
    estimate = vector_temperature_from_groups(-math.log2(group_unchanged / (2 * positions)), positions, 2 * positions)
    assert estimate == pytest.approx(-math.log2(vector_unchanged / positions), rel=0.02)


def test_closed_form_and_empty_layer():
    assert vector_temperature_from_groups(0.5, 100, 300) == pytest.approx(1.5)
    # A 1024-unit layer (128 groups) read as 64 of its channels (8 groups).
    assert vector_temperature_from_groups(0.25, 10, 1280, max_groups=8) == pytest.approx(2.0)
    assert vector_temperature_from_groups(0.25, 10, 40, max_groups=8) == pytest.approx(1.0)
    assert vector_temperature_from_groups(0.7, 0.0, 0.0) == 0.0
    np.testing.assert_allclose(vector_temperature_from_groups([0.1, 0.2], [10, 4], [80, 4]), [0.8, 0.2])


def test_wide_layer_counts_read_a_wide_layer_as_64_channels():
    # Per rate: a 32-channel layer (4 groups per position), a 128-channel one (16 groups), and a
    # 128-channel one without an unchanged group (its count floored at half a position).
    counts = np.array([[[7.0, 10.0], [6.0, 10.0], [0.0, 10.0]], [[2.0, 10.0], [1.0, 10.0], [0.0, 10.0]]])
    group_counts = np.array([[[35.0, 40.0], [150.0, 160.0], [0.0, 160.0]], [[20.0, 40.0], [90.0, 160.0], [0.0, 160.0]]])
    read = wide_layer_counts(counts, group_counts)
    np.testing.assert_array_equal(read[..., 1], counts[..., 1])  # positions kept
    np.testing.assert_array_equal(read[:, 0], counts[:, 0])  # 4 groups: as counted
    # A wide layer reads 8 times its grouped temperature -log2(U_g / N_g) (U_g at least 0.5).
    grouped = -np.log2(np.array([[150 / 160, 0.5 / 160], [90 / 160, 0.5 / 160]]))
    np.testing.assert_allclose(-np.log2(read[:, 1:, 0] / 10.0), 8 * grouped, rtol=1e-12)
    # No positions: nothing to read.
    empty = wide_layer_counts(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)))
    np.testing.assert_array_equal(empty, np.zeros((1, 1, 2)))


def test_a_layer_is_wide_above_64_channels():
    # Groups of 8 channels per position: 64 channels are 8 groups (not wide), 72 are 9 (wide).
    np.testing.assert_array_equal(is_wide([10, 10, 10, 0], [80, 90, 1280, 40]), [False, True, True, False])


def wide_mlp(seed=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    h = keras.layers.Dense(8, activation="relu", name="narrow")(inputs)
    h = keras.layers.Dense(96, activation="relu", name="wide")(h)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3)(h)))
    model.compile(optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.5), momentum=0.0), loss=LOSS)
    return model


def fit_wide_mlp(**switches):
    """One epoch of `wide_mlp` at batch 8 under `ActCooLR(sigma=1.0, every_step=2, **switches)`."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = wide_mlp()
    controller = kac.ActCooLR(sigma=1.0, every_step=2, initial_learning_rate=None, **switches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[controller], verbose=0, shuffle=False)
    return controller


def followed_temperatures(record):
    """The layer filter's reading of a record, by the rules of docs/method.md (layer filter)."""
    followed = []
    for name in ("narrow_relu", "wide_relu"):
        groups = record["group_positions"][name] / record["positions"][name]
        if record["dead"][name] >= 1.0:
            continue
        if groups > 8 or name in record["saturated"]:
            if name in record["group_saturated"]:
                continue  # saturated in both counts: left out
            followed.append(min(groups, 8) * record["group_layers"][name])
        else:
            followed.append(record["layers"][name])
    return followed


def test_a_wide_or_saturated_layer_is_followed_through_its_groups(fresh_session):
    controller = fit_wide_mlp(collapse_guard=False)
    read_through_groups = 0
    for record in controller.measurements:
        # 8 positions (the batch), 96 channels: 12 groups of 8 per position, read as 8 groups.
        assert record["positions"]["wide_relu"] == 8 and record["group_positions"]["wide_relu"] == 96
        followed = followed_temperatures(record)
        if not followed:
            assert record["control_temperature"] is None
            continue
        # The probability of the mean temperature, not trusted below 0.5 / N.
        probability = max(1 - 2.0 ** -np.mean(followed), 0.5 / 8)
        control = -math.log2(1 - probability)
        assert record["control_temperature"] == pytest.approx(control, rel=1e-9)
        read_through_groups += "wide_relu" not in record["group_saturated"]
    assert read_through_groups >= 2, "the wide layer was never read through its groups: the test proves nothing"


def test_the_paper_controller_has_no_such_reading(fresh_session):
    controller = fit_wide_mlp(guards=False)
    for record in controller.measurements:
        assert record["control_temperature"] == pytest.approx(record["temperature"], rel=1e-12)


def erf_probability(lr, sigma, mu):
    return 0.5 * (1 + special.erf((np.log(lr) - mu) / (sigma * math.sqrt(2))))


@pytest.mark.parametrize("switches", [{}, {"layer_filter": False}, {"guards": False}])
def test_the_first_range_analysis_reads_the_wide_layer_as_the_controller_does(fresh_session, switches):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    # The analysis before the first step, counted on the same weights and batch outside `fit`.
    raw = kac.lr_range_analysis(wide_mlp(), (x[:8], y[:8]), batch_size=8)
    model = wide_mlp()
    controller = kac.ActCooLR(start_temperature=1.0, every_step=2, initial_learning_rate="auto", **switches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[controller], verbose=0, shuffle=False)
    unchanged, positions = raw.counts[..., 0], raw.counts[..., 1]
    layers = -np.log2(np.maximum(unchanged, 0.5) / positions)
    group_unchanged, group_positions = raw.group_counts[..., 0], raw.group_counts[..., 1]
    assert np.all(group_positions[:, 1] == 12 * positions[:, 1])  # 96 channels: 12 groups, read as 8
    if controller.guard_on("layer_filter"):
        grouped = -np.log2(np.maximum(group_unchanged[:, 1], 0.5) / group_positions[:, 1])
        # 8 times the grouped temperature, at most the ceiling log2(2N) that any count of N positions reads.
        layers[:, 1] = np.minimum(8 * grouped, np.log2(2 * positions[:, 1]))
        assert np.any(layers[:, 1] < -np.log2(np.maximum(unchanged[:, 1], 0.5) / positions[:, 1]) - 0.1)
    analysis = controller.range_analysis
    np.testing.assert_allclose(analysis["layer_temperatures"], layers, rtol=1e-9, atol=1e-12)
    # The first rate: where the erf model fitted to those temperatures gives the start temperature.
    probability = 1 - 2.0 ** -layers.mean(axis=1)
    (sigma, mu), _ = optimize.curve_fit(erf_probability, raw.learning_rates, probability, p0=(1.0, 0.0))
    expected = math.exp(mu + sigma * stats.norm.ppf(1 - 2.0**-1.0))
    assert controller.auto_learning_rate == pytest.approx(expected, rel=1e-4)


def test_read_range_leaves_what_it_cannot_read_as_it_is():
    from keras_actcoolr.callbacks.guards import LayerFilter

    counts = np.array([[[1.0, 10.0]]])
    group_counts = np.array([[[2.0, 160.0]]])  # 16 groups per position: a wide layer
    analysis = kac.RangeAnalysis([0.1], counts, group_counts=group_counts)
    read = LayerFilter("vector").read_range(analysis)
    assert read.counts[0, 0, 0] == pytest.approx(10.0 * (2.0 / 160.0) ** 8)
    assert LayerFilter("grouped").read_range(analysis) is analysis  # the grouped count needs no width rule
    mapping = {"learning_rates": [0.1], "counts": counts}
    assert LayerFilter("vector").read_range(mapping) is mapping
    ungrouped = kac.RangeAnalysis([0.1], counts)  # no grouped counts: nothing to read through
    assert LayerFilter("vector").read_range(ungrouped) is ungrouped
