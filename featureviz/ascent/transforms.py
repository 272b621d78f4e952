"""Random image transforms applied every step: ``factory(config) -> (images, seed) -> images``.

Transformation robustness (lucid ``lucid/optvis/transform.py``; xplique
``features_visualizations/transformations.py``): if the activation has to survive a small
random shift, scale and rotation, the optimizer cannot exploit single pixels and the image
becomes a recognizable pattern instead of adversarial noise.

Every transform takes ``(images (B,H,W,C), seed (2,) int32)`` and uses stateless random ops,
so a run is reproducible from its seed and the functions work inside ``tf.function``.
:func:`compose` splits one seed per step into one per transform. Spec strings for the API:
``"pad:12"``, ``"jitter:8"``, ``"scale:0.9..1.1"`` or ``"scale:0.95,1,1.05"``,
``"rotate:-10..10"`` or ``"rotate:-5,0,5"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

Transform = Callable[[Any, Any], Any]

# lucid's standard_transforms were tuned for 224-pixel renders of InceptionV1
_REFERENCE_SIZE = 224


def pad(w: int, value: float = 0.5) -> Transform:
    """Pad by ``w`` pixels of grey, so that jitter reaches the border (lucid ``pad``)."""
    if w < 0:
        raise ValueError(f"pad width must be >= 0, got {w}")

    def pad_constant(images: Any, seed: Any) -> Any:
        return tf.pad(images, [[0, 0], [w, w], [w, w], [0, 0]], constant_values=value)

    return pad_constant


def jitter(d: int) -> Transform:
    """Crop ``d`` pixels off at a random offset: a random translation by up to ``d``."""
    if d < 0:
        raise ValueError(f"jitter must be >= 0, got {d}")

    def random_crop(images: Any, seed: Any) -> Any:
        if d == 0:
            return images
        shape = tf.shape(images)
        offset = tf.random.stateless_uniform([2], seed, 0, d + 1, dtype=tf.int32)
        return tf.slice(
            images,
            tf.stack([0, offset[0], offset[1], 0]),
            tf.stack([shape[0], shape[1] - d, shape[2] - d, shape[3]]),
        )

    return random_crop


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``scales`` (bilinear), as lucid ``random_scale``."""
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {list(scales)}")
    table = tf.constant(np.asarray(scales, dtype="float32"))

    def rescale(images: Any, seed: Any) -> Any:
        index = tf.random.stateless_uniform([], seed, 0, len(scales), dtype=tf.int32)
        hw = tf.cast(tf.shape(images)[1:3], tf.float32)
        new_hw = tf.cast(tf.round(hw * table[index]), tf.int32)
        return tf.cast(tf.image.resize(images, new_hw, method="bilinear"), images.dtype)

    return rescale


def random_rotate(angles_deg: Sequence[float]) -> Transform:
    """Rotate about the centre by an angle drawn from ``angles_deg``, borders reflected."""
    if not angles_deg:
        raise ValueError("angles_deg must not be empty")
    table = tf.constant(np.deg2rad(np.asarray(angles_deg, dtype="float64")).astype("float32"))

    def rotate(images: Any, seed: Any) -> Any:
        index = tf.random.stateless_uniform([], seed, 0, len(angles_deg), dtype=tf.int32)
        angle = table[index]
        shape = tf.shape(images)
        h = tf.cast(shape[1], tf.float32) - 1.0
        w = tf.cast(shape[2], tf.float32) - 1.0
        cos, sin = tf.cos(angle), tf.sin(angle)
        # output -> input coordinates, rotation about the centre (as tfa.image.rotate)
        x_offset = (w - (cos * w - sin * h)) / 2.0
        y_offset = (h - (sin * w + cos * h)) / 2.0
        matrix = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])[None, :]
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=tf.tile(matrix, [shape[0], 1]),
            output_shape=shape[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )

    return rotate


def resize_to(height: int, width: int) -> Transform:
    """Resize to a fixed size: the last transform for models with a fixed input size."""

    def resize_fixed(images: Any, seed: Any) -> Any:
        return tf.image.resize(images, (height, width), method="bilinear")

    return resize_fixed


def compose(*transforms: Transform) -> Transform:
    """Apply in order, each with its own seed split from the step's seed."""
    if not transforms:
        return identity

    def composed(images: Any, seed: Any) -> Any:
        seeds = tf.random.experimental.stateless_split(seed, num=len(transforms))
        for i, transform in enumerate(transforms):
            images = transform(images, seeds[i])
        return images

    return composed


def identity(images: Any, seed: Any) -> Any:
    """No transform (``transforms="none"``)."""
    return images


def standard_transforms(size: int) -> Transform:
    """lucid's standard set, pixel amounts scaled by ``size / 224``.

    pad 12, jitter 8, scale 0.9..1.1, rotate -10..10 degrees (zero five times more likely),
    jitter 4, for a 224-pixel image; at 128 pixels this is pad 7, jitter 5, ..., jitter 2.
    Unlike lucid, the result is resized back to ``size``: padding and scaling would otherwise
    make the network run on up to a quarter more pixels every step, for nothing it learns.
    """
    k = size / _REFERENCE_SIZE
    return compose(
        pad(max(1, round(12 * k))),
        jitter(max(1, round(8 * k))),
        random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        random_rotate([*range(-10, 11), *([0] * 5)]),
        jitter(max(1, round(4 * k))),
        resize_to(size, size),
    )


def from_spec(spec: str) -> Transform:
    """Build one transform from the API's string form, e.g. ``"jitter:8"``."""
    name, _, arg = spec.partition(":")
    name = name.strip()
    try:
        if name == "pad":
            return pad(int(arg))
        if name == "jitter":
            return jitter(int(arg))
        if name == "scale":
            return random_scale(_values(arg, steps=11))
        if name == "rotate":
            return random_rotate(_values(arg, steps=None))
    except ValueError as exc:
        raise ValueError(f"bad transform {spec!r}: {exc}") from None
    raise ValueError(f"unknown transform {spec!r}; one of pad, jitter, scale, rotate")


def factory(config: str | Sequence[str], size: int) -> Transform:
    """``"standard"``, ``"none"`` or a sequence of spec strings -> one composed transform."""
    if config == "standard":
        return standard_transforms(size)
    if config == "none":
        return identity
    if isinstance(config, str):
        raise ValueError(f"transforms must be 'standard', 'none' or a list, got {config!r}")
    return compose(*(from_spec(s) for s in config))


def _values(arg: str, *, steps: int | None) -> list[float]:
    """``"a..b"`` -> a grid (``steps`` points, or whole numbers), ``"a,b,c"`` -> the list."""
    if ".." in arg:
        lo_text, hi_text = arg.split("..", 1)
        lo, hi = float(lo_text), float(hi_text)
        if hi < lo:
            raise ValueError("range end is below its start")
        if steps is None:
            return [float(v) for v in range(math.ceil(lo), math.floor(hi) + 1)] or [lo]
        return [float(v) for v in np.linspace(lo, hi, steps)]
    values = [float(v) for v in arg.split(",") if v.strip()]
    if not values:
        raise ValueError("no values")
    return values
