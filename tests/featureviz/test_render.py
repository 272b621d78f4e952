"""Tests for featureviz.render: grid geometry, normalization, colormaps, kernels, PNG/GIF."""

from __future__ import annotations

import io
import math

import matplotlib
import numpy as np
import pytest
from PIL import Image

from featureviz.errors import InvalidRequest, TooLarge
from featureviz.render import (
    LABEL_H,
    channel_across_layers,
    channel_grid,
    check_cmap,
    colorize,
    float_images_to_uint8,
    kernel_tiles,
    normalize,
    tile_grid,
    to_gif,
    to_png,
)


def _maps(h: int = 6, w: int = 5, c: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((h, w, c)).astype(np.float32)


def _cmap_rgb(name: str, x: float) -> np.ndarray:
    return np.rint(np.asarray(matplotlib.colormaps[name](x)[:3]) * 255).astype(np.uint8)


def _grid_size(n: int, cols: int, th: int, tw: int, pad: int, lh: int = 0) -> tuple[int, int]:
    rows = math.ceil(n / cols)
    return rows * (th + lh) + (rows + 1) * pad, cols * tw + (cols + 1) * pad


def test_grid_32_channels_8_cols_is_4_rows() -> None:
    grid = channel_grid(_maps(6, 5, 32), cols=8, pad=1)
    assert grid.dtype == np.uint8
    assert grid.shape == (4 * 6 + 5 * 1, 8 * 5 + 9 * 1, 3)


def test_grid_tile_placement_row_major() -> None:
    maps = _maps(4, 4, 10)
    pad, cols = 2, 4
    grid = channel_grid(maps, cols=cols, pad=pad, cmap="gray")
    assert grid.shape[:2] == _grid_size(10, cols, 4, 4, pad)
    # channel 5 sits in row 1, column 1; its brightest cell is white in gray
    tile = grid[pad + 1 * (4 + pad) :][:4, pad + 1 * (4 + pad) :][:, :4]
    unit = normalize(maps[:, :, 5:6])[:, :, 0]
    np.testing.assert_array_equal(tile[..., 0], colorize(unit, cmap="gray")[..., 0])
    # padding and the two unused cells of the last row are background
    assert (grid[:pad] == 255).all()
    assert (grid[-pad - 4 :, pad + 2 * (4 + pad) :] == 255).all()


def test_grid_scale_and_pad() -> None:
    maps = _maps(3, 7, 12)
    grid = channel_grid(maps, cols=5, scale=4, pad=3)
    assert grid.shape[:2] == _grid_size(12, 5, 12, 28, 3)
    tile = grid[3 : 3 + 12, 3 : 3 + 28]
    small = colorize(normalize(maps[:, :, :1])[:, :, 0])
    np.testing.assert_array_equal(tile, np.repeat(np.repeat(small, 4, 0), 4, 1))


def test_grid_selected_channels_and_input_tile() -> None:
    maps = _maps(8, 8, 16)
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    image[..., 0] = 200
    grid = channel_grid(maps, [3, 1, 7], cols=2, scale=2, input_image=image, pad=1)
    assert grid.shape[:2] == _grid_size(4, 2, 16, 16, 1)
    first = grid[1:17, 1:17]
    assert (first == [200, 0, 0]).all()
    gray = channel_grid(maps, [0], input_image=np.full((5, 5), 7, np.uint8), cols=8)
    assert gray.shape[:2] == _grid_size(2, 2, 8, 8, 1)  # cols capped at the 2 tiles
    assert (gray[1:9, 1:9] == 7).all()


def test_labels_add_a_strip_per_row() -> None:
    maps = _maps(20, 20, 32)
    plain = channel_grid(maps, cols=8)
    labelled = channel_grid(maps, cols=8, labels=True)
    assert labelled.shape[0] == plain.shape[0] + 4 * LABEL_H
    assert labelled.shape[1] == plain.shape[1]
    strip = labelled[1 : 1 + LABEL_H, 1:21]
    assert (strip < 128).any(), "label text is drawn"
    np.testing.assert_array_equal(labelled[1 + LABEL_H : 21 + LABEL_H, 1:21], plain[1:21, 1:21])


def test_dead_channel_is_flat_and_tiny_noise_is_stretched() -> None:
    rng = np.random.default_rng(1)
    maps = np.zeros((10, 10, 3), dtype=np.float32)
    maps[:, :, 1] = 1e-3 * rng.standard_normal((10, 10))
    maps[:, :, 2] = 5.0
    unit = normalize(maps, mode="channel")
    assert (unit[:, :, 0] == 0).all()
    assert (unit[:, :, 2] == 0).all()
    assert unit[:, :, 1].min() == 0 and unit[:, :, 1].max() == pytest.approx(1)
    grid = channel_grid(maps, cols=3, pad=0, cmap="magma")
    dead = grid[:, :10]
    assert (dead == _cmap_rgb("magma", 0.0)).all()
    noisy = grid[:, 10:20].reshape(-1, 3)
    assert len(np.unique(noisy, axis=0)) > 20


def test_float_noise_around_a_constant_stays_flat() -> None:
    maps = np.full((4, 4, 1), 100.0, dtype=np.float32)
    maps[0, 0, 0] = np.nextafter(np.float32(100.0), np.float32(200.0))
    assert (normalize(maps) == 0).all()


def test_layer_mode_shares_min_max() -> None:
    maps = np.zeros((2, 2, 2), dtype=np.float32)
    maps[:, :, 0] = [[0, 1], [2, 3]]
    maps[:, :, 1] = [[0, 0.5], [1, 1.5]]
    unit = normalize(maps, mode="layer")
    np.testing.assert_allclose(unit[:, :, 0], [[0, 1 / 3], [2 / 3, 1]], rtol=1e-6)
    np.testing.assert_allclose(unit[:, :, 1], [[0, 1 / 6], [1 / 3, 0.5]], rtol=1e-6)
    per_channel = normalize(maps, mode="channel")
    assert per_channel[1, 1, 1] == pytest.approx(1)


def test_layer_mode_in_grid_uses_selected_channels_only() -> None:
    maps = np.zeros((2, 2, 3), dtype=np.float32)
    maps[:, :, 0] = 100.0  # not selected, must not squash the others
    maps[:, :, 1] = [[0, 1], [0, 1]]
    maps[:, :, 2] = [[0, 2], [0, 2]]
    grid = channel_grid(maps, [1, 2], normalize_mode="layer", cmap="gray", pad=0)
    assert grid[0, 1, 0] == 128  # 1/2 of the shared max
    assert grid[0, 3, 0] == 255


def test_fixed_mode_clips_and_needs_bounds() -> None:
    maps = np.array([-5, 0, 5, 10, 20], dtype=np.float32).reshape(1, 5, 1)
    unit = normalize(maps, mode="fixed", vmin=0, vmax=10)
    np.testing.assert_allclose(unit.ravel(), [0, 0, 0.5, 1, 1])
    assert unit.dtype == np.float32
    with pytest.raises(InvalidRequest):
        normalize(maps, mode="fixed", vmin=0)
    with pytest.raises(InvalidRequest):
        normalize(maps, mode="fixed", vmin=3, vmax=3)
    with pytest.raises(InvalidRequest):
        normalize(maps, mode="median")  # type: ignore[arg-type]


def test_colorize_matches_matplotlib() -> None:
    unit = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    rgb = colorize(unit, cmap="viridis")
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    expected = matplotlib.colormaps["viridis"](unit)[..., :3] * 255
    assert np.abs(rgb.astype(float) - expected).max() <= 1.0
    assert colorize(np.zeros((2, 3, 4))).shape == (2, 3, 4, 3)


def test_unknown_cmap_and_out_of_range_channel() -> None:
    assert check_cmap("Blues") == "Blues"
    with pytest.raises(InvalidRequest, match="colormap"):
        check_cmap("not-a-cmap")
    with pytest.raises(InvalidRequest):
        channel_grid(_maps(c=4), cmap="nope")
    with pytest.raises(InvalidRequest, match="0-31"):
        channel_grid(_maps(c=32), [0, 32])
    with pytest.raises(InvalidRequest):
        channel_grid(_maps(c=32), [-1])


def test_tile_grid_rejects_mixed_sizes() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError):
        tile_grid([a, np.zeros((4, 5, 3), np.uint8)], cols=2)
    with pytest.raises(ValueError):
        tile_grid([a, a.astype(np.float32)], cols=2)
    with pytest.raises(ValueError):
        tile_grid([a, a], cols=2, labels=["one"])
    grid = tile_grid([a, a, a], cols=2, pad=2, background=17)
    assert grid.shape == _grid_size(3, 2, 4, 4, 2) + (3,)
    assert grid[0, 0, 0] == 17 and grid[2, 2, 0] == 0


def test_channel_across_layers() -> None:
    layers = {
        "m/conv1": _maps(8, 8, 4, seed=1),
        "m/conv2": _maps(4, 4, 8, seed=2),
        "m/conv3": _maps(3, 3, 2, seed=3),  # has no channel 3: skipped
        "m/conv4": _maps(2, 2, 16, seed=4),
    }
    grid = channel_across_layers(layers, 3, scale=2)
    assert grid.shape[:2] == _grid_size(3, 3, 16, 16, 1)
    # conv2 tile: nearest upscale by 2 (to 8x8) then scale 2
    tile = grid[1:17, 18:34]
    small = colorize(normalize(layers["m/conv2"][:, :, 3:4])[:, :, 0])
    np.testing.assert_array_equal(tile, np.repeat(np.repeat(small, 4, 0), 4, 1))
    labelled = channel_across_layers(
        layers, 3, labels=True, input_image=np.zeros((9, 9, 3), np.uint8)
    )
    assert labelled.shape[:2] == _grid_size(4, 4, 8, 8, 1, LABEL_H)
    with pytest.raises(InvalidRequest, match="no layer has channel 16"):
        channel_across_layers(layers, 16)


def test_kernel_tiles_rgb_first_layer() -> None:
    kernel = np.random.default_rng(0).standard_normal((3, 3, 3, 10)).astype(np.float32)
    grid = kernel_tiles(kernel, cols=8, scale=8, pad=1)
    assert grid.shape == _grid_size(10, 8, 24, 24, 1) + (3,)
    f = kernel[..., 9]  # row 1, column 1
    expected = np.rint((f - f.min()) / (f.max() - f.min()) * 255).astype(np.uint8)
    tile = grid[1 + 25 : 1 + 25 + 24, 1 + 25 : 1 + 25 + 24]
    np.testing.assert_array_equal(tile, np.repeat(np.repeat(expected, 8, 0), 8, 1))


def test_kernel_tiles_per_input_channel_and_limit() -> None:
    kernel = np.random.default_rng(0).standard_normal((3, 3, 16, 4)).astype(np.float32)
    grid = kernel_tiles(kernel, cols=16, scale=2, pad=1, cmap="gray")
    assert grid.shape == _grid_size(64, 16, 6, 6, 1) + (3,)
    # the whole kernel's minimum is black, its maximum white
    i, j, cin, cout = np.unravel_index(kernel.argmax(), kernel.shape)
    r, c = divmod(int(cout) * 16 + int(cin), 16)
    y, x = 1 + r * 7 + 2 * int(i), 1 + c * 7 + 2 * int(j)
    assert grid[y, x, 0] == 255
    with pytest.raises(TooLarge, match="64 tiles, over the limit of 63"):
        kernel_tiles(kernel, max_tiles=63)
    with pytest.raises(InvalidRequest):
        kernel_tiles(np.zeros((3, 3, 8)))


def test_png_round_trip() -> None:
    rgb = colorize(normalize(_maps(13, 17, 1))[:, :, 0], cmap="magma")
    data = to_png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(back, rgb)
    with pytest.raises(ValueError):
        to_png(rgb.astype(np.float32))


def test_gif_has_n_frames_and_loops() -> None:
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 60, 120, 180, 240)]
    gif = Image.open(io.BytesIO(to_gif(frames, duration_ms=50)))
    assert gif.n_frames == 5
    assert gif.info.get("loop") == 0
    assert gif.info.get("duration") == 50


def test_float_images_to_uint8() -> None:
    x = np.array([-0.5, 0.0, 0.5, 1.0, 2.0, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(float_images_to_uint8(x), [0, 0, 128, 255, 255, 0])
