"""What gradient ascent maximizes: ``Objective(acts: {layer: (B,H,W,C)}) -> loss (B,)``.

Objectives are immutable values that compose like numbers, as in lucid
(``lucid/optvis/objectives.py``, ``Objective`` and ``wrap_objective``): ``a + b``, ``3 * a``,
``a - b`` and ``-a`` return new objectives, each weight applies to its own term only and the
names join. Unlike lucid, every objective returns one loss *per image*, so that one batch can
optimize many things at once; :func:`batch_of_channels` gives image ``i`` the channel
``channels[i]`` through a one-hot mask, the way xplique stacks one mask per image
(``xplique/features_visualizations/objectives.py``, ``Objective.compile``).

``as_objective`` parses the API's form: ``"layer:channel"``, ``"neuron:layer:channel"``,
``"channel:layer:channel"`` and ``"layer:layer"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import tensorflow as tf

Acts = Mapping[str, Any]
TermFn = Callable[[Acts], Any]


@dataclass(frozen=True)
class Term:
    """One named factory output: a function of the activations and the layers it reads."""

    fn: TermFn
    name: str
    layers: tuple[str, ...]


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms; calling it on the activations gives a loss per image (B,).

    Kept as ``((weight, term), ...)`` rather than nested lambdas so that composing never
    touches an operand, names can be rebuilt, and :attr:`layers` says what the model must
    compute.
    """

    terms: tuple[tuple[float, Term], ...]

    @property
    def name(self) -> str:
        parts = []
        for weight, term in self.terms:
            if weight == 1.0:
                parts.append(term.name)
            elif weight == -1.0:
                parts.append(f"-{term.name}")
            else:
                parts.append(f"{weight:g} * {term.name}")
        return " + ".join(parts)

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer path the terms read, in first-use order."""
        seen: dict[str, None] = {}
        for _, term in self.terms:
            seen.update(dict.fromkeys(term.layers))
        return tuple(seen)

    def __call__(self, acts: Acts) -> Any:
        total = None
        for weight, term in self.terms:
            value = term.fn(acts)
            value = value if weight == 1.0 else weight * value
            total = value if total is None else total + value
        return total

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, int | float):
            if other == 0:
                return self
            return self + constant(float(other))
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __radd__(self, other: Objective | float) -> Objective:
        # sum() starts from 0
        return self.__add__(other)

    def __mul__(self, factor: float) -> Objective:
        if not isinstance(factor, int | float) or isinstance(factor, bool):
            return NotImplemented
        return Objective(tuple((w * float(factor), t) for w, t in self.terms))

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __repr__(self) -> str:
        return f"Objective({self.name!r})"


def wrap_objective(factory: Callable[..., TermFn]) -> Callable[..., Objective]:
    """Turn ``factory(layer, *args) -> (acts -> (B,))`` into one returning a named Objective.

    The name is ``factory_name(layer, args...)`` so that a job's objective reads like the call
    that made it (lucid's ``wrap_objective`` does the same with the description).
    """

    @functools.wraps(factory)
    def make(layer: str, *args: Any) -> Objective:
        shown = ", ".join([layer, *map(str, args)])
        term = Term(fn=factory(layer, *args), name=f"{factory.__name__}({shown})", layers=(layer,))
        return Objective(((1.0, term),))

    return make


def constant(value: float) -> Objective:
    """A term that does not depend on the activations (to make ``objective + 1`` work)."""

    def constant_term(acts: Acts) -> Any:
        first = next(iter(acts.values()))
        return tf.fill(tf.shape(first)[:1], tf.cast(value, first.dtype))

    return Objective(((1.0, Term(constant_term, f"{value:g}", ())),))


@wrap_objective
def channel(layer: str, c: int) -> TermFn:
    """Mean activation of channel ``c`` over all positions: the lectures' filter loss."""

    def channel_mean(acts: Acts) -> Any:
        return tf.reduce_mean(acts[layer][..., c], axis=[1, 2])

    return channel_mean


@wrap_objective
def neuron(layer: str, c: int) -> TermFn:
    """Activation of channel ``c`` at the centre position only (lucid ``neuron``)."""

    def centre_value(acts: Acts) -> Any:
        t = acts[layer]
        shape = tf.shape(t)
        return t[:, shape[1] // 2, shape[2] // 2, c]

    return centre_value


@wrap_objective
def layer_objective(layer: str) -> TermFn:
    """Mean of the squared activations of the whole layer (lucid ``deepdream``).

    Squares rather than plain means so that strong responses of a few channels count more
    than weak responses of many, which is what makes DeepDream-like images vivid.
    """

    def mean_square(acts: Acts) -> Any:
        return tf.reduce_mean(tf.square(acts[layer]), axis=[1, 2, 3])

    return mean_square


def weighted_sum(objectives: Sequence[Objective], weights: Sequence[float]) -> Objective:
    """``sum(w * o)``: a convenience for combining objectives built from a request."""
    if len(objectives) != len(weights) or not objectives:
        raise ValueError("need as many weights as objectives, and at least one")
    return sum((w * o for o, w in zip(objectives, weights, strict=True)), start=0)  # type: ignore[return-value]


def batch_of_channels(
    layer: str,
    channels: Sequence[int] | Any,
    kind: Literal["channel", "neuron"] = "channel",
) -> Objective:
    """Image ``i`` of the batch maximizes channel ``channels[i]``: N channels, one run.

    ``channels`` may be a ``tf.Variable`` of int32 so that a compiled step can be reused for
    another set of channels without tracing again. The selection is a one-hot mask per image
    (xplique's stack of masks), a cheap multiply next to the convolutions.
    """
    if kind not in ("channel", "neuron"):
        raise ValueError(f"kind must be 'channel' or 'neuron', got {kind!r}")
    index = channels if isinstance(channels, tf.Variable) else tf.constant(channels, tf.int32)

    def selected(acts: Acts) -> Any:
        t = acts[layer]
        mask = tf.one_hot(index, tf.shape(t)[-1], dtype=t.dtype)  # (B, C)
        if kind == "neuron":
            shape = tf.shape(t)
            t = t[:, shape[1] // 2, shape[2] // 2, :]
        else:
            t = tf.reduce_mean(t, axis=[1, 2])
        return tf.reduce_sum(t * mask, axis=-1)

    shown = "..." if isinstance(channels, tf.Variable) else ", ".join(map(str, channels))
    term = Term(selected, f"{kind}s({layer}, [{shown}])", (layer,))
    return Objective(((1.0, term),))


def as_objective(spec: str | Objective) -> Objective:
    """Parse the API's objective strings; objectives pass through unchanged.

    ``"block3_conv1:12"`` and ``"channel:block3_conv1:12"`` -> :func:`channel`,
    ``"neuron:block3_conv1:12"`` -> :func:`neuron`, ``"layer:block3_conv1"`` ->
    :func:`layer_objective`. Nested layer paths such as ``vgg16/block3_conv1`` are kept whole.
    """
    if isinstance(spec, Objective):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"objective must be a string or an Objective, got {type(spec).__name__}")
    parts = spec.strip().split(":")
    if len(parts) == 2 and parts[0] == "layer" and parts[1]:
        return layer_objective(parts[1])
    if len(parts) == 3 and parts[0] in ("channel", "neuron"):
        factory = channel if parts[0] == "channel" else neuron
        return factory(parts[1], _channel_index(parts[2], spec))
    if len(parts) == 2 and parts[0]:
        return channel(parts[0], _channel_index(parts[1], spec))
    raise ValueError(
        f"cannot parse objective {spec!r}; use 'layer:channel', 'neuron:layer:channel' "
        "or 'layer:layer'"
    )


def _channel_index(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"channel in objective {spec!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"channel in objective {spec!r} is negative")
    return value
