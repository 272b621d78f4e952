"""Gradient ascent feature visualization: ``visualize(model, layer, channels) -> AscentResult``.

Ideas from lucid (objectives, FFT and colour parameterization, transforms, defaults) and
xplique (one batch for many objectives, a compiled step); see each module.
"""

from __future__ import annotations

from featureviz.ascent.config import AscentConfig, AscentResult
from featureviz.ascent.objectives import (
    Objective,
    as_objective,
    batch_of_channels,
    channel,
    layer_objective,
    neuron,
    weighted_sum,
)
from featureviz.ascent.optimize import clear_cache, evaluate_channels, trace_count, visualize
from featureviz.ascent.param import fft_image, pixel_image, to_valid_rgb
from featureviz.ascent.regularizers import blur, l2, total_variation
from featureviz.ascent.transforms import (
    compose,
    jitter,
    pad,
    random_rotate,
    random_scale,
    standard_transforms,
)

__all__ = [
    "AscentConfig",
    "AscentResult",
    "Objective",
    "as_objective",
    "batch_of_channels",
    "blur",
    "channel",
    "clear_cache",
    "compose",
    "evaluate_channels",
    "fft_image",
    "jitter",
    "l2",
    "layer_objective",
    "neuron",
    "pad",
    "pixel_image",
    "random_rotate",
    "random_scale",
    "standard_transforms",
    "to_valid_rgb",
    "total_variation",
    "trace_count",
    "visualize",
    "weighted_sum",
]
