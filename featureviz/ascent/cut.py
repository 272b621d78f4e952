"""Where the ascent cuts a model: at the target layer, or just before its ReLU.

The cut runs at any image size when the layers before the target allow it, and stops before
a trailing ReLU so that channels that start dead still get a gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from featureviz.errors import InvalidRequest

if TYPE_CHECKING:
    import keras

__all__ = ["cut_before_relu", "cut_model", "fixed_size", "input_channels"]


def cut_model(model: keras.Model, layer: str) -> keras.Model:
    """The model up to ``layer``, taking any image size when the layers before it allow.

    A trained VGG16 saved at 224x224 is fully convolutional up to its conv base, so a 128 px
    ascent runs at 128 px (about 2.7x fewer operations) instead of being resized to 224.
    """
    from featureviz.models import feature_model

    try:
        return feature_model(model, [layer], any_size=True)
    except InvalidRequest:
        return feature_model(model, [layer])


def cut_before_relu(
    model: keras.Model, layer: str
) -> tuple[keras.Model, Callable[[Any], Any] | None, tuple[int | None, ...]]:
    """Cut at the target layer, or just before its ReLU when it ends in one.

    A channel that is zero everywhere on the grey starting image has zero gradient through
    ReLU and never wakes up. lucid avoids this by optimizing ``*_pre_relu`` tensors (and by
    redirecting ReLU gradients); here the cut model stops at the target layer's input and
    ``pre_relu(x)`` redoes its convolution without the activation (or, for a ReLU layer, is
    the identity), so the loop can report ``relu(pre)`` and still follow the pre-activation.
    Returns ``(model, pre_relu or None, the target layer's output shape)``.
    """
    import keras

    cut = cut_model(model, layer)
    shape = tuple(cut.outputs[0].shape)
    history = getattr(cut.outputs[0], "_keras_history", None)
    if history is None or len(shape) != 4:
        return cut, None, shape
    op, node_index, _ = history
    node = op._inbound_nodes[node_index]  # noqa: SLF001 - Keras keeps no public accessor
    if len(node.input_tensors) != 1:
        return cut, None, shape
    source = node.input_tensors[0]
    relu = keras.activations.relu
    if _is_plain_relu_layer(op):

        def identity_pre(x: Any) -> Any:
            return x

        pre_relu = identity_pre
    elif (
        type(op) is keras.layers.Conv2D
        and op.activation is relu
        and op.data_format == "channels_last"
    ):

        def conv_without_relu(x: Any) -> Any:
            y = op.convolution_op(x, op.kernel)
            return y + op.bias if op.use_bias else y

        pre_relu = conv_without_relu
    else:
        return cut, None, shape
    before = keras.Model(cut.inputs[0], source, name=f"{cut.name}_pre_relu")
    return before, pre_relu, shape


def _is_plain_relu_layer(op: Any) -> bool:
    import keras

    if isinstance(op, keras.layers.ReLU):
        config = op.get_config()
        return (
            config.get("max_value") is None
            and not config.get("negative_slope")
            and not config.get("threshold")
        )
    if isinstance(op, keras.layers.Activation):
        return op.activation is keras.activations.relu
    return False


def fixed_size(model: keras.Model) -> tuple[int, int] | None:
    """The model's fixed (height, width), or None when it accepts any size."""
    from featureviz.models import input_spec

    h, w, _ = input_spec(model)
    if h is None and w is None:
        return None
    if h is None or w is None:
        raise InvalidRequest("models with only one fixed spatial dimension are not supported")
    return h, w


def input_channels(model: keras.Model) -> int:
    from featureviz.models import input_spec

    if len(model.inputs) != 1:
        raise InvalidRequest(f"the model has {len(model.inputs)} inputs; one image input needed")
    _, _, channels = input_spec(model)
    if channels not in (1, 3):
        raise InvalidRequest(f"the model's input has {channels} channels; 1 or 3 supported")
    return channels
