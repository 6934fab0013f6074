"""PyramidNets of Han et al. (2017): widths that grow block by block."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras

from keras_actcoolr import validation
from keras_actcoolr.models import APTModel
from keras_actcoolr.zoo._common import batch_norm, check_input, classifier, conv, relu
from keras_actcoolr.zoo.layers import ChannelZeroPadding

__all__ = ["pyramidnet", "pyramidnet41", "pyramidnet110", "pyramid_resnet32", "stage_blocks"]


def stage_blocks(depth: int, bottleneck: bool, stages: int = 3) -> tuple[int, ...]:
    """Blocks per stage of a PyramidNet of `depth` weighted layers.

    A basic block has 2 weighted layers, a bottleneck block 3; the stem
    convolution and the classifier add 2. The blocks are spread over the
    stages as evenly as possible, the later stages taking the remainder
    (`(depth - 2) / 6` per stage for Han et al.'s basic CIFAR networks).
    """
    per_block = 3 if bottleneck else 2
    try:
        depth = validation.integer("depth", depth, minimum=2 + per_block * stages)
    except ValueError:
        depth, received = None, depth
    else:
        received = depth
    if depth is None or (depth - 2) % per_block:
        raise ValueError(
            f"`depth` must be {per_block}k + 2 with k >= {stages} for "
            f"{'bottleneck' if bottleneck else 'basic'} blocks. Received: depth={received!r}"
        )
    total = (depth - 2) // per_block
    base, extra = divmod(total, stages)
    return tuple(base + (1 if stage >= stages - extra else 0) for stage in range(stages))


def _block(x: Any, planes: int, strides: int, bottleneck: bool, name: str) -> Any:
    y = batch_norm(f"{name}_bn1")(x)
    if bottleneck:
        y = conv(planes, 1, name=f"{name}_conv1")(y)
        y = batch_norm(f"{name}_bn2")(y)
        y = relu(f"{name}_relu1")(y)
        y = conv(planes, 3, strides, name=f"{name}_conv2")(y)
        y = batch_norm(f"{name}_bn3")(y)
        y = relu(f"{name}_relu2")(y)
        y = conv(planes * 4, 1, name=f"{name}_conv3")(y)
        y = batch_norm(f"{name}_bn4")(y)
    else:
        y = conv(planes, 3, strides, name=f"{name}_conv1")(y)
        y = batch_norm(f"{name}_bn2")(y)
        y = relu(f"{name}_relu1")(y)
        y = conv(planes, 3, name=f"{name}_conv2")(y)
        y = batch_norm(f"{name}_bn3")(y)
    shortcut = x
    if strides > 1:
        shortcut = keras.layers.AveragePooling2D(strides, strides, padding="same", name=f"{name}_downsample")(shortcut)
    extra = y.shape[-1] - shortcut.shape[-1]
    if extra > 0:
        shortcut = ChannelZeroPadding(0, extra, name=f"{name}_pad")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def pyramidnet(
    depth: int,
    alpha: float,
    bottleneck: bool = False,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    name: str | None = None,
) -> APTModel:
    """A PyramidNet (Han et al., 2017) with `APTReLU` activations.

    A 3x3 convolution with 16 filters and batch-norm (no activation), three
    stages (strides 1, 2, 2) of pyramidal residual units, batch-norm, ReLU,
    global average pooling and a linear layer (logits). The width grows by
    `alpha / total_blocks` at every block and is rounded down
    (`floor(16 + k * alpha / total_blocks)` after `k` blocks, times 4 at the
    output of a bottleneck block), so the last block has `16 + alpha`
    (bottleneck: `4 * (16 + alpha)`) channels. Rounding down gives the
    published 1.7M parameters of PyramidNet-110; rounding to the nearest
    integer, as some ports do, gives 1.77M. A basic unit is BN, 3x3
    convolution, BN, ReLU, 3x3 convolution, BN; a bottleneck unit is BN, 1x1,
    BN, ReLU, 3x3, BN, ReLU, 1x1, BN. Shortcuts are the identity, average
    pooled (2x2) where the unit strides and padded with zero channels: no
    parameters. Blocks per stage: `stage_blocks(depth, bottleneck)`.

    Reference: D. Han, J. Kim, J. Kim, "Deep Pyramidal Residual Networks",
    CVPR 2017. Its Table 4 gives PyramidNet-110 (alpha = 48, basic units)
    1.7M parameters (trainable, as all the published counts of `zoo`).

    Example:

    ```python
    model = keras_actcoolr.zoo.pyramidnet(110, alpha=48)
    ```

    Args:
        depth: Integer, number of weighted layers: `2k + 2` for basic units,
            `3k + 2` for bottleneck units, `k` blocks in all.
        alpha: Positive float, the total widening.
        bottleneck: Boolean, bottleneck units instead of basic ones.
            Defaults to `False`.
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        num_classes: Integer >= 1. Defaults to `10`.
        name: Model name. Defaults to `"pyramidnet{depth}"`.

    Returns:
        A `keras_actcoolr.APTModel` that outputs logits.
    """
    blocks = stage_blocks(depth, bottleneck)
    alpha = validation.positive("alpha", alpha)
    shape = check_input(input_shape, num_classes)
    total = sum(blocks)
    done = 0
    inputs = keras.Input(shape, name="image")
    x = conv(16, 3, name="stem_conv")(inputs)
    x = batch_norm("stem_bn")(x)
    for stage, count in enumerate(blocks, start=1):
        for block in range(1, count + 1):
            done += 1
            # 1e-9: k * alpha / total may fall a rounding error short of an integer.
            planes = math.floor(16 + done * alpha / total + 1e-9)
            strides = 2 if stage > 1 and block == 1 else 1
            x = _block(x, planes, strides, bottleneck, f"stage{stage}_block{block}")
    x = batch_norm("final_bn")(x)
    x = relu("final_relu")(x)
    outputs = classifier(x, num_classes)
    return APTModel(inputs, outputs, name=name or f"pyramidnet{depth}")


def pyramidnet110(**kwargs: Any) -> APTModel:
    """PyramidNet-110, alpha = 48, basic units (1.7M parameters, Han et al. 2017 Table 4). See `pyramidnet`."""
    kwargs.setdefault("alpha", 48)
    return pyramidnet(110, **kwargs)


def pyramidnet41(**kwargs: Any) -> APTModel:
    """PyramidNet-41 for Tiny ImageNet (64x64 inputs, 200 classes). See `pyramidnet`.

    The ActCooLR supplementary material names the network (Figure 3) without
    describing it, and Han et al. publish no 41-layer PyramidNet. 41 weighted
    layers fit only bottleneck units: `3 * 13 + 2`. This is our reading:
    13 bottleneck units over the three stages (4, 4, 5), alpha = 48 as in
    PyramidNet-110, the CIFAR stem unchanged, 64x64 inputs and 200 classes
    by default. It has no published parameter count.
    """
    kwargs.setdefault("alpha", 48)
    kwargs.setdefault("input_shape", (64, 64, 3))
    kwargs.setdefault("num_classes", 200)
    return pyramidnet(41, bottleneck=True, **kwargs)


def pyramid_resnet32(**kwargs: Any) -> APTModel:
    """The "Pyramid" ResNet-32 of supplementary Figure 1. See `pyramidnet`.

    ResNet-32's depth (15 basic units, 5 per stage) with PyramidNet's units
    and widths growing block by block from 16 to 64 (alpha = 48): the widths
    of ResNet-32's last stage, reached gradually. The supplementary material
    does not describe it further; this is our reading.
    """
    kwargs.setdefault("alpha", 48)
    kwargs.setdefault("name", "resnet32_pyramid")
    return pyramidnet(32, **kwargs)
