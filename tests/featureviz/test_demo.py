"""The demo model carries HED's trained VGG16 convolutions and loads in safe mode."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from featureviz.demo import hed_conv_weights, write_demo_model  # noqa: E402


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("demo") / "vgg16_hed.keras"
    return write_demo_model(str(path))


def test_written_model_loads_safely_with_hed_weights(written: dict) -> None:
    assert written["preprocess"] == "caffe"
    assert tuple(written["input_shape"]) == (224, 224, 3)
    model = keras.saving.load_model(written["path"], safe_mode=True)
    assert model.name == "vgg16"
    assert model.layers[-1].name == "block5_pool"
    hed = hed_conv_weights()
    for name in ("block1_conv1", "block5_conv3"):
        got = model.get_layer(name).get_weights()
        assert len(got) == 2
        np.testing.assert_array_equal(got[0], hed[name][0])
        np.testing.assert_array_equal(got[1], hed[name][1])
    # trained, not a fresh Glorot init: HED's first kernels are far from zero-mean noise
    assert float(np.abs(hed["block1_conv1"][0]).mean()) > 0.05


def test_block1_responds_to_edges_more_than_to_flat_grey(written: dict) -> None:
    model = keras.saving.load_model(written["path"], safe_mode=True)
    cut = keras.Model(model.inputs[0], model.get_layer("block1_conv2").output)
    flat = np.full((1, 224, 224, 3), 120.0, dtype="float32")
    edges = flat.copy()
    edges[:, :, 112:, :] = 220.0
    edges[:, 112:, :, :] -= 100.0
    mean_bgr = np.array([103.939, 116.779, 123.68], dtype="float32")
    flat_act = np.asarray(cut(flat[..., ::-1] - mean_bgr))
    edge_act = np.asarray(cut(edges[..., ::-1] - mean_bgr))
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert edge_act[inner].max() > 2 * flat_act[inner].max()


def test_write_demo_model_refuses_other_suffix(tmp_path) -> None:
    with pytest.raises(ValueError):
        write_demo_model(str(tmp_path / "model.h5"))
