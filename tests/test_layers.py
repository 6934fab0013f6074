"""APTReLU: outputs against keras.layers.ReLU and NumPy, pattern counts on hand-built inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_actcoolr as kac
from keras_actcoolr.layers import measuring

RELU_ARGUMENTS = {
    "relu": {},
    "relu6": {"max_value": 6.0},
    "leaky": {"negative_slope": 0.3},
    "threshold": {"threshold": 1.0},
    "clipped": {"max_value": 1.0},
    "clipped_leaky_threshold": {"max_value": 4.0, "negative_slope": 0.1, "threshold": 0.5},
}

SHAPES = {
    "rank2": (4, 7),
    "rank3": (3, 5, 4),
    "rank4": (2, 4, 3, 5),
    "rank5": (2, 3, 2, 4, 3),
}

# Layer dtype policy -> dtype of the inputs and outputs of the layer.
POLICIES = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "mixed_float16": "float16",
    "mixed_bfloat16": "bfloat16",
}


def random_inputs(shape, arguments, seed=0):
    """Normal values spread over every piece, plus the exact piece boundaries."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=4.0, size=shape).astype("float32")
    boundaries = [0.0, arguments.get("threshold", 0.0), arguments.get("max_value") or 0.0]
    flat = x.reshape(-1)
    flat[: len(boundaries)] = boundaries
    return x


def numpy_relu(x, max_value=None, negative_slope=0.0, threshold=0.0):
    """The piecewise function of keras.layers.ReLU, written from its documentation."""
    y = np.where(x > threshold, x, negative_slope * (x - threshold))
    if max_value is not None:
        y = np.minimum(y, max_value)
    return y


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32"))


def measure(layer, before, after):
    """`(unchanged, positions)` of one record/compare measurement, as Python floats."""
    with measuring() as measurement:
        layer(before)
        measurement.start_compare()
        layer(after)
        unchanged, positions = measurement.layer_counts(layer)
    return float(unchanged), float(positions)


def expected_temperature(changed, positions):
    """-log2(unchanged / positions), capped at 0.5 unchanged positions (docs/method.md#definitions)."""
    return -np.log2(max(positions - changed, 0.5) / positions)


class TestOutputs:
    @pytest.mark.parametrize("policy", list(POLICIES), ids=list(POLICIES))
    @pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
    @pytest.mark.parametrize("arguments", list(RELU_ARGUMENTS.values()), ids=list(RELU_ARGUMENTS))
    def test_output_equals_keras_relu(self, arguments, shape, policy):
        dtype = POLICIES[policy]
        x = keras.ops.cast(random_inputs(shape, arguments), dtype)
        layer = kac.APTReLU(**arguments, dtype=policy)
        reference = keras.layers.ReLU(**arguments, dtype=policy)
        outputs, expected = layer(x), reference(x)
        assert keras.backend.standardize_dtype(outputs.dtype) == dtype
        assert keras.backend.standardize_dtype(outputs.dtype) == keras.backend.standardize_dtype(expected.dtype)
        np.testing.assert_array_equal(to_numpy(outputs), to_numpy(expected))

    @pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
    @pytest.mark.parametrize("arguments", list(RELU_ARGUMENTS.values()), ids=list(RELU_ARGUMENTS))
    def test_output_equals_numpy_reference(self, arguments, shape):
        x = random_inputs(shape, arguments, seed=1)
        outputs = kac.APTReLU(**arguments)(x)
        np.testing.assert_allclose(to_numpy(outputs), numpy_relu(x, **arguments), rtol=1e-6, atol=1e-7)

    def test_output_equals_keras_relu_in_functional_model(self):
        keras.utils.clear_session()
        inputs = keras.Input((5, 3))
        outputs = kac.APTReLU(max_value=2.0, negative_slope=0.2)(inputs)
        model = keras.Model(inputs, outputs)
        x = random_inputs((4, 5, 3), {"max_value": 2.0})
        expected = keras.layers.ReLU(max_value=2.0, negative_slope=0.2)(x)
        np.testing.assert_array_equal(model.predict(x, verbose=0), to_numpy(expected))


# name -> (APTReLU arguments, value before, value after on the same piece, value after on another piece)
PIECES = {
    "relu_off_to_on": ({}, -1.0, -2.0, 0.5),
    "relu_on_to_off": ({}, 2.0, 5.0, -1.0),
    "relu6_linear_to_saturated": ({"max_value": 6.0}, 3.0, 5.0, 7.0),
    "relu6_saturated_to_linear": ({"max_value": 6.0}, 7.0, 100.0, 5.5),
    "relu6_off_to_saturated": ({"max_value": 6.0}, -1.0, -3.0, 6.0),
    "threshold_below_to_above": ({"threshold": 1.0}, 0.5, -3.0, 1.5),
    "leaky_negative_to_positive": ({"negative_slope": 0.3}, -1.0, -5.0, 0.25),
}

# name -> (input shape, channel axis); positions N = product of the non-channel axes.
LAYOUTS = {
    "dense": ((7, 5), -1),
    "sequence_channels_last": ((3, 4, 5), -1),
    "conv_channels_last": ((3, 4, 5, 6), -1),
    "conv_channels_first": ((3, 6, 4, 5), 1),
    "conv3d_channels_first": ((2, 3, 2, 3, 4), 1),
}

CHANGED_FRACTIONS = {"none": 0.0, "one": None, "third": 1 / 3, "all": 1.0}


def positions_of(shape, axis):
    return int(np.prod(shape)) // shape[axis]


def flipped_inputs(shape, axis, base, same, changed, k, seed=0):
    """`before` filled with `base`; `after` with `same` except at exactly `k` positions.

    At each of the `k` positions a random non-empty subset of its channels moves
    to the value `changed` (another piece); everywhere else every unit moves
    to `same`, a different value on the same piece.
    """
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    channels_last = tuple(np.delete(np.array(shape), axis % len(shape))) + (channels,)
    n = positions_of(shape, axis)
    after = np.full((n, channels), same, dtype="float32")
    for row in rng.choice(n, size=k, replace=False):
        subset = rng.random(channels) < 0.5
        subset[rng.integers(channels)] = True
        after[row, subset] = changed
    after = np.moveaxis(after.reshape(channels_last), -1, axis)
    before = np.full(shape, base, dtype="float32")
    return before, np.ascontiguousarray(after)


def changed_count(fraction, n):
    return 1 if fraction is None else int(round(fraction * n))


class TestCounts:
    @pytest.mark.parametrize("fraction", list(CHANGED_FRACTIONS.values()), ids=list(CHANGED_FRACTIONS))
    @pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
    @pytest.mark.parametrize("piece", list(PIECES.values()), ids=list(PIECES))
    def test_counts_positions_whose_pattern_vector_changed(self, piece, layout, fraction):
        arguments, base, same, changed = piece
        shape, axis = layout
        n = positions_of(shape, axis)
        k = changed_count(fraction, n)
        before, after = flipped_inputs(shape, axis, base, same, changed, k)
        layer = kac.APTReLU(axis=axis, **arguments)
        unchanged, positions = measure(layer, before, after)
        assert positions == n
        assert unchanged == n - k
        np.testing.assert_allclose(
            kac.temperature.layer_temperature(unchanged, positions), expected_temperature(k, n), rtol=1e-12
        )

    @pytest.mark.parametrize("axis", [1, 2, 3], ids=["axis1", "axis2", "axis3"])
    def test_channel_axis_decides_what_a_position_is(self, axis):
        # One unit flips: whatever the channel axis, exactly one position changed.
        shape = (2, 3, 4, 5)
        before = np.full(shape, -1.0, dtype="float32")
        after = before.copy()
        after[1, 2, 3, 4] = 1.0
        unchanged, positions = measure(kac.APTReLU(axis=axis), before, after)
        n = int(np.prod(shape)) // shape[axis]
        assert (unchanged, positions) == (n - 1, n)

    def test_whole_row_of_flips_on_one_channel_changes_every_position_once(self):
        # Channel 0 flips everywhere: every position changed, each counted once.
        before = np.full((4, 3, 3, 2), -1.0, dtype="float32")
        after = before.copy()
        after[..., 0] = 1.0
        assert measure(kac.APTReLU(), before, after) == (0.0, 36.0)
        np.testing.assert_allclose(kac.temperature.layer_temperature(0.0, 36.0), -np.log2(0.5 / 36), rtol=1e-12)

    def test_saturation_counts_as_a_piece_only_with_max_value(self):
        # 3 -> 7 is linear -> saturated for ReLU6, but the same piece for a plain ReLU.
        before = np.full((5, 4), 3.0, dtype="float32")
        after = before.copy()
        after[[0, 3], 1] = 7.0
        assert measure(kac.APTReLU(max_value=6.0), before, after) == (3.0, 5.0)
        assert measure(kac.APTReLU(), before, after) == (5.0, 5.0)

    def test_threshold_moves_the_piece_boundary(self):
        # 0.5 -> 0.8: above 0 throughout (no change for ReLU), below -> above for threshold 0.6.
        before = np.full((6, 2), 0.5, dtype="float32")
        after = before.copy()
        after[[1, 2, 4], 0] = 0.8
        assert measure(kac.APTReLU(threshold=0.6), before, after) == (3.0, 6.0)
        assert measure(kac.APTReLU(), before, after) == (6.0, 6.0)

    @pytest.mark.parametrize("policy", list(POLICIES), ids=list(POLICIES))
    def test_counts_under_dtype_policies(self, policy):
        shape, axis = LAYOUTS["conv_channels_last"]
        arguments, base, same, changed = PIECES["relu6_saturated_to_linear"]
        n = positions_of(shape, axis)
        before, after = flipped_inputs(shape, axis, base, same, changed, k=7, seed=3)
        dtype = POLICIES[policy]
        layer = kac.APTReLU(dtype=policy, **arguments)
        unchanged, positions = measure(layer, keras.ops.cast(before, dtype), keras.ops.cast(after, dtype))
        assert (unchanged, positions) == (n - 7, n)

    def test_counts_accumulate_over_calls(self):
        layer = kac.APTReLU()
        first = flipped_inputs((4, 3), -1, -1.0, -2.0, 1.0, k=1, seed=0)
        second = flipped_inputs((6, 2, 3), -1, 1.0, 2.0, -1.0, k=5, seed=1)
        with measuring() as measurement:
            layer(first[0])
            layer(second[0])
            measurement.start_compare()
            layer(first[1])
            layer(second[1])
            unchanged, positions = measurement.layer_counts(layer)
        assert (float(unchanged), float(positions)) == ((4 - 1) + (12 - 5), 4 + 12)

    def test_more_calls_after_the_step_than_before_raise(self):
        layer = kac.APTReLU()
        x = np.ones((2, 3), dtype="float32")
        with measuring() as measurement:
            layer(x)
            measurement.start_compare()
            layer(x)
            with pytest.raises(RuntimeError, match="called more often"):
                layer(x)

    def test_layer_not_called_has_no_counts(self):
        layer, other = kac.APTReLU(), kac.APTReLU()
        x = np.ones((2, 3), dtype="float32")
        with measuring() as measurement:
            layer(x)
            measurement.start_compare()
            layer(x)
            assert [float(c) for c in measurement.layer_counts(other)] == [0.0, 0.0]

    @pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf_function"])
    def test_batch_size_may_change_between_measurements(self, traced):
        layer = kac.APTReLU(max_value=6.0)

        def run(before, after):
            with measuring() as measurement:
                layer(before)
                measurement.start_compare()
                layer(after)
                return measurement.layer_counts(layer)

        if traced:
            spec = tf.TensorSpec((None, 4, 4, 3), tf.float32)
            run = tf.function(run, input_signature=[spec, spec])
        full = flipped_inputs((5, 4, 4, 3), -1, 3.0, 4.0, 7.0, k=11, seed=0)
        partial = flipped_inputs((3, 4, 4, 3), -1, 3.0, 4.0, 7.0, k=4, seed=1)
        assert [float(c) for c in run(*full)] == [80 - 11, 80]
        assert [float(c) for c in run(*partial)] == [48 - 4, 48]
        if traced:
            assert run.experimental_get_tracing_count() == 1

    def test_outside_measuring_layer_records_nothing(self):
        arguments = {"max_value": 6.0}
        layer = kac.APTReLU(**arguments)
        before, after = flipped_inputs((4, 3, 3, 2), -1, 3.0, 4.0, 7.0, k=5, seed=0)
        outside = random_inputs((4, 3, 3, 2), arguments, seed=2)
        with measuring() as measurement:
            layer(before)
        np.testing.assert_array_equal(to_numpy(layer(outside)), to_numpy(keras.layers.ReLU(**arguments)(outside)))
        assert [float(c) for c in measurement.layer_counts(layer)] == [0.0, 0.0]
        with measuring(measurement):
            measurement.start_compare()
            layer(after)
            # The call outside was not recorded: the comparison is against `before`,
            # and there is no second recorded call to compare with.
            assert [float(c) for c in measurement.layer_counts(layer)] == [36 - 5, 36]
            with pytest.raises(RuntimeError, match="called more often after the optimizer step than before"):
                layer(after)


class TestSerialization:
    @pytest.mark.parametrize(
        "arguments",
        [
            {},
            {"max_value": 6.0},
            {"negative_slope": 0.2, "threshold": 0.5, "axis": 1},
            {"max_value": 3.0, "axis": 2, "dtype": "mixed_float16", "name": "named"},
        ],
        ids=["default", "relu6", "leaky_threshold_axis1", "policy_name_axis2"],
    )
    def test_get_config_round_trip(self, arguments):
        layer = kac.APTReLU(**arguments)
        config = layer.get_config()
        assert config["axis"] == arguments.get("axis", -1)
        for key in ("max_value", "negative_slope", "threshold"):
            assert config[key] == arguments.get(key, keras.layers.ReLU().get_config()[key])
        restored = kac.APTReLU.from_config(config)
        assert restored.get_config() == config
        assert restored.axis == layer.axis
        deserialized = keras.layers.deserialize(keras.layers.serialize(layer))
        assert isinstance(deserialized, kac.APTReLU)
        assert deserialized.get_config() == config

    def test_registered_for_serialization(self):
        assert keras.saving.get_registered_object("keras_actcoolr>APTReLU") is kac.APTReLU
        assert keras.saving.get_registered_name(kac.APTReLU) == "keras_actcoolr>APTReLU"

    @pytest.mark.parametrize(
        "data_format", ["channels_last", "channels_first"], ids=["channels_last", "channels_first"]
    )
    def test_save_and_load_functional_model(self, tmp_path, data_format):
        keras.utils.clear_session()
        keras.utils.set_random_seed(0)
        axis = -1 if data_format == "channels_last" else 1
        shape = (6, 6, 2) if data_format == "channels_last" else (2, 6, 6)
        inputs = keras.Input(shape)
        # Depthwise: a channels-first Conv2D has no CPU kernel without oneDNN; this one runs on every CPU.
        x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, data_format=data_format)(inputs)
        x = kac.APTReLU(max_value=0.5, negative_slope=0.1, axis=axis, name="apt")(x)
        outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
        model = keras.Model(inputs, outputs)
        path = str(tmp_path / "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        restored = loaded.get_layer("apt")
        assert isinstance(restored, kac.APTReLU)
        assert restored.get_config() == model.get_layer("apt").get_config()
        x = np.random.default_rng(0).normal(size=(4, *shape)).astype("float32")
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


class TestArguments:
    @pytest.mark.parametrize(
        "arguments, shape",
        [
            ({"axis": 0}, (2, 3)),
            ({"axis": -4}, (2, 3, 4, 5)),
            ({"axis": 4}, (2, 3, 4, 5)),
            ({"axis": -5}, (2, 3, 4, 5)),
            ({"axis": 2}, (2, 3)),
            ({}, (3,)),
            ({"axis": 1}, (3,)),
        ],
        ids=[
            "batch_axis",
            "batch_axis_negative",
            "axis_too_large",
            "axis_too_small",
            "axis_out_of_range_rank2",
            "rank1",
            "rank1_axis1",
        ],
    )
    def test_bad_axis_or_rank_raises_value_error(self, arguments, shape):
        layer = kac.APTReLU(**arguments)
        with pytest.raises(ValueError, match="rank >= 2" if len(shape) < 2 else "must name a non-batch axis"):
            layer(np.zeros(shape, dtype="float32"))

    def test_bad_axis_raises_value_error_on_symbolic_input(self):
        with pytest.raises(ValueError, match="axis"):
            kac.APTReLU(axis=3)(keras.Input((4, 5)))

    @pytest.mark.parametrize(
        "arguments",
        [
            {"max_value": -1.0},
            {"negative_slope": -0.1},
            {"threshold": -0.5},
            {"axis": 1.5},
            {"axis": "1"},
            {"axis": True},
        ],
        ids=["negative_max_value", "negative_slope", "negative_threshold", "float_axis", "str_axis", "bool_axis"],
    )
    def test_bad_argument_raises_value_error_at_construction(self, arguments):
        (name,) = arguments
        with pytest.raises(
            ValueError, match="`axis` must be an integer" if name == "axis" else f"{name} of a ReLU layer cannot be"
        ):
            kac.APTReLU(**arguments)
