"""An ascent result as bytes: ``export(result, manifest) -> {name: bytes}``.

A job stores ``grid.png`` (every channel, 8 columns, the lectures' figure) and ``result.npz``
(images, history, snapshots, manifest; loadable with ``allow_pickle=False``); one channel's
PNG and ``frames.gif`` (the snapshots as an animation) are drawn from the npz on request.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from featureviz.encodings import from_npz, to_npz
from featureviz.render import float_images_to_uint8, tile_grid, to_gif, to_png


def grid_png(images: np.ndarray, *, cols: int = 8, scale: int = 1, pad: int = 2) -> bytes:
    """All channels' images (N, H, W, 3) in [0, 1] as one PNG grid."""
    tiles = [_upscale(t, scale) for t in float_images_to_uint8(images)]
    return to_png(tile_grid(tiles, cols=cols, pad=pad))


def _upscale(tile: np.ndarray, scale: int) -> np.ndarray:
    return tile if scale == 1 else np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)


def export(result: Any, manifest: dict[str, Any], *, cols: int = 8) -> dict[str, bytes]:
    """Encode an ``AscentResult`` into what a job stores: ``grid.png`` and ``result.npz``.

    One channel's PNG and the animation are drawn from the npz when asked for
    (``channel_png``, ``frames_gif``): most clients never ask, and the job ends sooner.
    """
    return {
        "grid.png": grid_png(result.images, cols=cols),
        "result.npz": to_npz(
            {
                "images": result.images.astype(np.float32),
                "history": result.history.astype(np.float32),
                "snapshots": result.snapshots.astype(np.float32),
                "snapshot_steps": np.asarray(result.snapshot_steps, dtype=np.int32),
                "channels": np.asarray(result.channels, dtype=np.int32),
                "objective_values": np.asarray(result.objective_values, dtype=np.float32),
                "manifest": np.asarray(json.dumps(manifest, sort_keys=True)),
            }
        ),
    }


def channel_png(npz: bytes, channel: int) -> bytes | None:
    """The image of ``channel`` from ``result.npz``, or None when the job did not ask for it."""
    arrays = from_npz(npz)
    where = np.flatnonzero(arrays["channels"] == channel)
    if where.size == 0:
        return None
    return to_png(float_images_to_uint8(arrays["images"][where[0]]))


def frames_gif(npz: bytes, *, cols: int = 8) -> bytes:
    """The snapshots of ``result.npz`` as an animated GIF, one grid per snapshot."""
    snapshots = from_npz(npz)["snapshots"]
    frames = [tile_grid(list(float_images_to_uint8(s)), cols=cols, pad=2) for s in snapshots]
    return to_gif(frames, duration_ms=200)


def images_from_npz(data: bytes) -> np.ndarray:
    """The final images (N, H, W, 3) back from ``result.npz``."""
    return from_npz(data)["images"]
