"""Watch a convnet's first-layer features form, epoch by epoch, through a featureviz service.

``FeatureMapsPerEpoch(client, image, out_dir)`` is a ``keras.callbacks.Callback``: after each
epoch it saves the model to a temporary ``.keras`` file, uploads it (every epoch's weights are
new bytes, so a new model), and writes the feature-map grid of the first convolution layer for
the same image to ``epoch_01.png``, ``epoch_02.png`` ...

Run as a script against a running service (``featureviz serve``) to train a tiny convnet for
two epochs on 64 synthetic images of two classes (discs and squares, drawn in code)::

    python examples/epoch_callback.py --url http://127.0.0.1:8000 --out epochs/
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from featureviz.client import Client  # noqa: E402

log = logging.getLogger("epoch_callback")
CONV_TYPES = {"Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose"}


class FeatureMapsPerEpoch(keras.callbacks.Callback):
    """After each epoch: save, upload, render the first conv layer's maps for one image.

    Parameters
    ----------
    client
        A ``featureviz.client.Client`` for the service.
    image
        The image to look at every epoch (an HxWx3 uint8 array, a path or PNG/JPEG bytes).
    out_dir
        Where ``epoch_{n:02d}.png`` go (n counts from 1).
    layer
        The layer to draw; default the first convolution layer of the uploaded model.
    channels, scale, cmap
        Passed to ``Client.feature_maps``.
    preprocess
        What the service does to the image before the model sees it (as in training).
    delete_previous
        Delete the previous epoch's model from the service once the next one is drawn.
    """

    def __init__(
        self,
        client: Client,
        image: Any,
        out_dir: str | Path,
        *,
        layer: str | None = None,
        channels: str | None = None,
        scale: int = 2,
        cmap: str = "viridis",
        preprocess: str = "rescale",
        name: str = "epoch",
        delete_previous: bool = True,
    ) -> None:
        super().__init__()
        self.client = client
        self.image = image
        self.out_dir = Path(out_dir)
        self.layer = layer
        self.channels = channels
        self.scale = scale
        self.cmap = cmap
        self.preprocess = preprocess
        self.name = name
        self.delete_previous = delete_previous
        self.written: list[Path] = []
        self._previous: dict[str, Any] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        n = epoch + 1
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="featureviz-epoch-") as tmp:
            path = Path(tmp) / f"{self.name}_{n:02d}.keras"
            self.model.save(path)
            record = self.client.upload_model(
                path, name=f"{self.name}-{n:02d}", preprocess=self.preprocess
            )
        layer = self.layer or first_conv_layer(record)
        grid = self.client.feature_maps(
            record,
            self.image,
            layer,
            channels=self.channels,
            cmap=self.cmap,
            scale=self.scale,
            with_input=True,
        )
        out = self.out_dir / f"epoch_{n:02d}.png"
        grid.save(out)
        self.written.append(out)
        log.info("epoch %d: %s of model %s -> %s", n, layer, record["id"], out)
        if self.delete_previous and self._previous is not None:
            self.client.delete_model(self._previous)
        self._previous = record


def first_conv_layer(record: dict[str, Any]) -> str:
    for row in record["layers"]:
        if row["type"] in CONV_TYPES and row["channels"]:
            return row["path"]
    raise ValueError(f"model {record['id']} has no convolution layer")


def synthetic_shapes(n: int = 64, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images, half with a bright disc (class 0), half with a bright square (class 1),
    at random places, sizes and colours on a noisy dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.integers(0, 60, size=(n, size, size, 3)).astype(np.uint8)
    labels = np.arange(n) % 2
    for i, label in enumerate(labels):
        r = rng.integers(size // 8, size // 4 + 1)
        cy, cx = rng.integers(r, size - r, size=2)
        colour = rng.integers(150, 256, size=3)
        if label == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        images[i][mask] = colour
    return images, labels.astype(np.int32)


def tiny_convnet(size: int = 32) -> keras.Model:
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            layers.Conv2D(16, 3, activation="relu", padding="same", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(32, 3, activation="relu", padding="same", name="conv2"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(2, activation="softmax", name="head"),
        ],
        name="shapes",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("FEATUREVIZ_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("FEATUREVIZ_API_KEY"))
    parser.add_argument("--out", type=Path, default=Path("epochs"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    keras.utils.set_random_seed(0)
    x, y = synthetic_shapes(args.images)
    model = tiny_convnet()
    # The model is trained on x / 255, which is what the service's preprocess "rescale" does
    # to the image before the model sees it: the maps drawn are the ones training shaped.
    with Client(args.url, args.api_key) as client:
        callback = FeatureMapsPerEpoch(client, x[0], args.out, preprocess="rescale")
        model.fit(x / 255.0, y, epochs=args.epochs, batch_size=16, verbose=2, callbacks=[callback])
    for path in callback.written:
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
