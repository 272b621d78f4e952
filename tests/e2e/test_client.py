"""``featureviz.client`` over real HTTP: the stack's API and worker, and a flaky local server."""

from __future__ import annotations

import io
import json
import pickle
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from featureviz.client import Client, FeatureVizHTTPError, Job, JobFailed
from service.embedded import free_port
from tests import builders
from tests.e2e.conftest import Stack

SMALL_JOB: dict[str, Any] = {"steps": 10, "size": 32}


@pytest.fixture(scope="module")
def fv(stack: Stack) -> Iterator[Client]:
    with Client(stack.api.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builders.tiny_convnet(tmp_path_factory.mktemp("c") / "tiny.keras", size=32, filters=8)


@pytest.fixture(scope="module")
def tiny(fv: Client, tiny_path: Path) -> dict[str, Any]:
    return fv.upload_model(tiny_path, name="tiny-client")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return builders.photo((32, 32))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def test_upload_list_get_layers_delete(fv: Client, tiny: dict[str, Any], tiny_path: Path):
    assert tiny["name"] == "tiny-client" and tiny["preprocess"] == "rescale"
    assert fv.upload_model(str(tiny_path))["id"] == tiny["id"]  # same bytes, one model
    assert tiny["id"] in [m["id"] for m in fv.models()]
    assert fv.model(tiny["id"])["sha256"] == tiny["sha256"]
    paths = [row["path"] for row in fv.layers(tiny["id"])]
    assert paths[:3] == ["conv1", "pool1", "conv2"]
    assert fv.layers(tiny) == fv.layers(tiny["id"])

    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    out = keras.layers.Conv2D(3, 3, name="only_conv")(inp)
    in_memory = fv.upload_model(keras.Model(inp, out, name="in_memory"), preprocess="tf")
    assert in_memory["name"] == "in_memory" and in_memory["preprocess"] == "tf"
    assert [r["path"] for r in in_memory["layers"]][-1] == "only_conv"

    fv.delete_model(in_memory)
    with pytest.raises(FeatureVizHTTPError) as info:
        fv.model(in_memory["id"])
    assert info.value.status == 404
    assert in_memory["id"] in info.value.detail
    assert info.value.type.startswith("urn:featureviz:problem:")


def test_activations_accept_every_image_kind(
    fv: Client, tiny: dict[str, Any], photo: np.ndarray, tmp_path: Path
):
    path = tmp_path / "cat.png"
    path.write_bytes(builders.png_bytes(photo))
    images = [
        path,
        str(path),
        builders.png_bytes(photo),
        Image.fromarray(photo),
        photo,
        photo.astype(np.float32) / 255.0,
    ]
    acts = fv.activations(tiny, images, layers=["conv1", "conv2"], channels=[0, 2])
    assert set(acts) == {"conv1", "conv2"}
    assert acts["conv1"].shape == (6, 32, 32, 2) and acts["conv1"].dtype == np.float32
    assert acts["conv2"].shape == (6, 16, 16, 2)
    # every encoding of the same pixels gives the same activations
    np.testing.assert_allclose(acts["conv2"], acts["conv2"][:1].repeat(6, axis=0), atol=1e-5)

    batch = fv.activations(tiny["id"], np.stack([photo, photo[::-1]]))  # a 4-D batch
    assert batch["conv1"].shape == (2, 32, 32, 8)
    single = fv.activations(tiny, photo, layers="conv2", channels="0-3")
    assert list(single) == ["conv2"] and single["conv2"].shape == (1, 16, 16, 4)


def test_feature_maps_and_filters(fv: Client, tiny: dict[str, Any], photo: np.ndarray):
    grid = fv.feature_maps(tiny, photo, "conv1", channels="0-7", cols=4, scale=2)
    assert isinstance(grid, Image.Image) and grid.mode == "RGB"
    assert grid.width > grid.height > 2 * 32  # 4 columns x 2 rows of 64-pixel tiles
    across = fv.feature_maps(tiny, Image.fromarray(photo), "*", channel=1, with_input=True)
    assert across.width > 0
    kernels = fv.filters(tiny, "conv1", cols=4, scale=4)
    assert kernels.width > kernels.height > 0


def test_errors_carry_the_problem(fv: Client, tiny: dict[str, Any], photo: np.ndarray):
    with pytest.raises(FeatureVizHTTPError) as info:
        fv.feature_maps(tiny, photo, "no_such_layer")
    assert info.value.status == 422 and "no_such_layer" in info.value.detail
    with pytest.raises(FeatureVizHTTPError) as info:
        fv.submit(tiny, "conv2", "0-1", steps="many")
    assert info.value.status == 422 and info.value.errors  # FastAPI's list, as {detail, pointer}
    assert any("steps" in e.get("pointer", "") for e in info.value.errors)

    err = pickle.loads(pickle.dumps(info.value))
    assert (err.status, err.title, err.detail, err.errors) == (
        info.value.status,
        info.value.title,
        info.value.detail,
        info.value.errors,
    )
    failed = pickle.loads(pickle.dumps(JobFailed.from_record({"id": "j1", "status": "failed"})))
    assert isinstance(failed, FeatureVizHTTPError)
    assert (failed.job_id, failed.job_status, failed.status) == ("j1", "failed", 409)
    with pytest.raises(TypeError):
        fv.model(42)  # type: ignore[arg-type]


def test_three_line_pipeline(fv: Client, tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]):
    job = fv.submit(tiny, "conv2", "0-1", seed=1, **SMALL_JOB)
    assert isinstance(job, Job) and job.status in ("queued", "running", "succeeded")
    png = job.wait(timeout=90, poll=0.1).result_png()
    bar = capsys.readouterr().err
    assert f"{job.id[:8]} succeeded" in bar and "10/10" in bar and bar.endswith("\n")
    assert png_size(png) == png_size(job.result_png(cols=8, scale=1))
    assert png_size(job.result_png(cols=1, scale=2))[1] > png_size(png)[1]

    images = job.result_images()
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.float32
    npz = job.result_npz()
    assert npz["channels"].tolist() == [0, 1] and isinstance(npz["manifest"], dict)
    assert png_size(job.channel_png(1)) == (32, 32)
    assert job.frames_gif()[:6] in (b"GIF87a", b"GIF89a")

    again = fv.job(job.id)
    assert again.status == "succeeded" and again.progress["step"] == 10
    assert job.id in [j.id for j in fv.jobs()]
    with pytest.raises(FeatureVizHTTPError) as info:
        job.cancel()  # already over
    assert info.value.status == 409


def test_idempotency_key_and_refresh(fv: Client, tiny: dict[str, Any]):
    a = fv.submit(tiny, "conv2", [0, 1], idempotency_key="client-test-1", seed=2, **SMALL_JOB)
    b = fv.submit(tiny, "conv2", [0, 1], idempotency_key="client-test-1", seed=2, **SMALL_JOB)
    assert a.id == b.id
    assert a.wait(timeout=90, progress=False) is a
    assert a.refresh().status == "succeeded" and repr(a).startswith(f"<Job {a.id} succeeded")


def test_wait_timeout_then_cancel_raises_job_failed(fv: Client, tiny: dict[str, Any]):
    job = fv.submit(tiny, "conv2", "0-1", steps=5000, size=32, no_cache=True)
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.3, progress=False, poll=0.1)
    job.cancel()
    with pytest.raises(JobFailed) as info:
        job.wait(timeout=60, progress=False, poll=0.1)
    assert info.value.job_status == "cancelled" and info.value.job_id == job.id
    with pytest.raises(FeatureVizHTTPError) as result:
        job.result_png()
    assert result.value.status == 409


def test_nested_layer_paths(fv: Client, photo: np.ndarray, tmp_path: Path):
    """The conv_base pattern (a model as one layer of another) by its nested path."""
    import keras

    keras.utils.set_random_seed(2)
    base_in = keras.Input((32, 32, 3))
    base = keras.Model(base_in, keras.layers.Conv2D(4, 3, name="b_conv")(base_in), name="base")
    outer = keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.Flatten()])
    record = fv.upload_model(outer, name="nested")
    assert "base/b_conv" in [r["path"] for r in fv.layers(record)]
    acts = fv.activations(record, photo, layers="base/b_conv")
    assert acts["base/b_conv"].shape == (1, 30, 30, 4)


class Flaky(BaseHTTPRequestHandler):
    """503 with Retry-After for the first ``failures`` requests, then a JSON answer."""

    failures = 2
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        Flaky.seen.append(dict(self.headers))
        if len(Flaky.seen) <= Flaky.failures:
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/problem+json")
            body = json.dumps({"type": "urn:x", "title": "Busy", "status": 503, "detail": "later"})
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            body = json.dumps({"models": [{"id": "m1"}]})
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def flaky() -> Iterator[str]:
    Flaky.seen = []
    server = HTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_retries_503_with_retry_after_and_sends_the_key(flaky: str):
    with Client(flaky, api_key="s3cret", retries=3) as c:
        assert c.models() == [{"id": "m1"}]
    assert len(Flaky.seen) == 3
    assert all(h.get("Authorization") == "Bearer s3cret" for h in Flaky.seen)

    Flaky.seen = []
    with Client(flaky, retries=1) as c, pytest.raises(FeatureVizHTTPError) as info:
        c.models()
    assert (info.value.status, info.value.title, info.value.detail) == (503, "Busy", "later")
    assert len(Flaky.seen) == 2


def test_connect_errors_are_retried_with_backoff():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    with Client(url, retries=0) as c, pytest.raises(httpx.ConnectError):
        c.models()
    started = time.monotonic()
    with Client(url, retries=2) as c, pytest.raises(httpx.ConnectError):
        c.models()
    assert time.monotonic() - started >= 1.4  # 0.5 s + 1 s of backoff
