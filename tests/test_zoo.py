"""keras_actcoolr.zoo: published parameter counts, shapes, architecture details, and a few ActCooLR steps each."""

import functools
import math
import re
from fractions import Fraction

import keras
import numpy as np
import pytest
from scipy import stats

import keras_actcoolr as kac
from keras_actcoolr import zoo

pytestmark = pytest.mark.usefixtures("fresh_session")


# The deepest networks take seconds to build: the tests that build them run in the slow tier.
BIG = {"resnet110", "pyramidnet110", "resnet50"}


def by_size(cases):
    """Parameter tuples `(network, ...)`, those of a BIG network marked slow."""
    return [pytest.param(*case, marks=pytest.mark.slow) if case[0] in BIG else case for case in cases]


@functools.cache
def default_network(name):
    """The network with its default arguments, built once for the read-only tests."""
    return zoo.get(name)


# ------------------------------------------------ independent parameter counts
# Trainable parameters derived by hand from the architectures' descriptions.


def cifar_resnet_count(depth, variant="standard", classes=10):
    """He et al.'s CIFAR ResNet, option-A shortcuts (no parameters)."""
    n = (depth - 2) // 6
    convs, bn_channels = 3 * 3 * 3 * 16, 16
    inp = 16
    for width in (16, 32, 64):
        for _ in range(n):
            convs += 9 * inp * width + 9 * width * width
            bn_channels += 2 * width
            inp = width
    if variant == "fixup":
        # stem bias, 4 biases and a multiplier per branch, classifier bias; no batch-norm
        return convs + 1 + 5 * 3 * n + 1 + 64 * classes + classes
    return convs + 2 * bn_channels + 64 * classes + classes


def pyramidnet_count(blocks, alpha, bottleneck=False, classes=10):
    """Han et al.'s PyramidNet, widths floor(16 + k * alpha / N)."""
    total = sum(blocks)
    params = 3 * 3 * 3 * 16 + 2 * 16
    inp = 16
    for k in range(1, total + 1):
        p = math.floor(16 + Fraction(k * alpha, total))
        if bottleneck:
            params += 2 * inp + inp * p + 2 * p + 9 * p * p + 2 * p + p * 4 * p + 2 * 4 * p
            inp = 4 * p
        else:
            params += 2 * inp + 9 * inp * p + 2 * p + 9 * p * p + 2 * p
            inp = p
    return params + 2 * inp + inp * classes + classes


# torchvision's published count of the ImageNet ResNet-18; the CIFAR version swaps
# the 7x7x3x64 stem for a 3x3x3x64 one and the 512x1000 classifier for a 512x10 one.
TORCHVISION_RESNET18 = 11_689_512
RESNET18_CIFAR = TORCHVISION_RESNET18 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 - (512 * 1000 + 1000) + (512 * 10 + 10)

# Keras' published count of VGG-16 with its top, less the three dense layers,
# plus batch-norm (scale and offset per channel of the 13 convolutions) and a 512x10 classifier.
KERAS_VGG16 = 138_357_544
VGG16_DENSE = (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
VGG16_CONV_CHANNELS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
VGG16_CIFAR = KERAS_VGG16 - VGG16_DENSE + 2 * sum(VGG16_CONV_CHANNELS) + 512 * 10 + 10

CONVNET4 = (5 * 5 * 1 * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (7 * 7 * 64 * 1024 + 1024) + (1024 * 10 + 10)


class TestParameterCounts:
    # (network, published count in millions, decimals published, source)
    @pytest.mark.parametrize(
        "name, published, decimals",
        by_size([
            ("resnet20", 0.27, 2),  # He et al. 2016, Table 6
            ("resnet32", 0.46, 2),
            ("resnet56", 0.85, 2),
            ("resnet110", 1.7, 1),
            ("resnet18", 11.2, 1),  # CIFAR ResNet-18, the usual figure
            ("vgg16", 15, 0),  # "about 15M" with batch-norm
            ("pyramidnet110", 1.7, 1),  # Han et al. 2017, Table 4 (alpha = 48)
            ("resnet50", 25.6, 1),  # Keras applications table
        ]),
    )  # fmt: skip
    def test_published_count_to_its_precision(self, name, published, decimals):
        count = zoo.count_parameters(default_network(name))
        assert round(count / 1e6, decimals) == pytest.approx(published)

    @pytest.mark.slow
    def test_resnet50_count_with_moving_statistics_is_keras_published(self):
        assert round(default_network("resnet50").count_params() / 1e6, 1) == pytest.approx(25.6)

    @pytest.mark.parametrize(
        "name, expected",
        by_size([
            ("resnet20", cifar_resnet_count(20)),
            ("resnet32", cifar_resnet_count(32)),
            ("resnet56", cifar_resnet_count(56)),
            ("resnet110", cifar_resnet_count(110)),
            ("resnet32_fixup", cifar_resnet_count(32, "fixup")),
            ("resnet32_no_shortcut", cifar_resnet_count(32)),
            ("resnet32_pyramid", pyramidnet_count([5, 5, 5], 48)),
            ("pyramidnet110", pyramidnet_count([18, 18, 18], 48)),
            ("pyramidnet41", pyramidnet_count([4, 4, 5], 48, bottleneck=True, classes=200)),
            ("resnet18", RESNET18_CIFAR),
            ("vgg16", VGG16_CIFAR),
            ("convnet4", CONVNET4),
        ]),
    )  # fmt: skip
    def test_exact_count_derived_from_the_architecture(self, name, expected):
        assert zoo.count_parameters(default_network(name)) == expected


# (network, default input, default classes, APTReLU layers counted from the architecture)
NETWORKS = [
    ("convnet4", (28, 28, 1), 10, 3),
    ("resnet20", (32, 32, 3), 10, 19),
    ("resnet32", (32, 32, 3), 10, 31),
    ("resnet56", (32, 32, 3), 10, 55),
    ("resnet110", (32, 32, 3), 10, 109),
    ("resnet32_fixup", (32, 32, 3), 10, 31),
    ("resnet32_pyramid", (32, 32, 3), 10, 16),  # one per unit and the final one
    ("resnet32_no_shortcut", (32, 32, 3), 10, 31),
    ("resnet18", (32, 32, 3), 10, 17),
    ("vgg16", (32, 32, 3), 10, 13),
    ("pyramidnet110", (32, 32, 3), 10, 55),
    ("pyramidnet41", (64, 64, 3), 200, 27),  # two per bottleneck unit and the final one
    ("resnet50", (224, 224, 3), 1000, 49),
]


class TestShapes:
    @pytest.mark.parametrize("name, input_shape, classes, relus", by_size(NETWORKS), ids=[n[0] for n in NETWORKS])
    def test_defaults(self, name, input_shape, classes, relus):
        model = default_network(name)
        assert isinstance(model, kac.APTModel)
        assert tuple(model.input_shape) == (None, *input_shape)
        assert tuple(model.output_shape) == (None, classes)
        assert len(model.apt_layers()) == relus

    @pytest.mark.parametrize(
        "name, input_shape",
        [("resnet20", (16, 16, 3)), ("resnet18", (64, 64, 3)), ("pyramidnet41", (32, 32, 3)), ("vgg16", (64, 64, 3))],
    )
    def test_other_input_and_classes(self, name, input_shape):
        model = zoo.get(name, input_shape=input_shape, num_classes=7)
        out = model(np.zeros((2, *input_shape), "float32"))
        assert tuple(out.shape) == (2, 7)

    def test_rejects_bad_arguments(self):
        with pytest.raises(ValueError, match="6n \\+ 2"):
            zoo.cifar_resnet(21)
        with pytest.raises(ValueError, match="variant"):
            zoo.cifar_resnet(20, variant="pre_activation")
        with pytest.raises(ValueError, match="at least 32x32"):
            zoo.vgg16(input_shape=(16, 16, 3))
        with pytest.raises(ValueError, match="Unknown network"):
            zoo.get("resnet19")

    @pytest.mark.parametrize(
        "build, message",
        [
            (
                lambda: zoo.cifar_resnet(True),
                "`depth` must be 6n + 2 with n >= 1 (20, 32, 56, 110, ...). Received: depth=True",
            ),
            (
                lambda: zoo.cifar_resnet(20.0),
                "`depth` must be 6n + 2 with n >= 1 (20, 32, 56, 110, ...). Received: depth=20.0",
            ),
            (lambda: zoo.cifar_resnet(20, variant="v3"), "`variant` must be one of"),
            (
                lambda: zoo.cifar_resnet(20, num_classes=0),
                "`num_classes` must be an integer >= 1. Received: num_classes=0",
            ),
            (
                lambda: zoo.cifar_resnet(20, input_shape=(32, 32)),
                "`input_shape` must be (height, width, channels). Received: input_shape=(32, 32)",
            ),
            (
                lambda: zoo.cifar_resnet(20, input_shape=(32, 0, 3)),
                "`input_shape` must be (height, width, channels). Received: input_shape=(32, 0, 3)",
            ),
            (lambda: zoo.pyramidnet(9, 48), "`depth` must be 2k + 2 with k >= 3 for basic blocks. Received: depth=9"),
            (
                lambda: zoo.pyramidnet(10.0, 48),
                "`depth` must be 2k + 2 with k >= 3 for basic blocks. Received: depth=10.0",
            ),
            (
                lambda: zoo.pyramidnet(13, 48, bottleneck=True),
                "`depth` must be 3k + 2 with k >= 3 for bottleneck blocks. Received: depth=13",
            ),
            (lambda: zoo.pyramidnet(8, alpha=0), "`alpha` must be a positive finite number. Received: alpha=0"),
            (
                lambda: zoo.pyramidnet(8, alpha=math.inf),
                "`alpha` must be a positive finite number. Received: alpha=inf",
            ),
            (lambda: zoo.ChannelZeroPadding(before=-1), "`before` must be an integer >= 0. Received: before=-1"),
            (lambda: zoo.ChannelZeroPadding(after=1.5), "`after` must be an integer >= 0. Received: after=1.5"),
        ],
    )
    def test_argument_errors_name_the_argument(self, build, message):
        with pytest.raises(ValueError, match=re.escape(message)):
            build()


class TestArchitecture:
    def test_option_a_shortcuts_have_no_parameters(self):
        model = default_network("resnet20")
        kernels = [layer.kernel_size for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        assert (1, 1) not in kernels
        assert len(kernels) == 19  # stem + 2 per block: no projection

    def test_channel_zero_padding_matches_numpy(self):
        x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype("float32")
        y = zoo.ChannelZeroPadding(2, 3)(x)
        np.testing.assert_array_equal(np.asarray(y), np.pad(x, [(0, 0), (0, 0), (0, 0), (2, 3)]))

    def test_no_shortcut_variant_adds_nothing(self):
        assert not any(isinstance(layer, keras.layers.Add) for layer in default_network("resnet32_no_shortcut").layers)
        assert sum(isinstance(layer, keras.layers.Add) for layer in default_network("resnet32").layers) == 15

    def test_fixup_initialisation(self):
        model = default_network("resnet32_fixup")
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
        for layer in model.layers:
            if layer.name.endswith("_conv2"):
                assert not np.any(np.asarray(layer.kernel))
        assert not np.any(np.asarray(model.get_layer("logits").kernel))
        # First convolution of each branch: He normal (fan out) scaled by L ** -1/2, L = 15 branches.
        weights = np.concatenate(
            [np.asarray(model.get_layer(f"stage3_block{b}_conv1").kernel).ravel() for b in range(1, 6)]
        )
        expected = math.sqrt(2.0 / (3 * 3 * 64)) / math.sqrt(15)
        assert np.std(weights) == pytest.approx(expected, rel=0.03)

    @pytest.mark.slow
    def test_pyramid_widths_grow_block_by_block(self):
        model = default_network("pyramidnet110")
        widths = [model.get_layer(f"stage{s}_block{b}_conv2").filters for s in (1, 2, 3) for b in range(1, 19)]
        assert widths == [math.floor(16 + Fraction(48 * k, 54)) for k in range(1, 55)]
        assert widths[-1] == 64

    def test_resnet18_has_projection_shortcuts(self):
        model = default_network("resnet18")
        shortcuts = [layer.name for layer in model.layers if layer.name.endswith("_shortcut_conv")]
        assert shortcuts == [f"stage{s}_block1_shortcut_conv" for s in (2, 3, 4)]

    def test_save_and_reload(self, tmp_path):
        model = zoo.cifar_resnet(8, variant="fixup", input_shape=(8, 8, 3))
        model.get_layer("logits").kernel.assign(np.random.default_rng(0).normal(size=(64, 10)).astype("float32"))
        x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
        path = str(tmp_path / "fixup.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert isinstance(loaded, kac.APTModel)
        np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------- training under ActCooLR

SMALL_INPUT = {"convnet4": (28, 28, 1), "vgg16": (32, 32, 3), "resnet50": (32, 32, 3)}
# One plain and one residual network train in the default test run; the others in the slow tier.
FAST = {"convnet4", "resnet20"}


def train_under_actcoolr(model, input_shape, run_eagerly, sigma=None, steps=4):
    model.compile(
        optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.01), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=run_eagerly,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * steps, *input_shape)).astype("float32")
    y = np.arange(2 * steps) % 10
    kernel = next(w for w in model.trainable_weights if len(w.shape) == 4)
    before = np.array(kernel)
    # The paper's controller (guards off), whose update is replayed by hand below.
    controller = kac.ActCooLR(
        initial_learning_rate=None, start_temperature=1.0, every_step=2, sigma=sigma, guards=False
    )
    history = model.fit(x, y, batch_size=2, epochs=1, callbacks=[controller], verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert [r["step"] for r in controller.history] == list(range(0, steps, 2))
    for record in controller.history:
        assert len(record["layers"]) == len(model.apt_layers())
        assert all(0.0 <= t < 64 for t in record["layers"].values())
        # The given sigma, and the static update replayed by hand (T0 = 1, gamma = 1, every 2 of `steps` steps).
        assert record["sigma"] == pytest.approx(sigma, rel=1e-6)
        target = 1.0 - record["step"] / steps
        p, p_target = (min(max(1 - 2.0**-t, 1e-6), 1 - 1e-6) for t in (record["temperature"], target))
        lr_target = record["learning_rate"] * math.exp(sigma * (stats.norm.ppf(p_target) - stats.norm.ppf(p)))
        lr_target = min(max(lr_target, 1e-7), 100.0)  # the target is clipped to the bounds before the step
        expected = record["learning_rate"] + (lr_target - record["learning_rate"]) / 2
        assert record["next_learning_rate"] == pytest.approx(expected, rel=1e-9)
    assert not np.array_equal(before, np.array(kernel))


@pytest.mark.parametrize(
    "name",
    [n[0] if n[0] in FAST else pytest.param(n[0], marks=pytest.mark.slow) for n in NETWORKS],
)
def test_trains_a_few_steps_under_actcoolr(name):
    # Eager mode: on tiny inputs, tracing a deep network costs far more than its steps.
    # sigma is given: the range analysis that estimates it runs in every ActCooLR preset's
    # smoke test (tests/test_experiments.py) and in the core tests.
    input_shape = SMALL_INPUT.get(name, (8, 8, 3))
    model = zoo.get(name, input_shape=input_shape, num_classes=10)
    train_under_actcoolr(model, input_shape, run_eagerly=True, sigma=1.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [
        lambda: zoo.cifar_resnet(8, input_shape=(8, 8, 3)),
        lambda: zoo.cifar_resnet(8, variant="fixup", input_shape=(8, 8, 3)),
        lambda: zoo.cifar_resnet(8, variant="no_shortcut", input_shape=(8, 8, 3)),
        lambda: zoo.pyramidnet(8, alpha=6, input_shape=(8, 8, 3)),
        lambda: zoo.pyramidnet(11, alpha=6, bottleneck=True, input_shape=(8, 8, 3)),
    ],
    ids=["resnet_option_a", "fixup", "no_shortcut", "pyramid_basic", "pyramid_bottleneck"],
)
def test_building_blocks_train_in_a_traced_train_step(build):
    train_under_actcoolr(build(), (8, 8, 3), run_eagerly=False, sigma=1.0)
