"""Bad input over real HTTP: a clear 4xx problem+json, nothing stored, nothing run."""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests import builders
from tests.conftest import Service, stored_files, upload
from tests.featureviz import hostile


def assert_problem(answer: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]
    return body


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header declaring width x height; the IDAT is a tiny compressed stream."""
    import struct

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    stream = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * (3 * width)
    data = b"".join(stream.compress(row) for _ in range(64)) + stream.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + builders.png_chunk(b"IHDR", header)
        + builders.png_chunk(b"IDAT", data)
        + builders.png_chunk(b"IEND", b"")
    )


HOSTILE_MODELS = {
    "not_a_model": lambda tmp, valid: hostile.not_a_model(tmp),
    "text": lambda tmp, valid: hostile.text_file(tmp),
    "empty": lambda tmp, valid: hostile.empty(tmp),
    "truncated_keras": lambda tmp, valid: hostile.truncated(valid["keras"], tmp),
    "truncated_h5": lambda tmp, valid: hostile.truncated(valid["h5"], tmp),
    "lambda_h5": lambda tmp, valid: hostile.lambda_h5(tmp),
    "custom_object": lambda tmp, valid: hostile.custom_registered_keras(tmp),
    "builtins_eval": lambda tmp, valid: hostile.builtins_eval_keras(tmp),
    "zip_bomb": lambda tmp, valid: hostile.zip_bomb(tmp),
    "h5_external_link": lambda tmp, valid: hostile.h5_external_link(tmp),
    "h5_weights_only": lambda tmp, valid: hostile.h5_weights_only(tmp),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_MODELS))
def test_hostile_model_refused_and_nothing_stored(
    api: Service, http: httpx.Client, tmp_path: Path, valid: dict[str, str], kind: str
):
    before_files = stored_files(api)
    before_models = http.get("/v1/models").json()["models"]
    path = Path(HOSTILE_MODELS[kind](tmp_path, valid))
    answer = upload(http, path)
    assert answer.status_code in (413, 422), answer.text
    assert_problem(answer, answer.status_code)
    assert stored_files(api) == before_files
    assert http.get("/v1/models").json()["models"] == before_models


def test_lambda_layer_never_runs(http: httpx.Client, tmp_path: Path):
    """A Lambda whose body would leave a mark: refused, and the mark never appears."""
    import keras

    mark = tmp_path / "ran"
    code = f"lambda x: (open({str(mark)!r}, 'w').write('ran'), x)[1]"
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Lambda(eval(code))])
    path = tmp_path / "lambda.keras"
    model.save(path)
    mark.unlink(missing_ok=True)  # building the model in this process ran it once
    body = assert_problem(upload(http, path), 422, "Lambda")
    assert "not allowed" in body["detail"]
    assert not mark.exists()


def test_unknown_model_layer_and_channel(http: httpx.Client, uploaded: Any):
    image = {"image": ("cat.png", builders.png_bytes(builders.photo((32, 32))))}
    assert_problem(http.post("/v1/models/nope/activations", files=image), 404, "nope")
    assert_problem(http.get("/v1/models/0123456789abcdef01234567"), 404)
    url = f"/v1/models/{uploaded['tiny']['id']}"
    assert_problem(
        http.post(url + "/activations", files=image, data={"layers": "conv9"}), 422, "conv9"
    )
    assert_problem(
        http.post(url + "/activations", files=image, data={"channels": "0-99"}), 422, "out of range"
    )
    assert_problem(
        http.post(url + "/feature-maps", files=image, data={"layer": "conv1", "channels": "8"}),
        422,
        "0-7",
    )
    assert_problem(
        http.post(url + "/feature-maps", files=image, data={"layer": "gap"}), 422, "channel axis"
    )
    assert_problem(http.get(url + "/filters.png", params={"layer": "pool1"}), 422, "kernel")
    assert_problem(
        http.post(url + "/feature-maps", files=image, data={"layer": "conv1", "cmap": "nocolor"}),
        422,
    )


@pytest.mark.parametrize(
    "data, words",
    [
        (b"this is not an image", ("not an image",)),
        (builders.png_bytes(builders.photo((64, 64)))[:400], ("decoded",)),
        (b"", ("empty",)),
        (b"GIF89a" + b"\x00" * 20, ()),
    ],
    ids=["text", "truncated", "empty", "broken-gif"],
)
def test_bad_images(http: httpx.Client, uploaded: Any, data: bytes, words: tuple[str, ...]):
    url = f"/v1/models/{uploaded['tiny']['id']}/activations"
    assert_problem(http.post(url, files={"image": ("x.png", data)}), 422, *words)


def test_decompression_bomb(http: httpx.Client, uploaded: Any):
    data = bomb_png()
    assert len(data) < 200_000
    url = f"/v1/models/{uploaded['tiny']['id']}/activations"
    assert_problem(http.post(url, files={"image": ("bomb.png", data)}), 413, "pixels")


def test_validation_errors_are_problems(http: httpx.Client, uploaded: Any):
    url = f"/v1/models/{uploaded['tiny']['id']}/feature-maps"
    image = {"image": ("cat.png", builders.png_bytes(builders.photo((32, 32))))}
    body = assert_problem(http.post(url, files=image, data={"layer": "conv1", "scale": "99"}), 422)
    assert body["errors"][0]["pointer"].endswith("scale")
    body = assert_problem(http.post("/v1/models", data={"preprocess": "rescale"}), 422)
    assert any(e["pointer"].endswith("file") for e in body["errors"])


@pytest.fixture(scope="module")
def limited(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A second API with tiny limits, for the over-limit answers."""
    env = {
        "REDIS_URL": redis_server.url.replace("/0", "/1"),
        "FEATUREVIZ_MAX_MODEL_BYTES": "300000",
        "FEATUREVIZ_MAX_IMAGE_BYTES": "20000",
        "FEATUREVIZ_MAX_JSON_BYTES": "100000",
        "FEATUREVIZ_MAX_IMAGES": "3",
    }
    service = Service(env, tmp_path_factory.mktemp("limited")).start()
    yield service
    service.stop()


def test_limits(limited: Service, files: dict[str, Path]):
    with limited.client() as client:
        assert_problem(upload(client, files["convnet"]), 413, "limit")
        assert stored_files(limited) == []
        tiny = upload(client, files["tiny"])
        assert tiny.status_code == 201
        url = f"/v1/models/{tiny.json()['id']}/activations"
        noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
        assert_problem(
            client.post(url, files={"image": ("big.png", builders.png_bytes(noise))}), 413, "limit"
        )
        small = builders.jpeg_bytes(builders.photo((32, 32)))
        many = [("image", (f"{i}.jpg", small)) for i in range(4)]
        assert_problem(client.post(url, files=many), 413, "4 images")
        body = assert_problem(
            client.post(url + "?format=json", files={"image": ("a.jpg", small)}), 413, "npz"
        )
        assert "limit" in body["detail"]
        fine = client.post(
            url + "?format=json",
            files={"image": ("a.jpg", small)},
            data={"layers": "conv2", "channels": "0"},
        )
        assert fine.status_code == 200


def test_images_of_every_kind(http: httpx.Client, uploaded: Any):
    """16-bit, CMYK, palette, RGBA, grayscale, multi-frame GIF: decoded, never a 5xx."""
    url = f"/v1/models/{uploaded['tiny']['id']}/activations"
    rgb = builders.photo((48, 40))
    variants = {
        "gray16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "palette.gif": Image.fromarray(rgb).convert("P"),
        "rgba.png": Image.fromarray(rgb).convert("RGBA"),
        "gray.bmp": Image.fromarray(rgb).convert("L"),
        "photo.webp": Image.fromarray(rgb),
        "photo.tiff": Image.fromarray(rgb),
    }
    for name, im in variants.items():
        buf = io.BytesIO()
        im.save(
            buf,
            format={"jpg": "JPEG", "tiff": "TIFF"}.get(name.split(".")[1], None)
            or name.split(".")[1].upper(),
        )
        answer = http.post(url, files={"image": (name, buf.getvalue())})
        assert answer.status_code == 200, (name, answer.text)
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    answer = http.post(url, files={"image": ("anim.gif", buf.getvalue())}, data={"layers": "conv1"})
    assert answer.status_code == 200
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "2"
