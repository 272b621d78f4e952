"""Decode untrusted image bytes and shape them into a model's input batch.

Core signatures::

    decode_image(data, *, max_pixels) -> uint8 (H, W, 3) RGB
    to_batch(images, *, height, width, channels) -> float32 (N, H, W, C) in 0-255

Pillow is asked only for the formats listed in ``FORMATS``; the declared size is checked
against ``max_pixels`` before any pixel is decoded, and a decompression-bomb warning is an
error, so a tiny file that claims 30000x30000 pixels costs nothing.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from featureviz.errors import ImageRejected, TooLarge

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
DEFAULT_MAX_PIXELS = 40_000_000


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode one image to RGB uint8; first frame of animations, EXIF orientation applied."""
    if not data:
        raise ImageRejected("empty image upload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise TooLarge(
                        f"the image declares {width}x{height} pixels, over the limit of "
                        f"{max_pixels} pixels"
                    )
                im.seek(0)
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # a copy only when rotated
                return _to_rgb(im)
    except (TooLarge, ImageRejected):
        raise
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"the image is a decompression bomb: {exc}") from None
    except Image.DecompressionBombWarning as exc:
        raise TooLarge(f"the image is a decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        raise ImageRejected(
            f"the image could not be decoded: {type(exc).__name__}: {exc}"
        ) from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        gray = arr.round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)


def to_batch(
    images: Sequence[np.ndarray],
    *,
    height: int | None,
    width: int | None,
    channels: int,
) -> np.ndarray:
    """Resize RGB images to the model's input and stack them as float32 0-255 NHWC.

    A model that accepts any size keeps the first image's size; the others are resized to it
    so they form one batch.
    """
    if not images:
        raise ImageRejected("no image given")
    first = images[0]
    size = (width or first.shape[1], height or first.shape[0])
    out = np.empty((len(images), size[1], size[0], channels), dtype=np.float32)
    if channels not in (1, 3):
        raise ImageRejected(f"the model takes {channels}-channel images; only 1 or 3 are supported")
    for i, rgb in enumerate(images):
        if channels == 3 and rgb.shape[1::-1] == size:
            out[i] = rgb  # the right size already: no round trip through Pillow
            continue
        im = Image.fromarray(rgb)
        if im.size != size:
            im = im.resize(size, Image.Resampling.BILINEAR)
        if channels == 1:
            out[i, ..., 0] = np.asarray(im.convert("L"), dtype=np.float32)
        else:
            out[i] = np.asarray(im, dtype=np.float32)
    return out
