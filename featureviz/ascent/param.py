"""How the optimized image is represented: ``param(batch, size) -> (variables, fn() -> images)``.

Following lucid (``lucid/optvis/param/spatial.py`` and ``color.py``): the variables are either
the pixels themselves or a 2-D Fourier spectrum whose frequencies are scaled by ``1/f**decay``,
so that Adam's equal steps per coordinate favour low frequencies and the image does not turn
into high-frequency noise. Colours go through lucid's square root of the ImageNet colour
correlation matrix (decorrelated space), then a sigmoid maps everything into [0, 1].

Every parameterization returns the variables to optimize and a function that draws the
current images ``(B, H, W, channels)`` in [0, 1]; ``reset(seed)`` re-draws the starting point
in place so that a compiled step holding the variables can be reused for another job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

# lucid/optvis/param/color.py: sqrt of the colour covariance of ImageNet, via SVD
COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype="float32"
)
_COLOR_CORRELATION_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / np.max(
    np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)
)


@dataclass(frozen=True, eq=False)
class ImageParam:
    """The trainable variables, the image they draw, and a way to start them over.

    ``batch_axis`` is the axis of each variable that indexes images, so that gradients can
    be normalized or clipped per image without one channel's image affecting another's.
    """

    variables: tuple[tf.Variable, ...]
    images: Callable[[], Any]
    reset: Callable[[int], None]
    batch_axis: int = 0

    def __iter__(self):  # unpack as (variables, fn) like lucid's param functions
        return iter((self.variables, self.images))


def to_valid_rgb(t: Any, decorrelate: bool = True) -> Any:
    """Map unbounded values to colours in [0, 1]: optional decorrelation, then a sigmoid.

    Decorrelating means the variables move along the principal colour axes of natural
    images, so a step changes brightness and hue independently (lucid ``to_valid_rgb``).
    One-channel images are only squashed.
    """
    if decorrelate and t.shape[-1] == 3:
        t = tf.tensordot(t, tf.constant(_COLOR_CORRELATION_NORMALIZED.T), axes=1)
    return tf.sigmoid(t)


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of every coefficient of ``irfft2d`` for an h x w image."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + (2 if w % 2 == 1 else 1)]
    return np.sqrt(fx * fx + fy * fy)


def pixel_image(
    batch: int,
    size: int,
    channels: int = 3,
    *,
    seed: int = 0,
    sd: float = 0.01,
    decorrelate: bool = True,
) -> ImageParam:
    """Pixels as variables: the lectures' plain ascent, noisy without strong transforms."""
    _check(batch, size, channels)
    shape = (batch, size, size, channels)

    def initial(s: int) -> np.ndarray:
        return np.random.default_rng(s).normal(scale=sd, size=shape).astype("float32")

    pixels = tf.Variable(initial(seed), name="pixels")

    def draw_pixels() -> Any:
        return to_valid_rgb(pixels, decorrelate)

    def reset(s: int) -> None:
        pixels.assign(initial(s))

    return ImageParam((pixels,), draw_pixels, reset)


def fft_image(
    batch: int,
    size: int,
    channels: int = 3,
    *,
    seed: int = 0,
    sd: float = 0.01,
    decay_power: float = 1.0,
    decorrelate: bool = True,
) -> ImageParam:
    """A spectrum as variables, scaled by ``1/f**decay_power`` (lucid ``fft_image``).

    The ``sqrt(h*w)`` factor and the final ``/4`` are lucid's, so lucid's learning rates carry
    over.
    """
    _check(batch, size, channels)
    h = w = size
    freqs = rfft2d_freqs(h, w)
    shape = (2, batch, channels, *freqs.shape)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay_power
    scale = tf.constant((scale * np.sqrt(w * h)).astype("float32"))

    def initial(s: int) -> np.ndarray:
        return np.random.default_rng(s).normal(scale=sd, size=shape).astype("float32")

    spectrum = tf.Variable(initial(seed), name="spectrum")

    def draw_spectrum() -> Any:
        coeffs = tf.complex(spectrum[0] * scale, spectrum[1] * scale)
        image = tf.signal.irfft2d(coeffs)  # (B, C, H, W')
        image = tf.transpose(image, (0, 2, 3, 1))[:, :h, :w, :]
        return to_valid_rgb(image / 4.0, decorrelate)

    def reset(s: int) -> None:
        spectrum.assign(initial(s))

    return ImageParam((spectrum,), draw_spectrum, reset, batch_axis=1)


def image_param(kind: str, batch: int, size: int, channels: int = 3, **options: Any) -> ImageParam:
    """Pick a parameterization by the API's name (``fft`` or ``pixel``)."""
    if kind == "fft":
        return fft_image(batch, size, channels, **options)
    if kind == "pixel":
        options.pop("decay_power", None)
        return pixel_image(batch, size, channels, **options)
    raise ValueError(f"parameterization must be 'fft' or 'pixel', got {kind!r}")


def _check(batch: int, size: int, channels: int) -> None:
    if batch < 1 or size < 2:
        raise ValueError(f"need batch >= 1 and size >= 2, got {batch} and {size}")
    if channels not in (1, 3):
        raise ValueError(f"images have 1 or 3 channels, got {channels}")
