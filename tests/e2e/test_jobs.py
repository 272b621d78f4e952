"""Gradient-ascent jobs end to end: real Redis, real Celery worker, real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from service.embedded import RedisServer
from tests import builders
from tests.e2e.conftest import WEBHOOK_SECRET, Stack, wait_for, wait_until_step


def submit(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post("/v1/jobs", json=body, headers=headers)


def job_body(model: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model_id": model["id"],
        "layer": "conv2",
        "channels": "0-3",
        "steps": 40,
        "size": 32,
        **extra,
    }


def channel_means(
    client: httpx.Client, model: dict[str, Any], images: list[np.ndarray]
) -> np.ndarray:
    answer = client.post(
        f"/v1/models/{model['id']}/activations",
        files=[("image", (f"{i}.png", builders.png_bytes(im))) for i, im in enumerate(images)],
        data={"layers": "conv2"},
    )
    assert answer.status_code == 200, answer.text
    with np.load(io.BytesIO(answer.content), allow_pickle=False) as data:
        return data["conv2"].mean(axis=(1, 2))  # (N, C)


def test_job_succeeds_and_beats_random_images(client: httpx.Client, model: dict[str, Any]):
    answer = submit(
        client,
        job_body(
            model,
            snapshot_every=10,
            seed=3,
            parameterization="pixel",
            learning_rate=0.5,
            transforms="none",
        ),
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    done = wait_for(client, job["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == 40
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]

    raw = client.get(f"/v1/jobs/{job['id']}/result.npz")
    assert raw.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(raw.content), allow_pickle=False) as data:
        images, history = data["images"], data["history"]
        manifest = json.loads(str(data["manifest"]))
        assert data["snapshots"].shape[0] == len(data["snapshot_steps"]) >= 4
    assert images.shape == (4, 32, 32, 3) and 0 <= images.min() and images.max() <= 1
    assert history.shape == (40, 4)
    assert manifest["model_sha256"] == model["sha256"] and manifest["seed"] == 3
    assert set(manifest["versions"]) == {"featureviz", "tensorflow", "keras"}

    found = channel_means(client, model, list((images * 255).round().astype(np.uint8)))
    rng = np.random.default_rng(0)
    noise = channel_means(
        client, model, [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(8)]
    )
    for i, channel in enumerate(range(4)):
        assert found[i, channel] > 1.5 * noise[:, channel].max() + 1e-3, (channel, found, noise)

    grid = Image.open(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/result.png").content))
    assert grid.size == (4 * 32 + 5 * 2, 32 + 2 * 2)
    wide = client.get(f"/v1/jobs/{job['id']}/result.png", params={"cols": 2, "scale": 2})
    assert Image.open(io.BytesIO(wide.content)).size == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2)
    one = Image.open(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/channels/2.png").content))
    assert one.size == (32, 32)
    gif = Image.open(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/frames.gif").content))
    assert gif.n_frames >= 2
    assert client.get(f"/v1/jobs/{job['id']}/channels/9.png").status_code == 404


def test_same_request_is_answered_from_the_result_cache(client: httpx.Client, model: dict):
    first = wait_for(client, submit(client, job_body(model, seed=11)).json()["id"], ("succeeded",))
    again = submit(client, job_body(model, seed=11)).json()
    assert again["status"] == "succeeded" and again["cached"] is True
    assert again["id"] != first["id"]
    a = client.get(f"/v1/jobs/{first['id']}/result.npz").content
    assert client.get(f"/v1/jobs/{again['id']}/result.npz").content == a
    fresh = submit(client, job_body(model, seed=11, no_cache=True)).json()
    assert fresh["status"] == "queued"
    done = wait_for(client, fresh["id"], ("succeeded",))
    assert done["cached"] is False
    with (
        np.load(io.BytesIO(a), allow_pickle=False) as x,
        np.load(
            io.BytesIO(client.get(f"/v1/jobs/{fresh['id']}/result.npz").content), allow_pickle=False
        ) as y,
    ):
        np.testing.assert_allclose(x["images"], y["images"], atol=1e-5)  # same seed, same images


def test_idempotency_key(client: httpx.Client, model: dict[str, Any]):
    body = job_body(model, seed=21, steps=5)
    one = submit(client, body, **{"Idempotency-Key": "run-21"})
    two = submit(client, body, **{"Idempotency-Key": "run-21"})
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] == two.json()["id"]
    other = submit(client, {**body, "seed": 22}, **{"Idempotency-Key": "run-21"})
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    wait_for(client, one.json()["id"], ("succeeded",))


def test_cancel_running_job_frees_the_worker(client: httpx.Client, model: dict[str, Any]):
    long = submit(client, job_body(model, steps=5000, seed=5, no_cache=True)).json()
    running = wait_for(client, long["id"], ("running",))
    wait_until_step(client, long["id"], 1)
    answer = client.delete(f"/v1/jobs/{long['id']}")
    assert answer.status_code == 200
    cancelled_at = time.monotonic()
    done = wait_for(client, long["id"], ("cancelled", "succeeded", "failed"), timeout=30)
    assert done["status"] == "cancelled"
    assert time.monotonic() - cancelled_at < 15
    assert done["progress"]["step"] < 5000
    assert running["deliveries"] == 1
    assert client.delete(f"/v1/jobs/{long['id']}").status_code == 409
    nxt = submit(client, job_body(model, seed=6, steps=5)).json()
    assert wait_for(client, nxt["id"], ("succeeded",), timeout=60)["status"] == "succeeded"


def test_cancel_queued_job(stack: Stack, client: httpx.Client, model: dict[str, Any]):
    blocker = submit(client, job_body(model, steps=5000, seed=7, no_cache=True)).json()
    wait_for(client, blocker["id"], ("running",))
    queued = submit(client, job_body(model, seed=8, steps=5)).json()
    assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"
    assert client.delete(f"/v1/jobs/{queued['id']}").json()["status"] == "cancelled"
    client.delete(f"/v1/jobs/{blocker['id']}")
    wait_for(client, blocker["id"], ("cancelled",), timeout=30)
    time.sleep(2)  # the worker skips the revoked message
    assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "cancelled"


def test_results_expire(stack: Stack, client: httpx.Client, model: dict[str, Any]):
    job = wait_for(
        client, submit(client, job_body(model, seed=31, steps=3)).json()["id"], ("succeeded",)
    )
    r = redis.Redis.from_url(stack.redis.url)
    key = json.loads(r.get(f"fv:job:{job['id']}"))["result_key"]
    stored = [*r.keys(f"fv:result:{key}:*"), f"fv:resultcache:{key}"]
    assert all(0 < r.ttl(k) <= 7 * 24 * 3600 for k in stored)  # results carry a TTL
    for k in stored:
        r.pexpire(k, 1)  # let Redis expire them now
    time.sleep(0.2)
    gone = client.get(f"/v1/jobs/{job['id']}/result.png")
    assert gone.status_code == 410
    assert gone.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/jobs/0000000000000000deadbeef/result.png").status_code == 404


@pytest.mark.parametrize(
    "change, status, words",
    [
        ({"model_id": "nope"}, 404, "nope"),
        ({"layer": "gap"}, 422, "channel axis"),
        ({"layer": "conv9"}, 422, "conv9"),
        ({"channels": "0-16"}, 422, "out of range"),
        ({"steps": 100000}, 422, "limit"),
        ({"size": 4096}, 422, "limit"),
        ({"channels": list(range(16)) * 5}, 422, "limit"),
        ({"steps": "many"}, 422, ""),
        ({"parameterization": "wavelet"}, 422, ""),
        ({"transforms": ["teleport:3"]}, 422, ""),
        ({"objective": "dream"}, 422, ""),
        ({"colour": "red"}, 422, ""),
        ({"callback_url": "ftp://example.com/x"}, 422, "http"),
    ],
)
def test_bad_jobs_queue_nothing(
    stack: Stack, client: httpx.Client, model: dict, change, status, words
):
    r = redis.Redis.from_url(stack.redis.url)
    before = len(client.get("/v1/jobs").json()["jobs"])
    answer = submit(client, {**job_body(model), **change})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert words.lower() in answer.json()["detail"].lower()
    assert len(client.get("/v1/jobs").json()["jobs"]) == before
    assert r.llen("gpu") == 0


def test_callback_is_signed(client: httpx.Client, model: dict[str, Any]):
    received: list[tuple[dict[str, str], bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(500 if len(received) == 1 else 204)  # first try fails: retried
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        job = submit(client, job_body(model, seed=41, steps=3, callback_url=url)).json()
        wait_for(client, job["id"], ("succeeded",))
        deadline = time.monotonic() + 20
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.shutdown()
    assert len(received) == 2
    headers, body = received[1]
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == expected
    payload = json.loads(body)
    assert payload["type"] == "job.succeeded" and payload["data"]["id"] == job["id"]


def test_private_callback_refused_by_default(http: httpx.Client, uploaded: Any):
    body = {
        "model_id": uploaded["tiny"]["id"],
        "layer": "conv1",
        "channels": "0",
        "callback_url": "http://127.0.0.1:9/hook",
    }
    answer = http.post("/v1/jobs", json=body)
    assert answer.status_code == 422
    assert "private or loopback" in answer.json()["detail"]


def test_worker_killed_mid_job_is_run_again(stack: Stack, client: httpx.Client, model: dict):
    job = submit(client, job_body(model, steps=1500, seed=51, no_cache=True)).json()
    wait_for(client, job["id"], ("running",))
    wait_until_step(client, job["id"], 5)
    stack.kill_worker()
    killed_at = time.monotonic()
    stack.start_worker()
    done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=120)
    assert time.monotonic() - killed_at < 90
    assert done["status"] == "succeeded", done
    assert done["deliveries"] == 2


def test_redis_restart_mid_run(stack: Stack, client: httpx.Client, model: dict[str, Any]):
    job = submit(client, job_body(model, steps=600, seed=61, no_cache=True)).json()
    wait_for(client, job["id"], ("running",))
    port, directory = stack.redis.port, stack.redis.dir
    stack.redis.stop()
    down = client.get(f"/v1/jobs/{job['id']}")
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/problem+json"
    assert "redis" in down.json()["detail"].lower()
    time.sleep(2)
    stack.redis = RedisServer(directory, port=port, persist=True).start()
    done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", done


def test_readiness(client: httpx.Client, http: httpx.Client):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers"]
    alone = http.get("/readyz")  # the API of the other tests runs without a worker
    assert alone.status_code == 503
    assert alone.headers["content-type"] == "application/problem+json"


def test_worker_told_to_stop_finishes_its_job(stack: Stack, client: httpx.Client, model: dict):
    """SIGTERM is Celery's warm shutdown: the running job ends, then the worker exits."""
    job = submit(client, job_body(model, steps=300, seed=71, no_cache=True)).json()
    wait_until_step(client, job["id"], 5)
    stack.stop_worker()
    assert stack.worker is not None and stack.worker.returncode == 0
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    assert done["deliveries"] == 1
    stack.start_worker()
    again = submit(client, job_body(model, steps=3, seed=72)).json()
    assert wait_for(client, again["id"], ("succeeded",))["status"] == "succeeded"


def test_worker_logs_are_json_with_the_job_id(stack: Stack, client: httpx.Client, model: dict):
    job = submit(client, job_body(model, steps=3, seed=81, no_cache=True)).json()
    wait_for(client, job["id"], ("succeeded",))
    time.sleep(0.5)
    entries = [
        json.loads(line)
        for line in stack.worker_log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    mine = [e for e in entries if e.get("job_id") == job["id"]]
    messages = [e["msg"] for e in mine]
    assert any("job started" in m for m in messages), messages
    assert any("job succeeded" in m for m in messages), messages
    task_lines = [e for e in entries if job["id"] in e["msg"]]
    assert task_lines and all(e.get("job_id") == job["id"] for e in task_lines)


def test_optimizer_options(client: httpx.Client, model: dict[str, Any]):
    """The lectures' recipe: plain pixels, normalized gradient, SGD (and a clipped variant)."""
    for extra in (
        {"optimizer": "sgd", "normalize_grad": True, "learning_rate": 0.5},
        {"clip_grad": 0.01, "learning_rate": 0.3},
    ):
        body = job_body(
            model, steps=30, seed=91, parameterization="pixel", transforms="none", **extra
        )
        done = wait_for(client, submit(client, body).json()["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
        raw = client.get(f"/v1/jobs/{done['id']}/result.npz").content
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            history = data["history"]
            manifest = json.loads(str(data["manifest"]))
        assert (history[-1] > history[0]).all(), history[[0, -1]]
        assert all(manifest["params"][k] == v for k, v in extra.items())


def test_long_polling_returns_when_the_job_ends(client: httpx.Client, model: dict[str, Any]):
    job = submit(client, job_body(model, steps=20, seed=101, no_cache=True)).json()
    started = time.monotonic()
    record = client.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
    assert record["status"] == "succeeded"
    assert time.monotonic() - started < 60
    quick = client.get(f"/v1/jobs/{job['id']}", params={"wait": 60})
    assert quick.json()["status"] == "succeeded"  # a finished job answers at once
    assert client.get(f"/v1/jobs/{job['id']}", params={"wait": 61}).status_code == 422
