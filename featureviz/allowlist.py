"""The allowlist a model config must pass: built-in Keras objects only, nothing that carries code.

Core signature::

    check_config(config, *, max_layers=2000) -> None   (raises ModelRejected)

Keras turns a config into Python objects, and ``safe_mode=True`` only stops the deserializers
known to be dangerous (lambdas). So every ``{"class_name": ...}`` object in the config must be
a built-in Keras layer, initializer, regularizer, constraint or dtype policy from a
``keras.*`` module, every activation a built-in one, and no key may hold a function. The
walk is iterative, because a hostile config may be deep.
"""

from __future__ import annotations

from typing import Any

from featureviz.errors import ModelRejected

__all__ = [
    "ALLOWED_ACTIVATIONS",
    "ALLOWED_LAYER_CLASSES",
    "ALLOWED_OBJECT_CLASSES",
    "MAX_LAYERS",
    "check_config",
]

MAX_LAYERS = 2000
_MAX_DEPTH = 100  # Keras deserializes recursively: bound the nesting
_FORBIDDEN_KEYS = {"function", "function_type", "__lambda__", "__function__"}


def _names(*groups: str) -> frozenset[str]:
    return frozenset(name for group in groups for name in group.split())


ALLOWED_LAYER_CLASSES = _names(
    "Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose Conv3DTranspose",
    "SeparableConv1D SeparableConv2D DepthwiseConv1D DepthwiseConv2D",
    "Convolution1D Convolution2D Convolution3D Convolution2DTranspose",
    "Dense Flatten Reshape Permute RepeatVector Identity ActivityRegularization",
    "Dropout AlphaDropout SpatialDropout1D SpatialDropout2D SpatialDropout3D",
    "GaussianNoise GaussianDropout",
    "MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D",
    "MaxPool1D MaxPool2D MaxPool3D AvgPool1D AvgPool2D AvgPool3D",
    "GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D",
    "GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D",
    "GlobalMaxPool1D GlobalMaxPool2D GlobalMaxPool3D",
    "GlobalAvgPool1D GlobalAvgPool2D GlobalAvgPool3D",
    "BatchNormalization LayerNormalization GroupNormalization UnitNormalization",
    "Activation ReLU LeakyReLU PReLU ELU Softmax ThresholdedReLU",
    "Add Concatenate Multiply Average Maximum Minimum Subtract Dot",
    "ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D",
    "UpSampling1D UpSampling2D UpSampling3D",
    "InputLayer Rescaling Normalization Resizing CenterCrop",
    "RandomFlip RandomRotation RandomZoom RandomTranslation RandomContrast RandomCrop",
    "Functional Sequential Model",
)
"""Built-in layers that compute only from their weights and config: no files, no code."""

ALLOWED_OBJECT_CLASSES = _names(
    "GlorotUniform GlorotNormal HeUniform HeNormal LecunUniform LecunNormal",
    "Zeros Ones Constant Identity IdentityInitializer VarianceScaling",
    "RandomNormal RandomUniform TruncatedNormal Orthogonal OrthogonalInitializer",
    "L1 L2 L1L2 OrthogonalRegularizer MaxNorm NonNeg UnitNorm MinMaxNorm",
    "DTypePolicy FloatDTypePolicy Policy",
    "__tensor__ __numpy__ __keras_tensor__ __tuple__ __list__",
)
"""Non-layer objects that built-in layers write into their configs."""

ALLOWED_ACTIVATIONS = _names(
    "relu relu6 leaky_relu elu selu celu gelu glu silu swish hard_silu hard_swish mish",
    "softplus softsign softmax log_softmax sigmoid hard_sigmoid log_sigmoid sparse_sigmoid",
    "tanh hard_tanh tanh_shrink hard_shrink soft_shrink sparse_plus squareplus sparsemax",
    "threshold exponential linear",
)

_ALLOWED_MODULES = frozenset(
    {
        "keras",
        "keras.layers",
        "keras.models",
        "keras.initializers",
        "keras.regularizers",
        "keras.constraints",
        "keras.activations",
        "keras.dtype_policies",
        "keras.src.models.functional",
        "keras.src.models.sequential",
        "keras.src.models.model",
    }
)
# A nested sub-model may carry a compile config that Keras deserializes even with
# ``compile=False`` (only the top-level one is dropped): built-in training objects only.
_COMPILE_MODULES = frozenset({"keras.optimizers", "keras.losses", "keras.metrics"})


def check_config(config: dict[str, Any], *, max_layers: int = MAX_LAYERS) -> None:
    """Refuse any object in a model config that is not a built-in from the allowlists.

    Walks iteratively (a hostile config may be deep) and counts layer configs. The top-level
    ``compile_config`` is skipped: Keras drops it when loading with ``compile=False``.
    """
    if config.get("class_name") not in ("Sequential", "Functional", "Model"):
        raise ModelRejected("the config does not describe a Keras model")
    layers = 0
    root = {key: value for key, value in config.items() if key != "compile_config"}
    stack: list[tuple[Any, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, compiling = stack.pop()
        if depth > _MAX_DEPTH:
            raise ModelRejected("the model config is nested too deeply")
        if isinstance(node, list):
            stack.extend((item, depth + 1, compiling) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        if "class_name" in node:
            layers += _check_object(node, compiling)
            if layers > max_layers:
                raise ModelRejected(f"the model has more than {max_layers} layers")
        for key, value in node.items():
            if key in _FORBIDDEN_KEYS:
                raise ModelRejected(f"the config key {key!r} is not allowed: it carries code")
            if key.endswith("activation") and isinstance(value, dict):
                _check_activation(value)
            else:
                stack.append((value, depth + 1, compiling or key == "compile_config"))


def _check_object(node: dict[str, Any], compiling: bool) -> int:
    """Check one ``{"class_name": ...}`` object; return 1 when it is a layer, else 0."""
    name = node["class_name"]
    if not isinstance(name, str):
        raise ModelRejected("the config has a class_name that is not a string")
    module = node.get("module")
    registered = node.get("registered_name")
    if registered is not None and registered != name:
        raise ModelRejected(
            f"object {registered!r} is not allowed: models may only use built-in Keras objects"
        )
    if compiling and module in _COMPILE_MODULES and name.isidentifier():
        return 0
    if module is not None and module not in _ALLOWED_MODULES:
        raise ModelRejected(
            f"module {module!r} (class {name!r}) is not allowed: models may only use built-in "
            "Keras objects"
        )
    if name in ALLOWED_LAYER_CLASSES:
        if name == "Normalization":
            _check_normalization(node.get("config"))
        return 1
    if name in ALLOWED_OBJECT_CLASSES:
        return 0
    raise ModelRejected(
        f"layer class {name!r} is not allowed: models may only use built-in Keras layers"
    )


def _check_activation(node: dict[str, Any]) -> None:
    module, name = node.get("module"), node.get("class_name")
    if name == "function":
        name = node.get("config")
    if module not in (None, "keras.activations") or name not in ALLOWED_ACTIVATIONS:
        raise ModelRejected(f"activation {name!r} is not allowed: use a built-in Keras activation")


def _check_normalization(config: Any) -> None:
    """``Normalization`` may hold numbers for mean/variance, never a path to read them from."""
    if not isinstance(config, dict):
        return
    for key in ("mean", "variance"):
        if not _numeric(config.get(key)):
            raise ModelRejected(f"Normalization {key} must be numbers")


def _numeric(value: Any) -> bool:
    if value is None or isinstance(value, int | float):
        return True
    if isinstance(value, list):
        return all(_numeric(v) for v in value)
    if isinstance(value, dict) and value.get("class_name") in ("__numpy__", "__tensor__"):
        return _numeric((value.get("config") or {}).get("value"))
    return False
