"""The gradient ascent loop: ``visualize(model, layer, channels, config) -> AscentResult``.

Image ``i`` of one batch maximizes channel ``channels[i]``, so a job of N channels is one
compiled ``tf.function`` step run ``steps`` times (xplique ``features_visualizations/optim.py``
compiles one step the same way; lucid ``optvis/render.py`` gave the defaults: Adam 0.05, a
decorrelated FFT image and the standard transforms). The model is cut at the target layer so
that nothing after it runs.

Per step: draw the images in [0, 1] -> random transforms (stateless, seeded by the job seed
and the step) -> resize to the model's fixed input size if it has one -> 0-255 -> the model's
preprocessing -> the cut model -> one target activation per image, minus the regularizers ->
gradient per image (optionally clipped or normalized) -> Adam or SGD update.

Compiled steps are cached per (model, layer, batch, size, graph options) together with their
variables; a new job re-initializes the variables in place, so a second job on the same model
does not trace again. The loop returns arrays and never prints; it reports through a
``progress(step, activations)`` callback that may ask it to stop.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import tensorflow as tf

from featureviz.ascent import regularizers as regs
from featureviz.ascent import transforms as tfm
from featureviz.ascent.objectives import batch_of_channels
from featureviz.ascent.param import ImageParam, image_param
from featureviz.errors import Cancelled, InvalidRequest
from featureviz.preprocess import check_mode, preprocess

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

Progress = Callable[[int, np.ndarray], "bool | None"]
_CACHE_SIZE = 4
_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPSILON = 0.9, 0.999, 1e-8  # lucid used TF1's defaults
_traces = 0
# For a layer ending in ReLU the gradient follows mean(relu(pre)) + w * mean(pre): the second
# term wakes channels that are zero everywhere on the grey start (lucid optimizes *_pre_relu
# tensors for the same reason). On the demo VGG16, w = 1 woke 6 of 8 block1_conv2 channels in
# 64 steps where w = 0 left 3 at zero; w = 1000 (pre-activation only) reached lower targets.
_PRE_RELU_WEIGHT = 1.0


@dataclass(frozen=True)
class AscentConfig:
    """Options of one run; the ones that change the graph are part of the compile cache key.

    Defaults are lucid's ``render_vis`` (Adam, decorrelated FFT image, standard transforms,
    no regularizers) except the learning rate: lucid's 0.05 assumes 512 steps, and on the
    demo VGG16 at 256 steps it left block1 channels below what natural photos reach; 0.1
    brings them above (median ratio 1.03) while deeper layers stay textures, not noise.
    ``regularizers`` takes ``l2``, ``tv`` and ``blur`` weights; ``clip_grad`` bounds each
    image's gradient norm and ``normalize_grad`` divides by it (the lectures' variant).
    """

    steps: int = 256
    learning_rate: float = 0.1
    size: int = 128
    parameterization: Literal["fft", "pixel"] = "fft"
    decorrelate: bool = True
    transforms: Literal["standard", "none"] | tuple[str, ...] = "standard"
    regularizers: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"l2": 0.0, "tv": 0.0, "blur": 0.0})
    )
    seed: int = 0
    snapshot_every: int = 0
    optimizer: Literal["adam", "sgd"] = "adam"
    clip_grad: float | None = None
    normalize_grad: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 100_000:
            raise ValueError(f"steps must be an integer in 1..100000, got {self.steps!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not isinstance(self.size, int) or not 8 <= self.size <= 2048:
            raise ValueError(f"size must be an integer in 8..2048, got {self.size!r}")
        if self.parameterization not in ("fft", "pixel"):
            raise ValueError(
                f"parameterization must be 'fft' or 'pixel', got {self.parameterization!r}"
            )
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0, got {self.snapshot_every!r}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be > 0 or None, got {self.clip_grad!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.transforms, str):
            object.__setattr__(self, "transforms", tuple(self.transforms))
        tfm.factory(self.transforms, self.size)  # raises ValueError on a bad spec
        weights = {str(k): float(v) for k, v in dict(self.regularizers).items()}
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"regularizer weights must be >= 0, got {weights}")
        regs.factory(weights)  # raises ValueError on an unknown name
        object.__setattr__(self, "regularizers", MappingProxyType(weights))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AscentConfig:
        """The config named by a job's parameters; other keys (layer, channels ...) are ignored.

        The API validates a request with it and the worker runs the job with it, so both read
        the same parameters the same way.
        """
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in params.items() if key in names})

    def graph_key(self) -> tuple[Any, ...]:
        """The options baked into a compiled step (the learning rate is an argument)."""
        return (
            self.size,
            self.parameterization,
            self.decorrelate,
            self.transforms,
            tuple(sorted((k, v) for k, v in self.regularizers.items() if v)),
            self.optimizer,
            self.clip_grad,
            self.normalize_grad,
        )

    def __hash__(self) -> int:
        return hash(
            (self.graph_key(), self.steps, self.learning_rate, self.seed, self.snapshot_every)
        )


@dataclass
class AscentResult:
    """Everything a job stores: final images, per-step activations, snapshots, names."""

    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    history: np.ndarray  # (steps, N) target activation of the transformed image per step
    snapshots: np.ndarray  # (S, N, H, W, 3)
    snapshot_steps: list[int]
    channels: list[int]
    layer: str
    objective_values: np.ndarray  # (N,) target activation of the final, untransformed image


def trace_count() -> int:
    """How many times a step function has been traced in this process (for tests, metrics)."""
    return _traces


def visualize(
    model: keras.Model,
    layer: str,
    channels: Sequence[int],
    config: AscentConfig = AscentConfig(),  # noqa: B008 - immutable
    *,
    preprocess: str = "rescale",
    objective_kind: Literal["channel", "neuron"] = "channel",
    progress: Progress | None = None,
    progress_every: int = 5,
) -> AscentResult:
    """Optimize one image per channel of ``layer`` so that it excites that channel.

    Raises ``LayerNotFound`` for an unknown layer, ``InvalidRequest`` when the layer has no
    channel axis or a channel is out of range, ``ValueError`` for bad options and
    ``Cancelled`` when ``progress`` returns True.
    """
    if not isinstance(config, AscentConfig):
        raise TypeError(f"config must be an AscentConfig, got {type(config).__name__}")
    check_mode(preprocess)
    if objective_kind not in ("channel", "neuron"):
        raise ValueError(f"objective_kind must be 'channel' or 'neuron', got {objective_kind!r}")
    if progress_every < 1:
        raise ValueError(f"progress_every must be >= 1, got {progress_every}")
    chosen = _check_channel_list(channels)
    engine = _engine(model, layer, len(chosen), config, preprocess, objective_kind)
    engine.check_channels(chosen)

    with engine.lock:
        started = time.perf_counter()
        engine.reset(config.seed, chosen)
        lr = tf.constant(config.learning_rate, tf.float32)
        history = np.empty((config.steps, len(chosen)), dtype="float32")
        snapshots: list[np.ndarray] = []
        snapshot_steps: list[int] = []
        for step in range(1, config.steps + 1):
            seed = tf.constant([config.seed, step], tf.int64)
            history[step - 1] = engine.step(seed, lr).numpy()
            last = step == config.steps
            if last or (config.snapshot_every and step % config.snapshot_every == 0):
                snapshots.append(engine.rgb())
                snapshot_steps.append(step)
            if progress is not None and (step % progress_every == 0 or last):
                if progress(step, history[step - 1].copy()) is True:
                    logger.info("ascent on %s cancelled at step %d", layer, step)
                    raise Cancelled(f"cancelled at step {step} of {config.steps}")
        values = engine.evaluate().numpy().astype("float32")
        logger.info(
            "ascent on %s, %d channels, %d steps in %.1fs",
            layer,
            len(chosen),
            config.steps,
            time.perf_counter() - started,
        )
    return AscentResult(
        images=snapshots[-1],
        history=history,
        snapshots=np.stack(snapshots),
        snapshot_steps=snapshot_steps,
        channels=chosen,
        layer=layer,
        objective_values=values,
    )


def evaluate_channels(
    model: keras.Model,
    layer: str,
    channels: Sequence[int],
    images: np.ndarray,
    *,
    preprocess: str = "rescale",
    objective_kind: Literal["channel", "neuron"] = "channel",
    batch_size: int = 32,
) -> np.ndarray:
    """Target activation of every channel for every image in [0, 1]: (M, N).

    Measures natural images the same way as :attr:`AscentResult.objective_values` (same
    resize, preprocessing and reduction), so the two can be compared.
    """
    chosen = _check_channel_list(channels)
    cut = _cut_model(model, layer)
    fixed = _fixed_size(model) if cut.inputs[0].shape[1] is not None else None
    rows = []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(np.asarray(images[start : start + batch_size], "float32"))
        if fixed is not None:
            x = tf.image.resize(x, fixed, method="bilinear")
        acts = cut(_preprocessed(x, preprocess), training=False)
        acts = acts[0] if isinstance(acts, list | tuple) else acts
        if objective_kind == "neuron":
            h, w = acts.shape[1] // 2, acts.shape[2] // 2
            picked = acts[:, h, w, :]
        else:
            picked = tf.reduce_mean(acts, axis=[1, 2])
        rows.append(tf.gather(picked, chosen, axis=-1).numpy())
    return np.concatenate(rows).astype("float32")


class _Engine:
    """A compiled step and the state it updates, for one model, layer, batch and config."""

    def __init__(
        self,
        model: keras.Model,
        layer: str,
        batch: int,
        config: AscentConfig,
        mode: str,
        kind: Literal["channel", "neuron"],
    ) -> None:
        self.model_ref = weakref.ref(model)
        self.lock = threading.Lock()
        cut, pre_relu, out_shape = _cut_before_relu(model, layer)
        if len(out_shape) != 4 or out_shape[-1] is None:
            raise InvalidRequest(
                f"layer {layer!r} has output shape {out_shape}, no channel axis to visualize"
            )
        self.n_channels = int(out_shape[-1])
        self.layer = layer
        colours = _input_channels(model)
        self.channels = tf.Variable(tf.zeros([batch], tf.int32), trainable=False)
        param: ImageParam = image_param(
            config.parameterization,
            batch,
            config.size,
            colours,
            seed=config.seed,
            decorrelate=config.decorrelate,
        )
        self.param = param
        transform = tfm.factory(config.transforms, config.size)
        fixed = _fixed_size(model) if cut.inputs[0].shape[1] is not None else None
        to_input = tfm.resize_to(*fixed) if fixed is not None else tfm.identity
        objective = batch_of_channels(layer, self.channels, kind)
        penalty = regs.factory(config.regularizers)
        update = _Update(config, param)
        self._reset_optimizer = update.reset

        def target_of(images: Any) -> tuple[Any, Any]:
            """(reported target, what the gradient follows) for images in [0, 1]."""
            out = cut(_preprocessed(images, mode), training=False)
            out = out[0] if isinstance(out, list | tuple) else out
            if pre_relu is None:
                target = objective({layer: out})
                return target, target
            pre = pre_relu(out)
            target = objective({layer: tf.nn.relu(pre)})
            return target, target + _PRE_RELU_WEIGHT * objective({layer: pre})

        def ascent_step(seed: Any, lr: Any) -> Any:
            global _traces
            _traces += 1
            with tf.GradientTape() as tape:
                images = param.images()
                seen = to_input(transform(images, seed), seed)
                target, gain = target_of(seen)
                gain = gain if penalty is None else gain - penalty(images)
                total = tf.reduce_sum(gain)  # images are independent: per-image gradients
            grads = tape.gradient(total, param.variables)
            update(grads, lr)
            return target

        def final_target() -> Any:
            return target_of(to_input(param.images(), None))[0]

        spec = [tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.float32)]
        # no autograph: the step has no tensor-dependent Python control flow to convert
        self.step = tf.function(
            ascent_step, input_signature=spec, reduce_retracing=True, autograph=False
        )
        self.evaluate = tf.function(final_target, input_signature=[], autograph=False)
        self._images = tf.function(param.images, input_signature=[], autograph=False)

    def check_channels(self, channels: list[int]) -> None:
        bad = [c for c in channels if c >= self.n_channels]
        if bad:
            raise InvalidRequest(
                f"channel {bad[0]} out of range: layer {self.layer!r} has "
                f"{self.n_channels} channels (0-{self.n_channels - 1})"
            )

    def reset(self, seed: int, channels: list[int]) -> None:
        self.channels.assign(channels)
        self.param.reset(seed)
        self._reset_optimizer()

    def rgb(self) -> np.ndarray:
        images = self._images().numpy().astype("float32")
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        return images


class _Update:
    """A resettable optimizer over the image variables; gradients are for *ascent*."""

    def __init__(self, config: AscentConfig, param: ImageParam) -> None:
        self.config = config
        self.variables = param.variables
        self.axis = param.batch_axis
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.t = tf.Variable(0.0, trainable=False)

    def reset(self) -> None:
        for slot in (*self.m, *self.v):
            slot.assign(tf.zeros_like(slot))
        self.t.assign(0.0)

    def _per_image(self, g: Any) -> Any:
        axes = [a for a in range(len(g.shape)) if a != self.axis]
        norm = tf.sqrt(tf.reduce_sum(tf.square(g), axis=axes, keepdims=True)) + 1e-12
        if self.config.normalize_grad:
            g = g / norm
        if self.config.clip_grad is not None:
            g = g * tf.minimum(1.0, self.config.clip_grad / norm)
        return g

    def __call__(self, grads: Sequence[Any], lr: Any) -> None:
        t = self.t.assign_add(1.0)
        for var, g, m, v in zip(self.variables, grads, self.m, self.v, strict=True):
            g = self._per_image(g)
            if self.config.optimizer == "sgd":
                var.assign_add(lr * g)
                continue
            m.assign(_ADAM_BETA1 * m + (1 - _ADAM_BETA1) * g)
            v.assign(_ADAM_BETA2 * v + (1 - _ADAM_BETA2) * tf.square(g))
            m_hat = m / (1 - tf.pow(_ADAM_BETA1, t))
            v_hat = v / (1 - tf.pow(_ADAM_BETA2, t))
            var.assign_add(lr * m_hat / (tf.sqrt(v_hat) + _ADAM_EPSILON))


_engines: OrderedDict[tuple[Any, ...], _Engine] = OrderedDict()
_engines_lock = threading.Lock()


def _engine(
    model: keras.Model,
    layer: str,
    batch: int,
    config: AscentConfig,
    mode: str,
    kind: Literal["channel", "neuron"],
) -> _Engine:
    """The cached engine for this key, built (and traced on first use) when missing."""
    key = (id(model), layer, batch, mode, kind, config.graph_key())
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None and engine.model_ref() is model:
            _engines.move_to_end(key)
            return engine
    engine = _Engine(model, layer, batch, config, mode, kind)
    with _engines_lock:
        _engines[key] = engine
        _engines.move_to_end(key)
        while len(_engines) > _CACHE_SIZE:
            _engines.popitem(last=False)
    return engine


def clear_cache() -> None:
    """Drop every compiled step (their variables and cut models go with them)."""
    with _engines_lock:
        _engines.clear()


def _cut_model(model: keras.Model, layer: str) -> keras.Model:
    """The model up to ``layer``, taking any image size when the layers before it allow.

    A trained VGG16 saved at 224x224 is fully convolutional up to its conv base, so a 128 px
    ascent runs at 128 px (about 2.7x fewer operations) instead of being resized to 224.
    """
    from featureviz.models import feature_model

    try:
        return feature_model(model, [layer], any_size=True)
    except InvalidRequest:
        return feature_model(model, [layer])


def _cut_before_relu(
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

    cut = _cut_model(model, layer)
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


def _fixed_size(model: keras.Model) -> tuple[int, int] | None:
    """The model's fixed (height, width), or None when it accepts any size."""
    from featureviz.models import input_spec

    h, w, _ = input_spec(model)
    if h is None and w is None:
        return None
    if h is None or w is None:
        raise InvalidRequest("models with only one fixed spatial dimension are not supported")
    return h, w


def _input_channels(model: keras.Model) -> int:
    from featureviz.models import input_spec

    if len(model.inputs) != 1:
        raise InvalidRequest(f"the model has {len(model.inputs)} inputs; one image input needed")
    _, _, channels = input_spec(model)
    if channels not in (1, 3):
        raise InvalidRequest(f"the model's input has {channels} channels; 1 or 3 supported")
    return channels


def _preprocessed(images: Any, mode: str) -> Any:
    return preprocess(images * 255.0, mode)


def _check_channel_list(channels: Sequence[int]) -> list[int]:
    if isinstance(channels, str | bytes) or not isinstance(channels, Sequence | np.ndarray):
        raise InvalidRequest("channels must be a list of integers")
    chosen = []
    for c in channels:
        if isinstance(c, bool) or not isinstance(c, int | np.integer):
            raise InvalidRequest(f"channel {c!r} is not an integer")
        if c < 0:
            raise InvalidRequest(f"channel {c} is negative")
        chosen.append(int(c))
    if not chosen:
        raise InvalidRequest("no channels given")
    return chosen
