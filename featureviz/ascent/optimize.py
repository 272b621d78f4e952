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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import tensorflow as tf

from featureviz.ascent import regularizers as regs
from featureviz.ascent import transforms as tfm
from featureviz.ascent.config import AscentConfig, AscentResult
from featureviz.ascent.cut import cut_before_relu, cut_model, fixed_size, input_channels
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
    cut = cut_model(model, layer)
    fixed = fixed_size(model) if cut.inputs[0].shape[1] is not None else None
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
        cut, pre_relu, out_shape = cut_before_relu(model, layer)
        if len(out_shape) != 4 or out_shape[-1] is None:
            raise InvalidRequest(
                f"layer {layer!r} has output shape {out_shape}, no channel axis to visualize"
            )
        self.n_channels = int(out_shape[-1])
        self.layer = layer
        colours = input_channels(model)
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
        fixed = fixed_size(model) if cut.inputs[0].shape[1] is not None else None
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
