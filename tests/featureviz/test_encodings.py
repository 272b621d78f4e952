"""Tests for featureviz.encodings: npz, OIP JSON, OIP binary, size checks, channel stats."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from featureviz.encodings import (
    channel_stats,
    check_json_size,
    estimate_json_bytes,
    from_npz,
    from_oip_binary,
    to_npz,
    to_oip_binary,
    to_oip_json,
)
from featureviz.errors import TooLarge


@pytest.fixture()
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 6, 6, 4)).astype(np.float32) * np.float32(1e3)
    a[0, 0, 0, 0] = np.float32(1e-7)
    return {
        "vgg16/block3_conv1": a,
        "vgg16/block1_pool/x": np.maximum(rng.standard_normal((2, 3, 3, 8)), 0).astype(np.float32),
        "file": np.arange(5, dtype=np.float32),  # clashes with np.savez's own argument name
    }


def test_npz_round_trip_with_slash_keys(arrays: dict[str, np.ndarray]) -> None:
    data = to_npz(arrays)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(arrays)
        for name, array in arrays.items():
            np.testing.assert_array_equal(npz[name], array)
            assert npz[name].dtype == np.float32
    back = from_npz(data)
    assert list(back) == list(arrays)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_npz_refuses_object_arrays() -> None:
    with pytest.raises(ValueError):
        to_npz({"x": np.array([{"a": 1}], dtype=object)})


def test_oip_json_parses_and_reshapes(arrays: dict[str, np.ndarray]) -> None:
    body = json.loads(to_oip_json(arrays, model_name="vgg"))
    assert body["model_name"] == "vgg"
    assert [o["name"] for o in body["outputs"]] == list(arrays)
    for out in body["outputs"]:
        original = arrays[out["name"]]
        assert out["datatype"] == "FP32"
        assert out["shape"] == list(original.shape)
        back = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        np.testing.assert_allclose(back, original, rtol=1e-6, atol=0)
    assert "model_name" not in json.loads(to_oip_json(arrays))


def test_oip_json_datatypes_and_non_finite() -> None:
    arrays = {
        "f64": np.array([0.1, -2.5e300], dtype=np.float64),
        "i32": np.array([[1, -2], [3, 4]], dtype=np.int32),
        "u8": np.array([0, 255], dtype=np.uint8),
        "nan": np.array([np.nan, 1.5], dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    body = json.loads(to_oip_json(arrays))
    kinds = {o["name"]: o["datatype"] for o in body["outputs"]}
    assert kinds == {"f64": "FP64", "i32": "INT32", "u8": "UINT8", "nan": "FP32", "empty": "FP32"}
    data = {o["name"]: o["data"] for o in body["outputs"]}
    assert data["f64"] == [0.1, -2.5e300]
    assert data["i32"] == [1, -2, 3, 4]
    assert np.isnan(data["nan"][0]) and data["nan"][1] == 1.5
    assert data["empty"] == []


def test_estimate_is_close_to_upper_bound(arrays: dict[str, np.ndarray]) -> None:
    actual = len(to_oip_json(arrays, model_name="vgg"))
    estimate = estimate_json_bytes(arrays)
    assert actual <= estimate <= 3 * actual


def test_check_json_size_refuses_with_hint(arrays: dict[str, np.ndarray]) -> None:
    check_json_size(arrays, limit_bytes=10_000_000)
    big = {"x": np.zeros((20, 148, 148, 32), dtype=np.float32)}
    with pytest.raises(TooLarge, match="format=npz") as info:
        check_json_size(big, limit_bytes=50_000_000)
    assert "about 224.3 MB, over the limit of 50.0 MB" in str(info.value)
    assert "application/octet-stream" in str(info.value)


def test_oip_binary_round_trip(arrays: dict[str, np.ndarray]) -> None:
    arrays = {**arrays, "ints": np.arange(6, dtype=">i4").reshape(2, 3)}
    body, header_length = to_oip_binary(arrays, model_name="vgg")
    header = json.loads(body[:header_length])
    assert header["model_name"] == "vgg"
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [a.nbytes for a in arrays.values()]
    assert len(body) == header_length + sum(sizes)
    first = arrays["vgg16/block3_conv1"]
    assert body[header_length : header_length + first.nbytes] == first.astype("<f4").tobytes()
    back = from_oip_binary(body, header_length)
    assert list(back) == list(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
    assert back["ints"].dtype == np.dtype("<i4")
    with pytest.raises(ValueError):
        from_oip_binary(body[:-1], header_length)


def test_channel_stats_against_numpy() -> None:
    rng = np.random.default_rng(3)
    a = np.maximum(rng.standard_normal((3, 5, 5, 4)), 0).astype(np.float32)
    a[..., 2] = 0.0  # a dead channel
    stats = channel_stats({"m/conv": a})
    layer = stats["layers"]["m/conv"]
    flat = a.astype(np.float64).reshape(-1, 4)
    assert layer["shape"] == [3, 5, 5, 4]
    np.testing.assert_allclose(layer["mean"], flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(layer["max"], flat.max(0), rtol=1e-12)
    np.testing.assert_allclose(layer["std"], flat.std(0), rtol=1e-12)
    np.testing.assert_allclose(layer["frac_positive"], (flat > 0).mean(0))
    assert layer["frac_positive"][2] == 0.0 and layer["max"][2] == 0.0
    assert all(isinstance(v, float) for v in layer["mean"] + layer["frac_positive"])
    json.dumps(stats)  # JSON-ready
