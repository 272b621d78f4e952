"""Intermediate activations: one compiled function per (model, layer set), cached.

Core signatures::

    ActivationFunction(model, paths)(batch) -> {path: float32 (N, H, W, C)}
    FunctionCache(maxsize).get(key, factory) -> cached value
    parse_channels("0-7,12") -> [0, 1, ..., 7, 12]
    select_channels(arrays, channels) -> arrays with only those channels

The lectures build ``keras.Model(model.inputs, [layer.output ...])`` and call ``predict``;
``predict`` re-wraps its input in a dataset on every call, so here the cut model is wrapped
once in a ``tf.function`` with a batch-agnostic input signature: the first call traces, every
later call on the same (model, layers) runs the compiled graph.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from featureviz.errors import InvalidRequest
from featureviz.models import feature_model
from featureviz.preprocess import preprocess

T = TypeVar("T")


class ActivationFunction:
    """The compiled function from a raw 0-255 batch to the activations of ``paths``.

    Preprocessing runs inside the graph, so one call does everything after decoding.
    """

    def __init__(self, model: Any, paths: Sequence[str], *, preprocess_mode: str = "none") -> None:
        import tensorflow as tf

        self.paths = list(paths)
        self.traces = 0
        cut = feature_model(model, self.paths)
        shape = [None, *model.inputs[0].shape[1:]]

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)], reduce_retracing=True)
        def run(batch: Any) -> list[Any]:
            self.traces += 1  # Python side effect: counts traces, not calls
            outs = cut(preprocess(batch, preprocess_mode), training=False)
            return list(outs) if isinstance(outs, list | tuple) else [outs]

        self._run = run
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:  # tracing is not thread-safe; running the graph is cheap to serialize
            outs = self._run(np.asarray(batch, dtype=np.float32))
        return {p: np.asarray(o, dtype=np.float32) for p, o in zip(self.paths, outs, strict=True)}


class FunctionCache:
    """A small thread-safe LRU for loaded models and compiled functions, with hit counters."""

    def __init__(self, maxsize: int = 32) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.RLock()
        self._building: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, factory: Callable[[], T]) -> T:
        """Return the cached value for ``key``, building it once with ``factory`` if absent."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            build_lock = self._building.setdefault(key, threading.Lock())
        with build_lock:  # one build per key, even when requests race
            with self._lock:
                if key in self._items:
                    self.hits += 1
                    return self._items[key]
            value = factory()
            with self._lock:
                self.misses += 1
                self._items[key] = value
                self._building.pop(key, None)
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
            return value

    def drop(self, predicate: Callable[[Hashable], bool]) -> None:
        """Forget every entry whose key matches (e.g. all functions of a deleted model)."""
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                del self._items[key]

    def __len__(self) -> int:
        return len(self._items)


def parse_channels(spec: str | Sequence[int] | None, *, limit: int = 4096) -> list[int] | None:
    """Parse ``"0-7,12"`` into ``[0, ..., 7, 12]``; None or empty means every channel."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return [int(c) for c in spec]
    spec = spec.strip()
    if not spec:
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else ("-", part[1:])
                start, stop = int(lo), int(hi)
                if stop < start:
                    raise InvalidRequest(f"channel range {part!r} runs backwards")
                if stop - start >= limit:
                    raise InvalidRequest(f"channel range {part!r} is longer than {limit}")
                out.extend(range(start, stop + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise InvalidRequest(f"channels must look like '0-7,12', got {spec!r}") from None
        if len(out) > limit:
            raise InvalidRequest(f"more than {limit} channels asked for")
    return list(dict.fromkeys(out))


def check_channels(channels: Sequence[int], available: int, *, layer: str) -> None:
    """Raise ``InvalidRequest`` naming the valid range when a channel does not exist."""
    bad = [c for c in channels if not 0 <= c < available]
    if bad:
        raise InvalidRequest(
            f"channel {bad[0]} is out of range for layer {layer!r}, "
            f"which has channels 0-{available - 1}"
        )


def select_channels(
    arrays: Mapping[str, np.ndarray], channels: Sequence[int] | None
) -> dict[str, np.ndarray]:
    """Keep only ``channels`` (last axis) of every array; None keeps everything."""
    if channels is None:
        return dict(arrays)
    out = {}
    for path, arr in arrays.items():
        check_channels(channels, arr.shape[-1], layer=path)
        out[path] = np.ascontiguousarray(arr[..., list(channels)])
    return out
