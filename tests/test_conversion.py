"""convert(): ReLU-family activations become APTReLU, predictions and the original model unchanged."""

import json

import keras
import numpy as np
import pytest

import keras_actcoolr as kac

pytestmark = pytest.mark.usefixtures("fresh_session")


def random_inputs(model, batch=3, seed=0):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


def apt_arguments(model):
    """`{name: (max_value, negative_slope, threshold, axis)}` of the APTReLU layers of a model."""
    return {
        layer.name: (layer.max_value, layer.negative_slope, layer.threshold, layer.axis) for layer in model.apt_layers()
    }


def snapshot(model):
    """The configuration and weights of a model, to check that convert() leaves it alone."""
    return json.dumps(model.get_config(), sort_keys=True, default=str), [w.copy() for w in model.get_weights()]


def assert_unchanged(model, before):
    config, weights = snapshot(model)
    assert config == before[0]
    assert len(weights) == len(before[1])
    for current, kept in zip(weights, before[1]):
        np.testing.assert_array_equal(current, kept)
    assert not any(isinstance(layer, kac.APTReLU) for layer in model.layers)


def functional_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(5, 3, name="conv_linear")(x)
    x = keras.layers.Activation("relu", name="act")(x)
    x = keras.layers.ReLU(max_value=6.0, name="relu6")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, activation="relu", name="dense")(x)
    x = keras.layers.LeakyReLU(negative_slope=0.25, name="leaky")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="functional")


# Expected APTReLU layers of `functional_model()`: name -> (max_value, negative_slope, threshold, axis).
FUNCTIONAL_APT = {
    "conv_relu": (None, 0.0, 0.0, -1),
    "act": (None, 0.0, 0.0, -1),
    "relu6": (6.0, 0.0, 0.0, -1),
    "dense_relu": (None, 0.0, 0.0, -1),
    "leaky": (None, 0.25, 0.0, -1),
}


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
            keras.layers.ReLU(max_value=6.0, name="relu6"),
            keras.layers.Flatten(),
            keras.layers.Dense(5, name="hidden"),
            keras.layers.Activation("relu", name="act"),
            keras.layers.Dense(4, activation="relu", name="dense"),
            keras.layers.LeakyReLU(name="leaky"),
            keras.layers.Dense(2, name="logits"),
        ],
        name="sequential",
    )


SEQUENTIAL_APT = {
    "conv_relu": (None, 0.0, 0.0, -1),
    "relu6": (6.0, 0.0, 0.0, -1),
    "act": (None, 0.0, 0.0, -1),
    "dense_relu": (None, 0.0, 0.0, -1),
    # keras.layers.LeakyReLU's default slope is 0.3.
    "leaky": (None, 0.3, 0.0, -1),
}

BUILDERS = {
    "functional": (functional_model, FUNCTIONAL_APT),
    "sequential": (sequential_model, SEQUENTIAL_APT),
}


class TestConvert:
    @pytest.mark.parametrize("case", list(BUILDERS.values()), ids=list(BUILDERS))
    def test_predictions_and_apt_layers(self, case):
        build, expected = case
        model = build()
        before = snapshot(model)
        x = random_inputs(model)
        expected_predictions = model.predict(x, verbose=0)

        converted = kac.convert(model)

        assert isinstance(converted, kac.APTModel)
        assert converted.name == model.name
        assert apt_arguments(converted) == expected
        np.testing.assert_allclose(converted.predict(x, verbose=0), expected_predictions, rtol=1e-6)
        assert_unchanged(model, before)

    @pytest.mark.parametrize("case", list(BUILDERS.values()), ids=list(BUILDERS))
    def test_split_layers_keep_name_and_weights_without_activation(self, case):
        model = case[0]()
        converted = kac.convert(model)
        for name in ("conv", "dense"):
            original, split = model.get_layer(name), converted.get_layer(name)
            assert type(split) is type(original)
            assert split.get_config()["activation"] == "linear"
            assert original.get_config()["activation"] == "relu"
            for kept, copied in zip(original.get_weights(), split.get_weights()):
                np.testing.assert_array_equal(copied, kept)
        # Every layer that is not an APTReLU keeps the name and the weights of the original.
        # (Input layers are recreated by keras.models.clone_model and carry no weights.)
        for layer in converted.layers:
            if not isinstance(layer, (kac.APTReLU, keras.layers.InputLayer)):
                for kept, copied in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
                    np.testing.assert_array_equal(copied, kept)

    def test_converted_weights_are_copies(self):
        model = functional_model()
        converted = kac.convert(model)
        kernel = model.get_layer("dense").kernel
        kernel.assign(np.zeros(kernel.shape, dtype="float32"))
        assert np.any(converted.get_layer("dense").get_weights()[0] != 0.0)

    def test_name_argument(self):
        assert kac.convert(functional_model(), name="measured").name == "measured"

    @pytest.mark.parametrize(
        "activation, expected",
        [
            ("relu", (None, 0.0, 0.0)),
            ("relu6", (6.0, 0.0, 0.0)),
            # keras.activations.leaky_relu's default slope is 0.2.
            ("leaky_relu", (None, 0.2, 0.0)),
            (keras.activations.relu, (None, 0.0, 0.0)),
        ],
        ids=["relu", "relu6", "leaky_relu", "relu_callable"],
    )
    @pytest.mark.parametrize("where", ["dense", "activation_layer"], ids=["dense", "activation_layer"])
    def test_relu_family_activation_arguments(self, activation, expected, where):
        inputs = keras.Input((4,))
        if where == "dense":
            x = keras.layers.Dense(5, activation=activation, name="layer")(inputs)
            name = "layer_relu"
        else:
            x = keras.layers.Activation(activation, name="layer")(keras.layers.Dense(5)(inputs))
            name = "layer"
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        # Inputs large enough to reach the saturation of relu6.
        x = 20.0 * random_inputs(model, batch=8)
        converted = kac.convert(model)
        assert apt_arguments(converted) == {name: (*expected, -1)}
        np.testing.assert_allclose(converted.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)

    # TensorFlow runs a channels-first Conv2D on CPU only with its oneDNN kernels on; Keras runs
    # depthwise and 3-D channels-first convolutions on every CPU (the latter through XLA).
    @pytest.mark.parametrize(
        "layer, arguments, shape",
        [
            (keras.layers.Conv2D, (4, 3), (3, 7, 7)),
            (keras.layers.DepthwiseConv2D, (3,), (3, 7, 7)),
            (keras.layers.Conv3D, (4, 3), (3, 5, 5, 5)),
        ],
        ids=["conv2d", "depthwise_conv2d", "conv3d"],
    )
    def test_channels_first_convolution_gets_channel_axis_1(self, layer, arguments, shape, nchw_convolutions):
        inputs = keras.Input(shape)
        conv = layer(*arguments, data_format="channels_first", activation="relu", name="conv")
        x = conv(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        converted = kac.convert(model)  # symbolic: runs no convolution
        assert apt_arguments(converted) == {"conv_relu": (None, 0.0, 0.0, 1)}
        if type(conv) is keras.layers.Conv2D and not nchw_convolutions:
            pytest.skip("axis checked; no channels-first Conv2D kernel on this CPU to run the model")
        x = random_inputs(model)
        np.testing.assert_allclose(converted.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)

    def test_activation_layers_of_a_channels_first_model_get_channel_axis_1(self):
        inputs = keras.Input((3, 7, 7))
        x = keras.layers.Conv2D(4, 3, data_format="channels_first", name="conv")(inputs)
        x = keras.layers.ReLU(name="relu")(x)
        x = keras.layers.Conv2D(4, 3, data_format="channels_first", name="conv2")(x)
        x = keras.layers.Activation("relu", name="act")(x)
        x = keras.layers.LeakyReLU(negative_slope=0.1, name="leaky")(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        converted = kac.convert(model)
        assert {name: args[-1] for name, args in apt_arguments(converted).items()} == {
            "relu": 1,
            "act": 1,
            "leaky": 1,
        }

    def test_nested_model_is_converted(self):
        inner_inputs = keras.Input((4,))
        inner = keras.Model(
            inner_inputs, keras.layers.Dense(5, activation="relu", name="inner_dense")(inner_inputs), name="inner"
        )
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
        converted = kac.convert(model)
        assert set(apt_arguments(converted)) == {"inner_dense_relu"}
        x = random_inputs(model)
        np.testing.assert_allclose(converted.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)

    @pytest.mark.parametrize("split_branch_first", [False, True], ids=["long_branch_first", "split_branch_first"])
    def test_branched_model_keeps_weights_of_same_shaped_layers(self, split_branch_first):
        # The follower of "a" makes its branch deeper, which reorders the layers of
        # the clone: weights of same-shaped layers must still go to the layer of the same name.
        inputs = keras.Input((4,))
        short = keras.layers.Dense(4, name="b")(keras.layers.Dense(4, activation="relu", name="a")(inputs))
        long = keras.layers.Dense(4, name="c")(inputs)
        long = keras.layers.Dense(4, name="d")(keras.layers.Dense(4, name="c2")(long))
        branches = [short, long] if split_branch_first else [long, short]
        model = keras.Model(inputs, keras.layers.Add()(branches))
        converted = kac.convert(model)
        for name in ("a", "b", "c", "c2", "d"):
            for kept, copied in zip(model.get_layer(name).get_weights(), converted.get_layer(name).get_weights()):
                np.testing.assert_array_equal(copied, kept)
        x = random_inputs(model)
        np.testing.assert_allclose(converted.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)

    def test_batch_normalization_statistics_are_copied(self):
        inputs = keras.Input((5, 5, 2))
        x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU(name="relu")(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        rng = np.random.default_rng(1)
        bn = model.get_layer("bn")
        # gamma, beta, moving mean, moving variance: none of them at their initial value.
        bn.set_weights([rng.uniform(0.5, 2.0, size=w.shape).astype("float32") for w in bn.get_weights()])
        converted = kac.convert(model)
        for kept, copied in zip(bn.get_weights(), converted.get_layer("bn").get_weights()):
            np.testing.assert_array_equal(copied, kept)
        x = random_inputs(model)
        np.testing.assert_allclose(converted.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)

    def test_save_and_load_converted_model(self, tmp_path):
        converted = kac.convert(functional_model())
        path = str(tmp_path / "converted.keras")
        converted.save(path)
        loaded = keras.models.load_model(path)
        assert isinstance(loaded, kac.APTModel)
        assert apt_arguments(loaded) == FUNCTIONAL_APT
        x = random_inputs(converted)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), converted.predict(x, verbose=0), rtol=1e-6)


def count_relu_family(model):
    """ReLU-family activations of a model, counted from its layers' configurations."""
    count = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU)):
            count += 1
        elif layer.get_config().get("activation") in ("relu", "relu6", "leaky_relu"):
            count += 1
    return count


# name -> (builder, arguments, the max_value of every APTReLU: Activation("relu") or ReLU(6.0)).
APPLICATIONS = {
    "resnet50": (keras.applications.ResNet50, {"input_shape": (32, 32, 3)}, None),
    "vgg16": (keras.applications.VGG16, {"input_shape": (32, 32, 3)}, None),
    "mobilenet_v2": (keras.applications.MobileNetV2, {"input_shape": (32, 32, 3), "alpha": 0.35}, 6.0),
}


class TestApplications:
    @pytest.mark.parametrize(
        "application",
        # VGG16 (plain) in the default run; ResNet50 and MobileNetV2 (branches, ReLU6) in the slow tier.
        [
            APPLICATIONS["vgg16"],
            pytest.param(APPLICATIONS["resnet50"], marks=pytest.mark.slow),
            pytest.param(APPLICATIONS["mobilenet_v2"], marks=pytest.mark.slow),
        ],
        ids=["vgg16", "resnet50", "mobilenet_v2"],
    )
    def test_keras_application(self, application):
        build, arguments, max_value = application
        model = build(weights=None, classes=10, **arguments)
        expected_count = count_relu_family(model)
        assert expected_count > 0
        x = random_inputs(model, batch=2)
        expected = model.predict(x, verbose=0)

        converted = kac.convert(model)

        assert isinstance(converted, kac.APTModel)
        assert len(converted.apt_layers()) == expected_count
        np.testing.assert_allclose(converted.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
        assert {layer.max_value for layer in converted.apt_layers()} == {max_value}


class TestErrors:
    def test_subclassed_model_raises_type_error(self):
        class Subclassed(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(3, activation="relu")

            def call(self, inputs):
                return self.dense(inputs)

        model = Subclassed()
        model(np.zeros((1, 4), dtype="float32"))
        with pytest.raises(TypeError, match="APTModel"):
            kac.convert(model)

    @pytest.mark.parametrize(
        "model",
        [
            lambda: keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(2)]
            ),
            lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Activation("sigmoid")]),
        ],
        ids=["tanh_dense", "sigmoid_activation"],
    )
    def test_model_without_relu_raises_value_error(self, model):
        with pytest.raises(ValueError, match="no ReLU"):
            kac.convert(model())

    def test_no_relu_error_names_the_activations_found(self):
        inputs = keras.Input((4,))
        x = keras.layers.Dense(5, activation="swish", name="swish_dense")(inputs)
        x = keras.layers.Activation("gelu", name="gelu_layer")(x)
        x = keras.layers.Dense(3, name="linear_dense")(x)
        model = keras.Model(inputs, x)
        # Keras 3 serializes swish as "silu": the error gives both names.
        with pytest.raises(ValueError, match=r"no ReLU.*Activations found: gelu, silu \(swish\)\.$"):
            kac.convert(model)

    def test_unbuilt_sequential_raises_value_error(self):
        with pytest.raises(ValueError, match="not built"):
            kac.convert(keras.Sequential([keras.layers.Dense(3, activation="relu")]))

    def test_not_a_model_raises_type_error(self):
        with pytest.raises(TypeError, match="clones Functional and Sequential models only"):
            kac.convert(keras.layers.Dense(3, activation="relu"))
