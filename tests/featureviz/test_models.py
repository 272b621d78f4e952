"""Engine: layer tables, nested paths, cut models, compiled activations, images, channels."""

from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from featureviz.activations import (
    ActivationFunction,
    FunctionCache,
    parse_channels,
    select_channels,
)
from featureviz.errors import ImageRejected, InvalidRequest, LayerNotFound, TooLarge
from featureviz.images import decode_image, to_batch
from featureviz.models import describe, feature_model, find_layer, resolve_layers, spatial_layers
from featureviz.preprocess import preprocess


@pytest.fixture(scope="module")
def nested() -> keras.Model:
    keras.utils.set_random_seed(1)
    inner = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(3, 3, name="c1"),
            keras.layers.ReLU(name="r1"),
        ],
        name="inner",
    )
    inp = keras.Input((16, 16, 3))
    x = inner(inp)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(x), name="outer")


def test_describe_lists_nested_layers_by_path(nested: keras.Model):
    table = describe(nested)["layers"]
    assert [r["path"] for r in table] == ["inner/c1", "inner/r1", "inner", "c2", "gap", "head"]
    rows = {r["path"]: r for r in table}
    assert rows["inner/c1"]["output_shape"] == [None, 14, 14, 3]
    assert rows["inner/c1"]["params"] == 3 * 3 * 3 * 3 + 3
    assert rows["gap"]["channels"] is None and rows["c2"]["channels"] == 4
    assert spatial_layers(table) == ["inner/c1", "inner/r1", "inner", "c2"]


def test_feature_model_reaches_inside_nested_models(nested: keras.Model):
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    cut = feature_model(nested, ["inner/c1", "c2", "head"])
    c1, c2, head = (np.asarray(t) for t in cut(x))
    inner = nested.get_layer("inner")
    np.testing.assert_allclose(c1, inner.get_layer("c1")(x), atol=1e-6)
    np.testing.assert_allclose(head, nested.predict(x, verbose=0), atol=1e-6)
    assert c2.shape == (2, 12, 12, 4)
    assert find_layer(nested, "inner/c1").name == "c1"


def test_resolve_layers(nested: keras.Model):
    table = describe(nested)["layers"]
    assert resolve_layers(table, ["c1", "inner/r1", "3", "-1"]) == [
        "inner/c1",
        "inner/r1",
        "c2",
        "head",
    ]
    assert resolve_layers(table, ["*"]) == spatial_layers(table)
    with pytest.raises(LayerNotFound, match="nope"):
        resolve_layers(table, ["nope"])
    with pytest.raises(LayerNotFound):
        resolve_layers(table, ["17"])


def test_activation_function_traces_once(nested: keras.Model):
    fn = ActivationFunction(nested, ["inner/r1", "c2"], preprocess_mode="rescale")
    rng = np.random.default_rng(1)
    for n in (1, 3, 2):  # other batch sizes do not trace again
        batch = rng.integers(0, 256, (n, 16, 16, 3)).astype("float32")
        out = fn(batch)
        want = feature_model(nested, ["c2"])(batch / 255.0)
        np.testing.assert_allclose(out["c2"], want, atol=1e-5)
    assert fn.traces == 1


def test_function_cache_builds_once():
    cache = FunctionCache(maxsize=2)
    built = []
    for key in ("a", "a", "b", "c", "a"):
        cache.get(key, lambda k=key: built.append(k) or k)
    assert built == ["a", "b", "c", "a"]  # "a" fell out when "c" came in
    assert (cache.hits, cache.misses) == (1, 4)


def test_channels():
    assert parse_channels("0-3, 7,5") == [0, 1, 2, 3, 7, 5]
    assert parse_channels(None) is None and parse_channels("") is None
    for bad in ("a-b", "5-2", "0-99999"):
        with pytest.raises(InvalidRequest):
            parse_channels(bad)
    arrays = {"x": np.arange(24, dtype="float32").reshape(1, 2, 3, 4)}
    assert select_channels(arrays, [3, 1])["x"][0, 0, 0].tolist() == [3.0, 1.0]
    with pytest.raises(InvalidRequest, match="0-3"):
        select_channels(arrays, [4])


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_and_batch():
    rgb = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(png(rgb)), rgb)
    batch = to_batch([rgb, rgb[:10]], height=None, width=None, channels=3)
    assert batch.shape == (2, 20, 30, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], rgb)
    gray = to_batch([rgb], height=8, width=8, channels=1)
    assert gray.shape == (1, 8, 8, 1)
    with pytest.raises(ImageRejected):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    with pytest.raises(TooLarge, match="pixels"):
        decode_image(png(rgb), max_pixels=100)


def test_preprocess_modes():
    x = np.full((1, 1, 1, 3), 255.0, dtype="float32")
    x[..., 0] = 0.0
    assert preprocess(x, "rescale").tolist() == [[[[0.0, 1.0, 1.0]]]]
    assert preprocess(x, "tf").tolist() == [[[[-1.0, 1.0, 1.0]]]]
    caffe = preprocess(x, "caffe")[0, 0, 0]
    np.testing.assert_allclose(caffe, [255 - 103.939, 255 - 116.779, 0 - 123.68], atol=1e-4)
    with pytest.raises(ValueError):
        preprocess(x, "imagenet")


def test_legacy_h5_nested_loads(tmp_path: Path):
    from featureviz.models import load_model
    from tests.builders import keras2_h5

    model = load_model(str(keras2_h5(tmp_path / "k2.h5")))
    table = describe(model)["layers"]
    assert [r["path"] for r in table][:2] == ["conv2d", "max_pooling2d"]
