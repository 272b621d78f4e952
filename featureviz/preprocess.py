"""Per-model input preprocessing: ``preprocess(x, mode) -> x'`` on 0-255 RGB pixels.

A model declares how it was trained (``rescale`` = x/255 is the lectures' default). The same
arithmetic runs on NumPy arrays (activations) and on TensorFlow tensors (gradient ascent), so
only operators both support are used here.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

Preprocess = Literal["none", "rescale", "caffe", "tf", "torch"]
PREPROCESS_MODES: tuple[str, ...] = get_args(Preprocess)

# ImageNet statistics as used by keras.applications' "caffe" and "torch" modes.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def check_mode(mode: str) -> Preprocess:
    """Return ``mode`` if it is a known preprocessing mode, else raise ``ValueError``."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess {mode!r}; one of {', '.join(PREPROCESS_MODES)}")
    return mode  # type: ignore[return-value]


def preprocess(x: Any, mode: str) -> Any:
    """Map 0-255 pixels (NHWC, last axis channels) to what the model was trained on.

    Three-channel inputs are taken as RGB; ``caffe`` flips them to BGR as Keras does. For one
    channel the ImageNet statistics are averaged over colours.
    """
    mode = check_mode(mode)
    if mode == "none":
        return x
    if mode == "rescale":
        return x / 255.0
    if mode == "tf":
        return x / 127.5 - 1.0
    channels = x.shape[-1]
    if mode == "caffe":
        if channels == 3:
            return x[..., ::-1] - _constant(_CAFFE_MEAN_BGR)
        return x - sum(_CAFFE_MEAN_BGR) / 3
    # torch
    if channels == 3:
        return (x / 255.0 - _constant(_TORCH_MEAN)) / _constant(_TORCH_STD)
    return (x / 255.0 - sum(_TORCH_MEAN) / 3) / (sum(_TORCH_STD) / 3)


def _constant(values: tuple[float, ...]) -> Any:
    import numpy as np

    return np.asarray(values, dtype="float32")
