"""Operations over real HTTP: API keys, metrics, request ids, JSON logs, graceful shutdown."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import builders
from tests.conftest import Service, upload

KEY_A = "team-a-0123456789abcdef"
KEY_B = "team-b-fedcba9876543210"


@pytest.fixture(scope="module")
def keyed(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "REDIS_URL": redis_server.url.replace("/0", "/2"),
        "API_KEYS": f"{KEY_A},{KEY_B}",
        "FEATUREVIZ_MAX_QUEUED_PER_KEY": "2",
        "FEATUREVIZ_DOCS": "false",
    }
    service = Service(env, tmp_path_factory.mktemp("keyed")).start()
    yield service
    service.stop()


def test_keys_required_except_probes(keyed: Service):
    with keyed.client() as anon:
        for path in ("/v1/models", "/v1/jobs", "/metrics"):
            answer = anon.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["www-authenticate"] == "Bearer"
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/readyz").status_code == 503  # no worker here, but no key needed
        wrong = anon.get("/v1/models", headers={"Authorization": "Bearer " + KEY_A[:-1] + "x"})
        assert wrong.status_code == 401
    with keyed.client(**{"X-API-Key": KEY_A}) as a:
        assert a.get("/v1/models").status_code == 200


def test_docs_are_public_by_default_and_can_be_hidden(api: Service, keyed: Service):
    with api.client() as anon:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert anon.get(path).status_code == 200, path
    with keyed.client() as anon, keyed.client(**{"X-API-Key": KEY_A}) as a:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert anon.get(path).status_code == 404, path
            assert a.get(path).status_code == 404, path
        assert a.get("/v1/models").status_code == 200


def test_one_keys_models_and_jobs_are_invisible_to_another(keyed: Service, files: Any):
    with (
        keyed.client(Authorization=f"Bearer {KEY_A}") as a,
        keyed.client(**{"X-API-Key": KEY_B}) as b,
    ):
        mine = upload(a, files["tiny"]).json()
        assert b.get(f"/v1/models/{mine['id']}").status_code == 404
        assert mine["id"] not in [m["id"] for m in b.get("/v1/models").json()["models"]]
        image = {"image": ("x.png", builders.png_bytes(builders.photo((32, 32))))}
        assert b.post(f"/v1/models/{mine['id']}/activations", files=image).status_code == 404
        assert b.delete(f"/v1/models/{mine['id']}").status_code == 404
        theirs = upload(b, files["tiny"])  # the same bytes: B gets a record of its own
        assert theirs.status_code == 201 and theirs.json()["id"] != mine["id"]

        body = {"model_id": mine["id"], "layer": "conv1", "channels": "0", "steps": 2}
        job = a.post("/v1/jobs", json=body)
        assert job.status_code == 202
        assert b.get(f"/v1/jobs/{job.json()['id']}").status_code == 404
        assert b.delete(f"/v1/jobs/{job.json()['id']}").status_code == 404
        assert job.json()["id"] not in [j["id"] for j in b.get("/v1/jobs").json()["jobs"]]
        assert b.post("/v1/jobs", json=body).status_code == 404  # A's model, seen from B


def test_queued_job_limit_per_key(keyed: Service, files: Any):
    with keyed.client(Authorization=f"Bearer {KEY_B}") as b:
        model = upload(b, files["tiny"]).json()
        answers = [
            b.post(
                "/v1/jobs",
                json={
                    "model_id": model["id"],
                    "layer": "conv1",
                    "channels": "0",
                    "steps": 3,
                    "seed": s,
                },
            )
            for s in range(3)
        ]
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert answers[2].headers["content-type"] == "application/problem+json"
        assert int(answers[2].headers["retry-after"]) > 0
        b.delete(f"/v1/jobs/{answers[0].json()['id']}")
        again = b.post(
            "/v1/jobs",
            json={
                "model_id": model["id"],
                "layer": "conv1",
                "channels": "0",
                "steps": 3,
                "seed": 9,
            },
        )
        assert again.status_code == 202  # a cancelled job frees its place


def test_keys_never_logged(keyed: Service):
    with keyed.client(Authorization=f"Bearer {KEY_A}") as a:
        a.get("/v1/models")
    with keyed.client(Authorization="Bearer not-a-key-but-long-enough") as nobody:
        nobody.get("/v1/models")
    text = keyed.log.read_text()
    assert KEY_A not in text and KEY_B not in text and "not-a-key" not in text


def test_request_id_echoed_and_logged(api: Service, http: httpx.Client, uploaded: Any):
    given = http.get("/v1/models", headers={"X-Request-ID": "pipeline-run-42"})
    assert given.headers["x-request-id"] == "pipeline-run-42"
    made = http.get("/v1/models").headers["x-request-id"]
    assert len(made) == 32
    url = f"/v1/models/{uploaded['tiny']['id']}/activations"
    http.post(url, files={"image": ("x.png", b"junk")}, headers={"X-Request-ID": "bad-img-7"})
    time.sleep(0.3)
    lines = [json.loads(line) for line in api.log.read_text().splitlines() if line.startswith("{")]
    tagged = [entry for entry in lines if entry.get("request_id") == "pipeline-run-42"]
    assert tagged and all({"ts", "level", "logger", "msg"} <= set(e) for e in tagged)
    assert any(e.get("request_id") == "bad-img-7" for e in lines)


def test_metrics(http: httpx.Client, uploaded: Any):
    url = f"/v1/models/{uploaded['tiny']['id']}/activations"
    image = {"image": ("x.png", builders.png_bytes(builders.photo((32, 32))))}
    assert http.post(url, files=image).status_code == 200
    assert http.post(url, files=image).status_code == 200
    text = http.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    route = 'route="/v1/models/{model_id}/activations"'
    ok = [
        v
        for k, v in values.items()
        if k.startswith("featureviz_http_requests_total") and route in k and 'status="200"' in k
    ]
    assert ok and ok[0] >= 2
    assert any(
        k.startswith("featureviz_http_request_seconds_bucket") and route in k for k in values
    )
    assert values["featureviz_activation_bytes_total"] > 0
    assert values['featureviz_model_cache_events{event="hit"}'] >= 1
    assert values['featureviz_function_cache_events{event="hit"}'] >= 1
    assert 'featureviz_jobs{state="queued"}' in values
    assert "featureviz_queue_depth" in values


def test_graceful_shutdown_finishes_requests_in_flight(
    redis_server: Any, tmp_path: Path, files: Any
):
    service = Service({"REDIS_URL": redis_server.url.replace("/0", "/3")}, tmp_path).start()
    try:
        with service.client() as client:
            model = upload(client, files["nested"]).json()
            images = [
                ("image", (f"{i}.png", builders.png_bytes(builders.photo((64, 64)))))
                for i in range(48)
            ]
            result: dict[str, httpx.Response] = {}

            def slow() -> None:
                result["answer"] = client.post(
                    f"/v1/models/{model['id']}/activations", files=images, timeout=120
                )

            thread = threading.Thread(target=slow)
            thread.start()
            time.sleep(0.5)
            assert service.proc is not None
            service.proc.send_signal(signal.SIGTERM)
            thread.join(120)
            assert result["answer"].status_code == 200
            assert service.proc.wait(60) == 0
    finally:
        service.stop()
