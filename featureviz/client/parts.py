"""What the client sends and reads: model references, images as multipart parts, npz and PNG."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "Channels",
    "ImageLike",
    "ModelRef",
    "channel_spec",
    "image_list",
    "image_part",
    "model_id",
    "open_png",
    "png_bytes",
    "read_npz",
]

ModelRef = str | Mapping[str, Any]
ImageLike = str | Path | bytes | Image.Image | np.ndarray
Channels = str | Sequence[int] | None


def model_id(model: ModelRef) -> str:
    if isinstance(model, str):
        return model
    if isinstance(model, Mapping) and "id" in model:
        return str(model["id"])
    raise TypeError(f"a model is an id or a model record, not {type(model).__name__}")


def channel_spec(channels: Channels) -> str | None:
    if channels is None or isinstance(channels, str):
        return channels
    return ",".join(str(int(c)) for c in channels)


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(f"an image array is HxW, HxWx3 or HxWx4, got shape {array.shape}")
        if array.dtype != np.uint8:
            values = array.astype(np.float32)
            if values.size and float(np.nanmax(values)) <= 1.0:
                values = values * 255.0  # floats in [0, 1]
            array = np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
        image = Image.fromarray(array)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def image_part(image: ImageLike, index: int) -> tuple[str, bytes, str]:
    """One multipart file: paths and bytes as they are, arrays and PIL images as PNG."""
    if isinstance(image, str | Path):
        path = Path(image)
        return path.name, path.read_bytes(), "application/octet-stream"
    if isinstance(image, bytes | bytearray | memoryview):
        return f"image{index}", bytes(image), "application/octet-stream"
    if isinstance(image, Image.Image | np.ndarray):
        return f"image{index}.png", png_bytes(image), "image/png"
    raise TypeError(f"an image is a path, bytes, a PIL image or an array, not {type(image)}")


def image_list(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    if isinstance(images, str | Path | bytes | bytearray | Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    return list(images)


def read_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def open_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
