"""Feature maps to pictures: ``channel_grid(maps (H, W, C), channels) -> uint8 RGB grid``.

The lectures' drawings (one channel with a colormap; all channels of a layer as an 8x4 grid;
one channel across every layer; a layer's kernels) as pure NumPy, matplotlib colormaps (the
registry, never pyplot, so nothing touches a display or global figure state) and Pillow for
PNG/GIF bytes. Normalization keeps dead channels flat instead of stretching float noise into
a colourful lie, as lucid's ``misc/io`` tiling does for its image grids.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Literal

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from featureviz.errors import InvalidRequest, TooLarge

NormalizeMode = Literal["channel", "layer", "fixed"]

#: Height in pixels of the label strip that ``labels=True`` adds above every row of tiles.
LABEL_H = 14
_FLAT_RTOL = 1e-6


def check_cmap(name: str) -> str:
    """Return ``name`` if matplotlib knows the colormap; API users choose it, so refuse politely."""
    if not isinstance(name, str) or name not in matplotlib.colormaps:
        raise InvalidRequest(
            f"unknown colormap {name!r}; use a matplotlib colormap such as "
            "viridis, magma, inferno, Blues or gray"
        )
    return name


@lru_cache(maxsize=64)
def _lut(name: str) -> np.ndarray:
    """256-entry uint8 RGB table: indexing it is far faster than calling the colormap."""
    cm = matplotlib.colormaps[check_cmap(name)]
    lut = np.rint(cm(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _stretch(
    maps: np.ndarray, lo: np.ndarray | np.float64, hi: np.ndarray | np.float64
) -> np.ndarray:
    """Map ``lo..hi`` to 0..1 and constant spans to 0, so a dead channel stays flat."""
    span = hi - lo
    scale = np.maximum(1.0, np.maximum(np.abs(hi), np.abs(lo)))
    flat = ~(span > _FLAT_RTOL * scale)  # NaN spans count as flat too
    out = (maps - lo) / np.where(flat, 1.0, span)
    out = np.where(flat, 0.0, out)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def normalize(
    maps: np.ndarray,
    *,
    mode: NormalizeMode = "channel",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Scale (H, W, C) activations to float32 in [0, 1] so they can be looked up in a colormap.

    ``channel`` shows each channel's own pattern; ``layer`` keeps channels comparable (one
    min/max); ``fixed`` compares across images and requests with a given ``vmin``/``vmax``
    (values clipped). A span no bigger than ``1e-6 * max(1, |lo|, |hi|)`` is treated as
    constant and comes out as 0.0 (the colormap's low end) rather than amplified noise.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"expected maps of shape (H, W, C), got {maps.shape}")
    if mode == "channel":
        lo, hi = maps.min(axis=(0, 1)), maps.max(axis=(0, 1))
        return _stretch(maps, lo.astype(np.float64), hi.astype(np.float64))
    if mode == "layer":
        return _stretch(maps, np.float64(maps.min()), np.float64(maps.max()))
    if mode == "fixed":
        if vmin is None or vmax is None:
            raise InvalidRequest("normalize=fixed needs both vmin and vmax")
        if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin < vmax):
            raise InvalidRequest(f"normalize=fixed needs finite vmin < vmax, got {vmin}, {vmax}")
        out = (maps.astype(np.float64) - vmin) / (vmax - vmin)
        return np.clip(np.nan_to_num(out), 0.0, 1.0).astype(np.float32)
    raise InvalidRequest(f"unknown normalize mode {mode!r}; one of channel, layer, fixed")


def colorize(unit: np.ndarray, *, cmap: str = "viridis") -> np.ndarray:
    """Look [0, 1] values up in a colormap: (H, W) or (H, W, C) -> uint8 (..., 3) RGB."""
    idx = np.rint(np.clip(np.nan_to_num(np.asarray(unit, dtype=np.float32)), 0.0, 1.0) * 255.0)
    return _lut(cmap)[idx.astype(np.uint8)]


def float_images_to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] float images (e.g. gradient-ascent results) to uint8 pixels, clipped and rounded."""
    images = np.nan_to_num(np.asarray(images, dtype=np.float32))
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _label_strip(text: str, width: int, background: int) -> np.ndarray:
    """Draw ``text`` on its own strip so a long label is clipped to its tile, not spilled."""
    strip = Image.new("RGB", (width, LABEL_H), (background,) * 3)
    ink = 0 if background >= 128 else 255
    ImageDraw.Draw(strip).text((1, 0), text, fill=(ink,) * 3, font=_font())
    return np.asarray(strip)


def tile_grid(
    tiles: Sequence[np.ndarray],
    *,
    cols: int,
    pad: int = 1,
    labels: Sequence[str] | None = None,
    background: int = 255,
) -> np.ndarray:
    """Lay same-size uint8 RGB tiles row-major in a grid with ``cols`` columns.

    ``cols`` is capped at the number of tiles so a short grid has no empty columns. With
    ``rows = ceil(n / cols)`` the result is ``rows * (tile_h + label_h) + (rows + 1) * pad``
    high and ``cols * tile_w + (cols + 1) * pad`` wide, where ``label_h`` is ``LABEL_H``
    with ``labels`` and 0 without: each row gets its label strip above the tiles.
    """
    if not tiles:
        raise ValueError("tile_grid needs at least one tile")
    if cols < 1 or pad < 0:
        raise ValueError(f"need cols >= 1 and pad >= 0, got cols={cols}, pad={pad}")
    first = np.asarray(tiles[0])
    for t in tiles:
        if t.shape != first.shape or t.dtype != np.uint8 or t.ndim != 3 or t.shape[2] != 3:
            raise ValueError(
                f"tiles must all be uint8 (h, w, 3) of one size; got {t.dtype} {t.shape} "
                f"next to {first.dtype} {first.shape}"
            )
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"{len(labels)} labels for {len(tiles)} tiles")
    n = len(tiles)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    th, tw = first.shape[:2]
    lh = LABEL_H if labels is not None else 0
    grid = np.full(
        (rows * (th + lh) + (rows + 1) * pad, cols * tw + (cols + 1) * pad, 3),
        background,
        dtype=np.uint8,
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y = pad + r * (th + lh + pad)
        x = pad + c * (tw + pad)
        if labels is not None:
            grid[y : y + lh, x : x + tw] = _label_strip(str(labels[i]), tw, background)
        grid[y + lh : y + lh + th, x : x + tw] = tile
    return grid


def _upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour integer upscale: activation cells stay crisp squares."""
    if scale == 1:
        return rgb
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def _resize_nearest(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize to any size (layers' sizes rarely divide each other)."""
    h, w = rgb.shape[:2]
    rows = np.arange(height) * h // height
    cols = np.arange(width) * w // width
    return rgb[rows[:, None], cols[None, :]]


def _input_tile(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The input picture as a tile: to RGB, then Pillow bilinear to the tile size."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"input_image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"input_image must be (H, W) or (H, W, 3), got {image.shape}")
    pil = Image.fromarray(image).convert("RGB")
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))


def _check_layout(cols: int, scale: int, pad: int) -> None:
    if cols < 1 or scale < 1 or pad < 0:
        raise InvalidRequest(f"need cols >= 1, scale >= 1, pad >= 0; got {cols}, {scale}, {pad}")


def channel_grid(
    maps: np.ndarray,
    channels: Sequence[int] | None = None,
    *,
    cols: int = 8,
    cmap: str = "viridis",
    normalize_mode: NormalizeMode = "channel",
    vmin: float | None = None,
    vmax: float | None = None,
    scale: int = 1,
    labels: bool = False,
    input_image: np.ndarray | None = None,
    pad: int = 1,
) -> np.ndarray:
    """Draw channels of one image's (H, W, C) feature maps as a uint8 RGB grid.

    Tiles are ``H*scale`` x ``W*scale``; ``input_image`` becomes the first tile (it counts
    in the geometry, see ``tile_grid``); ``layer`` normalization uses only the chosen channels.
    Labels are channel numbers and ``input``.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"expected maps of one image, shape (H, W, C), got {maps.shape}")
    check_cmap(cmap)
    _check_layout(cols, scale, pad)
    n_channels = maps.shape[2]
    chosen = list(range(n_channels)) if channels is None else [int(c) for c in channels]
    if not chosen:
        raise InvalidRequest("no channels chosen")
    bad = [c for c in chosen if not 0 <= c < n_channels]
    if bad:
        raise InvalidRequest(
            f"channel {bad[0]} is out of range; this layer has {n_channels} channels "
            f"(valid 0-{n_channels - 1})"
        )
    unit = normalize(maps[:, :, chosen], mode=normalize_mode, vmin=vmin, vmax=vmax)
    rgb = _upscale(colorize(unit, cmap=cmap), scale)  # (H', W', n, 3)
    tiles = [rgb[:, :, i] for i in range(len(chosen))]
    names = [str(c) for c in chosen]
    if input_image is not None:
        tiles.insert(0, _input_tile(input_image, rgb.shape[0], rgb.shape[1]))
        names.insert(0, "input")
    return tile_grid(tiles, cols=cols, pad=pad, labels=names if labels else None)


def channel_across_layers(
    maps_by_layer: Mapping[str, np.ndarray],
    channel: int,
    *,
    cols: int | None = None,
    cmap: str = "viridis",
    normalize_mode: NormalizeMode = "channel",
    vmin: float | None = None,
    vmax: float | None = None,
    scale: int = 1,
    labels: bool = False,
    input_image: np.ndarray | None = None,
    pad: int = 1,
) -> np.ndarray:
    """Draw channel ``channel`` of every layer that has it, one tile per layer, labelled by path.

    Tiles are resized (nearest) to the largest layer's H and W times ``scale``. ``layer``
    normalization scales each tile by its own layer's min/max, so a quiet channel looks quiet.
    ``cols`` defaults to the number of tiles, at most 8.
    """
    check_cmap(cmap)
    if channel < 0:
        raise InvalidRequest(f"channel must be >= 0, got {channel}")
    picked: list[tuple[str, np.ndarray]] = []
    most = 0
    for path, maps in maps_by_layer.items():
        maps = np.asarray(maps)
        if maps.ndim != 3:
            raise ValueError(f"layer {path!r}: expected (H, W, C), got {maps.shape}")
        most = max(most, maps.shape[2])
        if maps.shape[2] <= channel:
            continue
        if normalize_mode == "layer":
            unit = normalize(maps, mode="layer")[:, :, channel]
        else:
            one = maps[:, :, channel : channel + 1]
            unit = normalize(one, mode=normalize_mode, vmin=vmin, vmax=vmax)[:, :, 0]
        picked.append((path, unit))
    if not picked:
        raise InvalidRequest(
            f"no layer has channel {channel}; the layers have at most {most} channels "
            f"(valid 0-{most - 1})"
        )
    height = max(u.shape[0] for _, u in picked) * scale
    width = max(u.shape[1] for _, u in picked) * scale
    tiles = [_resize_nearest(colorize(u, cmap=cmap), height, width) for _, u in picked]
    names = [p for p, _ in picked]
    if input_image is not None:
        tiles.insert(0, _input_tile(input_image, height, width))
        names.insert(0, "input")
    cols = min(len(tiles), 8) if cols is None else cols
    _check_layout(cols, scale, pad)
    return tile_grid(tiles, cols=cols, pad=pad, labels=names if labels else None)


def kernel_tiles(
    kernel: np.ndarray,
    *,
    cols: int = 8,
    cmap: str = "viridis",
    scale: int = 8,
    pad: int = 1,
    max_tiles: int = 1024,
) -> np.ndarray:
    """Draw a Conv2D kernel (kh, kw, cin, cout) as tiles ("visualize the filters themselves").

    With ``cin == 3`` (a first layer on RGB) each output filter is one colour tile, its weights
    scaled jointly to [0, 1]. Otherwise there is one colormapped tile per (output filter,
    input channel), filter-major, all scaled over the whole kernel so tiles compare.
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim != 4:
        raise InvalidRequest(
            f"filters need a Conv2D kernel (kh, kw, cin, cout), got {kernel.shape}"
        )
    check_cmap(cmap)
    _check_layout(cols, scale, pad)
    kh, kw, cin, cout = kernel.shape
    n = cout if cin == 3 else cin * cout
    if n > max_tiles:
        raise TooLarge(f"the kernel would make {n} tiles, over the limit of {max_tiles}")
    if cin == 3:
        flat = kernel.transpose(3, 0, 1, 2).reshape(cout, -1).astype(np.float64)
        lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
        unit = _stretch(flat, lo, hi).reshape(cout, kh, kw, 3)
        tiles = [_upscale(float_images_to_uint8(u), scale) for u in unit]
    else:
        maps = kernel.reshape(kh, kw, cin * cout)  # index i * cout + o
        rgb = _upscale(colorize(normalize(maps, mode="layer"), cmap=cmap), scale)
        tiles = [rgb[:, :, i * cout + o] for o in range(cout) for i in range(cin)]
    return tile_grid(tiles, cols=cols, pad=pad)


def to_png(rgb: np.ndarray, *, compress_level: int = 1) -> bytes:
    """Encode uint8 RGB (or gray) as PNG; level 1 because this runs on the request path."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise ValueError(f"to_png needs uint8 (H, W) or (H, W, 3), got {rgb.dtype} {rgb.shape}")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def to_gif(frames: Sequence[np.ndarray], *, duration_ms: int = 100) -> bytes:
    """Encode same-size uint8 RGB frames as a GIF that loops forever (an ascent's progress).

    Pillow quantizes each frame to 256 colours and merges identical consecutive frames.
    """
    if not frames:
        raise ValueError("to_gif needs at least one frame")
    if any(f.dtype != np.uint8 or f.shape != frames[0].shape for f in frames):
        raise ValueError("GIF frames must all be uint8 and of the same shape")
    images = [Image.fromarray(np.asarray(f)).convert("RGB") for f in frames]
    buf = io.BytesIO()
    kw = {"save_all": True, "append_images": images[1:], "duration": duration_ms, "loop": 0}
    images[0].save(buf, format="GIF", **kw)
    return buf.getvalue()
