"""What one gradient-ascent run is asked for (``AscentConfig``) and what it gives back.

``AscentConfig`` validates itself on construction, so the API refuses a bad job before it is
queued and the worker reads the same parameters the same way (``from_params``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from featureviz.ascent import regularizers as regs
from featureviz.ascent import transforms as tfm

__all__ = ["AscentConfig", "AscentResult"]


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
