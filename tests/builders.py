"""Models and images built in the tests: nothing is downloaded."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def lecture_convnet(path: Path, *, seed: int = 0) -> Path:
    """The lectures' cats-vs-dogs convnet (150x150x3), random weights, saved as .keras."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    names = iter(
        [
            "conv2d",
            "max_pooling2d",
            *(f"{k}_{i}" for i in (1, 2, 3) for k in ("conv2d", "max_pooling2d")),
        ]
    )
    model = keras.Sequential(
        [
            keras.Input((150, 150, 3)),
            layers.Conv2D(32, 3, activation="relu", name=next(names)),
            layers.MaxPooling2D(2, name=next(names)),
            layers.Conv2D(64, 3, activation="relu", name=next(names)),
            layers.MaxPooling2D(2, name=next(names)),
            layers.Conv2D(128, 3, activation="relu", name=next(names)),
            layers.MaxPooling2D(2, name=next(names)),
            layers.Conv2D(128, 3, activation="relu", name=next(names)),
            layers.MaxPooling2D(2, name=next(names)),
            layers.Flatten(name="flatten"),
            layers.Dense(512, activation="relu", name="dense"),
            layers.Dense(1, activation="sigmoid", name="dense_1"),
        ],
        name="convnet",
    )
    model.save(path)
    return path


def tiny_convnet(path: Path, *, size: int = 32, filters: int = 8, seed: int = 0) -> Path:
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inp = keras.Input((size, size, 3))
    x = layers.Conv2D(filters, 3, activation="relu", padding="same", name="conv1")(inp)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(2 * filters, 3, activation="relu", padding="same", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(2, activation="softmax", name="head")(x)
    keras.Model(inp, out, name="tiny").save(path)
    return path


def keras2_h5(path: Path, *, seed: int = 0) -> Path:
    """A Keras 2 model saved as legacy HDF5 by tf_keras, like the lectures' chest x-ray nets."""
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Conv2D(16, 3, activation="relu", input_shape=(64, 64, 3), name="conv2d"),
            layers.MaxPooling2D(2, name="max_pooling2d"),
            layers.Conv2D(32, 3, activation="relu", name="conv2d_1"),
            layers.BatchNormalization(name="bn"),
            layers.MaxPooling2D(2, name="max_pooling2d_1"),
            layers.Flatten(name="flatten"),
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(1, activation="sigmoid", name="dense"),
        ]
    )
    model.compile(optimizer="rmsprop", loss="binary_crossentropy")
    model.save(path, save_format="h5")
    return path


def nested_conv_base(path: Path, *, size: int = 64, seed: int = 0) -> Path:
    """The classic conv_base pattern: a whole VGG16 as one layer of a Sequential."""
    import keras

    keras.utils.set_random_seed(seed)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            base,
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="cats_and_dogs",
    )
    model.save(path)
    return path


def photo(size: tuple[int, int] | None = None, *, name: str = "chelsea") -> np.ndarray:
    """A real photo from scikit-image, optionally resized (Pillow bilinear)."""
    from skimage import data

    rgb = getattr(data, name)()
    if size is not None:
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    return rgb


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk (length, type, body, CRC), for hand-made hostile PNGs."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
