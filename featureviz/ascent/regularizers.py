"""Penalties on the image: ``factory(weight) -> (images (B,H,W,C)) -> penalty (B,)``.

Subtracted from the objective so that the optimum stays image-like (xplique
``features_visualizations/regularizers.py``; lucid ``objectives.L2``, ``total_variation`` and
``blur_input_each_step``). Each returns one value per image, so that the images of a batch
stay independent. Images are in [0, 1]; penalties are means over pixels, so a weight means the
same thing at every image size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

Regularizer = Callable[[Any], Any]


def l2(weight: float) -> Regularizer:
    """Mean squared distance from mid-grey: keeps colours from saturating."""

    def l2_from_grey(images: Any) -> Any:
        return weight * tf.reduce_mean(tf.square(images - 0.5), axis=[1, 2, 3])

    return l2_from_grey


def total_variation(weight: float) -> Regularizer:
    """Mean absolute difference between neighbouring pixels: suppresses speckle."""

    def mean_abs_gradient(images: Any) -> Any:
        dy = tf.reduce_mean(tf.abs(images[:, 1:, :, :] - images[:, :-1, :, :]), axis=[1, 2, 3])
        dx = tf.reduce_mean(tf.abs(images[:, :, 1:, :] - images[:, :, :-1, :]), axis=[1, 2, 3])
        return weight * (dx + dy)

    return mean_abs_gradient


def blur(weight: float) -> Regularizer:
    """Squared distance to a 3x3-blurred copy of itself, held constant (lucid
    ``blur_input_each_step``): pulls each step toward a smoother image."""
    box = tf.ones((3, 3, 1, 1), tf.float32) / 9.0

    def distance_to_blurred(images: Any) -> Any:
        channels = images.shape[-1]
        kernel = tf.tile(box, [1, 1, channels, 1])
        padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
        blurred = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")
        return weight * tf.reduce_mean(
            tf.square(images - tf.stop_gradient(blurred)), axis=[1, 2, 3]
        )

    return distance_to_blurred


REGULARIZERS: dict[str, Callable[[float], Regularizer]] = {
    "l2": l2,
    "tv": total_variation,
    "blur": blur,
}


def factory(weights: Mapping[str, float]) -> Regularizer | None:
    """``{"l2": 0.1, "tv": 0.0}`` -> one summed penalty, or None when every weight is zero."""
    unknown = set(weights) - set(REGULARIZERS)
    if unknown:
        raise ValueError(f"unknown regularizers {sorted(unknown)}; one of {sorted(REGULARIZERS)}")
    active = [REGULARIZERS[name](float(w)) for name, w in sorted(weights.items()) if w]
    if not active:
        return None

    def summed_penalty(images: Any) -> Any:
        return tf.add_n([reg(images) for reg in active])

    return summed_penalty
