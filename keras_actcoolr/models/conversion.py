"""`convert`: clone a Functional or Sequential model into an `APTModel` that measures its ReLUs."""

from __future__ import annotations

from typing import Any

import keras

from keras_actcoolr.layers import APTReLU
from keras_actcoolr.models.model import APTModel, Functional

__all__ = ["activation_names", "convert"]

_SPLITTABLE = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)


def _relu_arguments(activation: Any) -> dict | None:
    """`APTReLU` arguments equal to a Keras activation, or None if it is not of the ReLU family."""
    name = keras.activations.serialize(activation) if callable(activation) else activation
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return {"relu": {}, "relu6": {"max_value": 6.0}, "leaky_relu": {"negative_slope": 0.2}}.get(name)


def _channel_axis(layer: Any) -> int:
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


def convert(model: keras.Model, name: str | None = None) -> APTModel:
    """Clone a Functional or Sequential model into an `APTModel` that measures its ReLUs.

    Every ReLU-family activation is replaced by an `APTReLU` with the same
    arguments: `keras.layers.ReLU` (ReLU6 included) and `keras.layers.LeakyReLU`
    layers keep their names; `Activation("relu")` layers keep their names;
    Dense and convolution layers with `activation="relu"` (or `"relu6"`,
    `"leaky_relu"`) are split into the same layer without activation (same
    name, same weights) followed by an `APTReLU` named `"<name>_relu"`.
    Weights are copied; the original model is not changed.

    Example:

    ```python
    model = keras_actcoolr.convert(keras.applications.ResNet50(weights=None))
    ```

    Args:
        model: A built Functional or Sequential `keras.Model`.
        name: Name of the new model. Defaults to the name of `model`.

    Returns:
        An `APTModel`.

    Raises:
        TypeError: if `model` is not a Functional or Sequential model.
        ValueError: if the model is not built, or has no ReLU-family activation.
    """
    model = _functional(model)
    cloner = _ReluCloner(_default_axis(model))
    clone = keras.models.clone_model(
        model, clone_function=cloner.clone_layer, call_function=cloner.call_layer, recursive=True
    )
    if not cloner.replaced:
        found = activation_names(model)
        raise ValueError(
            f"Model '{model.name}' has no ReLU-family activation (ReLU, ReLU6, LeakyReLU, "
            "Activation('relu'), or activation='relu' in a Dense or convolution layer): there is "
            "nothing for ActCooLR to measure. Replace an activation by ReLU to measure it. "
            f"Activations found: {', '.join(found) if found else 'none'}."
        )
    _copy_weights(model, clone)
    return APTModel(clone.inputs, clone.outputs, name=name or model.name)


def _functional(model: Any) -> keras.Model:
    """`model` as a Functional model (a Sequential one rebuilt), after the checks of `convert`."""
    if not isinstance(model, keras.Model) or not isinstance(model, (Functional, keras.Sequential)):
        raise TypeError(
            "convert() clones Functional and Sequential models only. For a subclassed model, use "
            "`keras_actcoolr.APTReLU` in place of ReLU in its layers and subclass "
            f"`keras_actcoolr.APTModel` instead of `keras.Model`. Received: model={type(model).__name__}"
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs:
        raise ValueError(
            f"Model '{model.name}' is not built: give it an `Input` (or call it once on data) before convert()."
        )
    if isinstance(model, keras.Sequential):
        model = keras.Model(inputs, outputs, name=model.name)
    return model


def _default_axis(model: keras.Model) -> int:
    """The channel axis of the model's image layers (activation layers do not know theirs)."""
    formats = {
        layer.data_format
        for layer in model._flatten_layers()
        if hasattr(layer, "data_format") and (hasattr(layer, "kernel_size") or hasattr(layer, "pool_size"))
    }
    return 1 if formats == {"channels_first"} else -1


class _ReluCloner:
    """The `clone_function` and `call_function` of `keras.models.clone_model` that `convert` passes."""

    def __init__(self, default_axis: int) -> None:
        self.default_axis = default_axis
        self.followers: dict[int, APTReLU] = {}
        self.replaced: list[str] = []

    def clone_layer(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        axis = self.default_axis
        if isinstance(layer, keras.layers.ReLU):
            arguments = {k: config[k] for k in ("max_value", "negative_slope", "threshold")}
            new = APTReLU(name=layer.name, dtype=layer.dtype_policy, **arguments, axis=config.get("axis", axis))
        elif isinstance(layer, keras.layers.LeakyReLU):
            new = APTReLU(negative_slope=config["negative_slope"], name=layer.name, dtype=layer.dtype_policy, axis=axis)
        elif isinstance(layer, keras.layers.Activation) and _relu_arguments(layer.activation) is not None:
            new = APTReLU(name=layer.name, dtype=layer.dtype_policy, axis=axis, **_relu_arguments(layer.activation))
        elif isinstance(layer, _SPLITTABLE) and _relu_arguments(layer.activation) is not None:
            arguments = _relu_arguments(layer.activation)
            config["activation"] = "linear"
            new = layer.__class__.from_config(config)
            self.followers[id(new)] = APTReLU(
                name=f"{layer.name}_relu", dtype=layer.dtype_policy, axis=_channel_axis(layer), **arguments
            )
        else:
            return layer.__class__.from_config(config)
        self.replaced.append(layer.name)
        return new

    def call_layer(self, layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        outputs = layer(*args, **kwargs)
        follower = self.followers.get(id(layer))
        return follower(outputs) if follower is not None else outputs


# Keras activation layers that are not `Activation(...)` and have no `activation` attribute.
ACTIVATION_LAYERS = {keras.layers.ELU: "elu", keras.layers.PReLU: "prelu", keras.layers.Softmax: "softmax"}


def activation_names(model: keras.Model) -> list[str]:
    """Sorted names of the (non-linear) activations of a model's layers, nested models included."""
    names = set()
    for layer in model._flatten_layers(include_self=False):
        activation = getattr(layer, "activation", None)
        if activation is not None:
            try:
                name = keras.activations.serialize(activation) if callable(activation) else activation
            except (TypeError, ValueError):  # an unregistered custom function
                name = getattr(activation, "__name__", None)
            if isinstance(name, dict):
                name = name.get("config", name.get("class_name"))
            if isinstance(name, str) and name != "linear":
                # Keras 3 serializes `swish` under its other name, `silu`.
                names.add("silu (swish)" if name == "silu" else name)
        for cls, name in ACTIVATION_LAYERS.items():
            if isinstance(layer, cls):
                names.add(name)
    return sorted(names)


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    # Match layers by name, not weights by position: a follower APTReLU deepens its branch,
    # which can reorder the layers (and so the weights) of a branched clone.
    for source_layer in source.layers:
        if not source_layer.weights:
            continue
        try:
            target_layer = target.get_layer(source_layer.name)
        except ValueError:
            target_layer = None
        if isinstance(source_layer, (Functional, keras.Sequential)) and isinstance(target_layer, keras.Model):
            _copy_weights(source_layer, target_layer)
            continue
        source_weights = source_layer.weights
        target_weights = [] if target_layer is None else target_layer.weights
        if len(source_weights) != len(target_weights) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(source_weights, target_weights)
        ):
            raise ValueError(f"convert() could not match the weights of model '{source.name}' to its clone.")
        for source_weight, target_weight in zip(source_weights, target_weights):
            target_weight.assign(source_weight)
