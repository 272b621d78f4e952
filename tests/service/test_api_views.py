"""The model routes and synchronous views over real HTTP against a running uvicorn."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from featureviz.encodings import from_oip_binary
from tests import builders
from tests.conftest import upload


def npz(answer: httpx.Response) -> dict[str, np.ndarray]:
    assert answer.status_code == 200, answer.text
    with np.load(io.BytesIO(answer.content), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_upload_is_content_addressed(http: httpx.Client, files: dict[str, Path], uploaded: Any):
    again = upload(http, files["tiny"], name="other name")
    assert again.status_code == 200
    assert again.json()["id"] == uploaded["tiny"]["id"]
    listed = [m["id"] for m in http.get("/v1/models").json()["models"]]
    assert listed.count(uploaded["tiny"]["id"]) == 1


def test_layer_table_like_summary(uploaded: Any):
    convnet = uploaded["convnet"]
    assert convnet["input_shape"] == [None, 150, 150, 3]
    rows = convnet["layers"]
    assert [r["type"] for r in rows[:2]] == ["Conv2D", "MaxPooling2D"]
    assert rows[0]["output_shape"] == [None, 148, 148, 32]
    assert rows[0]["params"] == 3 * 3 * 3 * 32 + 32
    assert sum(r["params"] for r in rows) == convnet["params"] == 3453121
    nested = {r["path"]: r for r in uploaded["nested"]["layers"]}
    assert nested["vgg16/block3_conv1"]["output_shape"] == [None, 16, 16, 256]
    assert nested["vgg16"]["type"] == "Functional"


def predict_layers(model: Any, names: list[str], batch: np.ndarray) -> list[np.ndarray]:
    import keras

    cut = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    return cut.predict(batch, verbose=0)


@pytest.mark.parametrize("kind", ["convnet", "keras2"])
def test_activations_equal_keras_predict(http: httpx.Client, files: Any, uploaded: Any, kind):
    record = uploaded[kind]
    size = record["input_shape"][1]
    images = [builders.photo((size, size), name=n) for n in ("chelsea", "astronaut")]
    answer = http.post(
        f"/v1/models/{record['id']}/activations",
        files=[("image", (f"{i}.png", builders.png_bytes(im))) for i, im in enumerate(images)],
    )
    got = npz(answer)
    spatial = [r["path"] for r in record["layers"] if r["channels"] is not None]
    assert list(got) == spatial
    batch = np.stack(images).astype("float32") / 255.0  # preprocess "rescale"
    if kind == "keras2":  # the reference is the Keras 2 that wrote the file
        import tf_keras

        model = tf_keras.models.load_model(files[kind], compile=False)
        cut = tf_keras.Model(model.inputs, [model.get_layer(n).output for n in spatial])
        expected = cut.predict(batch, verbose=0)
    else:
        import keras

        expected = predict_layers(keras.saving.load_model(files[kind]), spatial, batch)
    for path, want in zip(spatial, expected, strict=True):
        assert got[path].dtype == np.float32
        assert got[path].shape == want.shape
        np.testing.assert_allclose(got[path], want, atol=1e-5, rtol=0, err_msg=path)


def test_nested_conv_base_activations(http: httpx.Client, files: Any, uploaded: Any):
    import keras

    record = uploaded["nested"]
    image = builders.photo((64, 64))
    answer = http.post(
        f"/v1/models/{record['id']}/activations",
        files={"image": ("cat.png", builders.png_bytes(image))},
        data={"layers": "block1_conv1,vgg16/block3_conv1,vgg16/block5_pool,vgg16"},
    )
    got = npz(answer)
    assert list(got) == ["vgg16/block1_conv1", "vgg16/block3_conv1", "vgg16/block5_pool", "vgg16"]
    base = keras.saving.load_model(files["nested"]).get_layer("vgg16")
    batch = image[None].astype("float32") / 255.0
    names = ["block1_conv1", "block3_conv1", "block5_pool"]
    for name, want in zip(names, predict_layers(base, names, batch), strict=True):
        np.testing.assert_allclose(got[f"vgg16/{name}"], want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["vgg16"], got["vgg16/block5_pool"], atol=0)


def test_encodings_agree(http: httpx.Client, uploaded: Any):
    url = f"/v1/models/{uploaded['tiny']['id']}/activations"
    image = {"image": ("cat.jpg", builders.jpeg_bytes(builders.photo((40, 30))))}
    form = {"layers": "conv1,2", "channels": "0-2,5"}
    reference = npz(http.post(url, files=image, data=form))
    assert {k: v.shape for k, v in reference.items()} == {
        "conv1": (1, 32, 32, 4),
        "conv2": (1, 16, 16, 4),
    }
    as_json = http.post(url, files=image, data=form, headers={"accept": "application/json"})
    assert as_json.headers["content-type"] == "application/json"
    for out in as_json.json()["outputs"]:
        assert out["datatype"] == "FP32"
        arr = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        np.testing.assert_allclose(arr, reference[out["name"]], rtol=1e-6)
    binary = http.post(url + "?format=binary", files=image, data=form)
    length = int(binary.headers["inference-header-content-length"])
    for name, arr in from_oip_binary(binary.content, length).items():
        np.testing.assert_array_equal(arr, reference[name])
    stats = http.post(url + "?format=stats", files=image, data=form).json()["layers"]["conv1"]
    np.testing.assert_allclose(stats["mean"], reference["conv1"].mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(
        stats["frac_positive"], (reference["conv1"] > 0).mean(axis=(0, 1, 2)), rtol=1e-6
    )


def png(answer: httpx.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(answer.content)))


def test_feature_map_grid_geometry(http: httpx.Client, uploaded: Any):
    url = f"/v1/models/{uploaded['convnet']['id']}/feature-maps"
    image = {"image": ("cat.png", builders.png_bytes(builders.photo((150, 150))))}
    grid = png(http.post(url, files=image, data={"layer": "conv2d", "cols": "8"}))
    # 32 channels of 148x148 in 8 columns -> 4 rows, 1-pixel gutters
    assert grid.shape == (4 * 148 + 5, 8 * 148 + 9, 3)
    two = png(
        http.post(
            url,
            files=image,
            data={"layer": "0", "channels": "0-5", "scale": "2", "cols": "3", "with_input": "true"},
        )
    )
    assert two.shape == (3 * 296 + 4, 3 * 296 + 4, 3)  # 7 tiles (input first) in 3 columns
    across = png(http.post(url, files=image, data={"layer": "*", "channel": "3"}))
    assert across.shape == (148 + 2, 8 * 148 + 9, 3)  # the 8 conv/pool layers, one row
    filters = png(
        http.get(
            f"/v1/models/{uploaded['convnet']['id']}/filters.png",
            params={"layer": "conv2d", "scale": "4"},
        )
    )
    assert filters.shape == (4 * 12 + 5, 8 * 12 + 9, 3)  # 32 RGB 3x3 kernels at scale 4


def test_delete_model(http: httpx.Client, tmp_path: Path):
    path = builders.tiny_convnet(tmp_path / "gone.keras", size=24, seed=7)
    record = upload(http, path).json()
    assert http.delete(f"/v1/models/{record['id']}").status_code == 204
    gone = http.get(f"/v1/models/{record['id']}")
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"


def test_openapi_is_committed_and_current():
    from scripts.write_openapi import spec_text

    committed = (Path(__file__).parents[2] / "openapi" / "openapi.json").read_text()
    assert json.loads(committed) == json.loads(spec_text()), "run `make openapi`"
