"""Load Keras models safely, list their layers by path, and cut them at any layer.

Core signatures::

    load_model(path) -> keras.Model
    describe(model) -> {"input_shape", "output_shape", "params", "layers": [...]}
    resolve_layers(model, specs) -> [path, ...]
    feature_model(model, paths) -> keras.Model  # input -> outputs of those layers

Nested models (a Sequential holding a whole VGG16 as one layer, the classic ``conv_base``
pattern) are flattened into paths such as ``vgg16/block3_conv1``. A plain
``keras.Model(model.inputs, inner.output)`` fails there with a disconnected graph because the
inner layer's output belongs to the inner model's own graph. ``feature_model`` instead re-runs
the whole model on a fresh symbolic input, descending into every sub-model, and records the
symbolic output of each wanted layer: one connected graph that shares the original weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from featureviz.errors import InvalidRequest, LayerNotFound, ModelRejected
from featureviz.safety import FileLimits, check_model_file

if TYPE_CHECKING:
    import keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_model(path: str, *, limits: FileLimits | None = None) -> keras.Model:
    """Check the file statically, then load it with ``safe_mode=True`` and no custom objects."""
    check_model_file(path, limits=limits or FileLimits())
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - any loader failure is the file's fault
        raise ModelRejected(f"the model could not be loaded: {_short(exc)}") from None
    if not isinstance(model, keras.Model):
        raise ModelRejected("the file does not hold a Keras model")
    if len(model.inputs) != 1:
        raise ModelRejected(
            f"models with {len(model.inputs)} inputs are not supported: one image input"
        )
    if len(model.inputs[0].shape) != 4:
        raise ModelRejected(
            f"the model's input has shape {_shape(model.inputs[0].shape)}: "
            "expected images (N, H, W, C)"
        )
    return model


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[:limit]


def _shape(shape: Iterable[Any]) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


def _is_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _run(model: keras.Model, x: Any, prefix: str, record: Callable[[str, Any, Any], None]) -> Any:
    """Call ``model`` on ``x`` layer by layer, descending into sub-models, recording outputs."""
    import keras

    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = _call_layer(layer, x, prefix, record)
        return x

    def wrap(op: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if _is_model(op) and len(args) == 1:
                return _call_layer(op, args[0], prefix, record)
            out = op(*args, **kwargs)
            record(prefix + op.name, op, out)
            return out

        return call

    return model._run_through_graph(x, operation_fn=wrap)  # noqa: SLF001 - no public walker


def _call_layer(layer: Any, x: Any, prefix: str, record: Callable[[str, Any, Any], None]) -> Any:
    path = prefix + layer.name
    if _is_model(layer):
        out = _run(layer, x, path + "/", record)
    else:
        out = layer(x)
    record(path, layer, out)
    return out


class _Enough(Exception):
    """Raised inside a trace once every wanted layer is recorded: nothing past them runs."""


def _trace(
    model: keras.Model, *, wanted: set[str] | None = None, any_size: bool = False
) -> dict[str, tuple[Any, Any]]:
    """Run ``model`` symbolically; return path -> (layer, symbolic output) in call order.

    With ``wanted``, the run stops as soon as those layers are recorded. With ``any_size``,
    the input takes any height and width, which works up to the first layer that needs a fixed
    size (a Flatten before a Dense): fully convolutional cuts then run at any image size.
    """
    import keras

    recorded: dict[str, tuple[Any, Any]] = {}

    def record(path: str, layer: Any, out: Any) -> None:
        if isinstance(layer, keras.layers.InputLayer) or path in recorded:
            return
        recorded[path] = (layer, out)
        if wanted is not None and wanted <= recorded.keys():
            raise _Enough

    shape = tuple(model.inputs[0].shape[1:])
    if any_size:
        shape = (None, None, shape[-1])
    x = keras.Input(shape=shape, dtype=model.inputs[0].dtype)
    try:
        _run(model, x, "", record)
    except _Enough:
        pass
    recorded["__input__"] = (None, x)
    return recorded


def describe(model: keras.Model) -> dict[str, Any]:
    """The layer table, like ``model.summary()``, with nested layers listed by path."""
    traced = _trace(model)
    layers: list[dict[str, Any]] = []
    for path, (layer, out) in traced.items():
        if layer is None:
            continue
        shape = _shape(out.shape) if hasattr(out, "shape") else None
        layers.append(
            {
                "index": len(layers),
                "name": layer.name,
                "path": path,
                "type": type(layer).__name__,
                "output_shape": shape,
                "params": int(layer.count_params()) if layer.built else 0,
                "channels": shape[-1] if shape and len(shape) == 4 else None,
            }
        )
    return {
        "name": model.name,
        "input_shape": _shape(model.inputs[0].shape),
        "output_shape": _shape(model.outputs[0].shape) if model.outputs else None,
        "params": int(model.count_params()),
        "layers": layers,
    }


def resolve_layers(table: Sequence[dict[str, Any]], specs: Sequence[str | int]) -> list[str]:
    """Map names, paths or indices of the layer table to paths, in the order given.

    A bare name matches a nested layer when it is unique (``block3_conv1`` for
    ``vgg16/block3_conv1``); ``*`` stands for every layer with a 4-D output.
    """
    by_path = {row["path"]: row for row in table}
    by_name: dict[str, list[str]] = {}
    for row in table:
        by_name.setdefault(row["name"], []).append(row["path"])
    out: list[str] = []
    for spec in specs:
        key = str(spec).strip()
        if key == "*":
            out.extend(row["path"] for row in table if row["channels"] is not None)
            continue
        if key in by_path:
            out.append(key)
        elif key in by_name and len(by_name[key]) == 1:
            out.append(by_name[key][0])
        elif key in by_name:
            raise LayerNotFound(f"layer name {key!r} is ambiguous: use one of {by_name[key]}")
        elif key.lstrip("-").isdigit() and -len(table) <= int(key) < len(table):
            out.append(table[int(key)]["path"])
        else:
            raise LayerNotFound(
                f"no layer {key!r} in this model; layers are named by name, path or index "
                f"(0-{len(table) - 1}), see GET /v1/models/{{id}}"
            )
    return list(dict.fromkeys(out))


def spatial_layers(table: Sequence[dict[str, Any]]) -> list[str]:
    """Paths of every layer with a 4-D (N, H, W, C) output: the default activation set."""
    return [row["path"] for row in table if row["channels"] is not None]


def feature_model(
    model: keras.Model, paths: Sequence[str], *, any_size: bool = False
) -> keras.Model:
    """A model from ``model``'s input to the outputs of ``paths``, sharing its weights.

    Nothing past the last wanted layer is part of it. ``any_size=True`` asks for an input of
    any height and width (see ``_trace``); it raises ``InvalidRequest`` when a layer before
    the cut needs the model's fixed size.
    """
    import keras

    try:
        traced = _trace(model, wanted=set(paths), any_size=any_size)
    except Exception as exc:  # noqa: BLE001 - a layer refused the free-size input
        if not any_size:
            raise
        raise InvalidRequest(
            f"this cut of the model needs its fixed input size: {_short(exc)}"
        ) from None
    missing = [p for p in paths if p not in traced or p == "__input__"]
    if missing:
        raise LayerNotFound(f"no layer {missing[0]!r} in this model")
    outputs = [traced[p][1] for p in paths]
    return keras.Model(traced["__input__"][1], outputs, name=f"{model.name}_features")


def find_layer(model: keras.Model, path: str) -> Any:
    """The layer object at ``path`` (``vgg16/block1_conv1``), descending into sub-models."""
    layer: Any = model
    for part in path.split("/"):
        try:
            layer = layer.get_layer(part)
        except (ValueError, AttributeError):
            raise LayerNotFound(f"no layer {path!r} in this model") from None
    return layer


def input_spec(model: keras.Model) -> tuple[int | None, int | None, int]:
    """(height, width, channels) of the image input; None where any size is accepted."""
    shape = _shape(model.inputs[0].shape)
    if shape[-1] is None:
        raise InvalidRequest("the model's input has no fixed channel count")
    return shape[1], shape[2], int(shape[-1])
