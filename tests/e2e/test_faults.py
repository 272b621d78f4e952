"""Faults around running jobs and uploads: the API restarts, clients vanish, workers die.

Real processes throughout (the ``stack`` fixture: a private Redis, ``featureviz serve``, a real
Celery worker). What ``tests/e2e/test_jobs.py`` already covers (one worker SIGKILL mid-job,
a Redis restart) is not repeated; these are the other faults:

- the API process is stopped while a job runs and a new one is started on the same data dir
  and port: the job still ends ``succeeded`` and the client's polling resumes;
- clients that disconnect in the middle of a model upload (a declared Content-Length, half a
  real .keras file, then close; the same with chunked transfer encoding; twenty at once): the
  API lives, keeps no partial file and no record, and does not leak file descriptors;
- several jobs queued, then the worker SIGKILLed and a new one started: every accepted job
  ends ``succeeded``, ``failed`` with a reason, or ``cancelled`` within a bound;
- a job whose worker is killed on every delivery ends ``failed`` with the reason once the
  delivery bound is reached: never an endless loop.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests import builders
from tests.conftest import Service, stored_files
from tests.e2e.conftest import Stack, wait_for, wait_until_step

TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture()
def api_client(stack: Stack) -> Iterator[httpx.Client]:
    """A client on the stack's current API (the restart test replaces ``stack.api``)."""
    with stack.api.client() as c:
        yield c


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builders.tiny_convnet(tmp_path_factory.mktemp("faults") / "tiny.keras", size=32)


@pytest.fixture(scope="module")
def tiny(stack: Stack, keras_file: Path) -> dict[str, Any]:
    with stack.api.client() as c, keras_file.open("rb") as fh:
        answer = c.post("/v1/models", files={"file": ("tiny.keras", fh)})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def job(model: dict[str, Any], seed: int, steps: int = 200) -> dict[str, Any]:
    return {
        "model_id": model["id"],
        "layer": "conv2",
        "channels": "0-3",
        "steps": steps,
        "size": 32,
        "seed": seed,
        "no_cache": True,
    }


def incoming(stack: Stack) -> list[Path]:
    return list((stack.api.data_dir / "models" / "incoming").iterdir())


# ------------------------------------------------------------------------- API restart
def test_api_restarted_while_a_job_runs(stack: Stack, tiny: dict[str, Any]):
    with stack.api.client() as c:
        submitted = c.post("/v1/jobs", json=job(tiny, seed=101, steps=400))
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        wait_for(c, job_id, ("running",))
        wait_until_step(c, job_id, 2, timeout=90)
    old = stack.api
    old.stop()
    assert old.proc is not None and old.proc.poll() is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(old.url + "/healthz", timeout=2)
    new = Service(stack.env, old.data_dir)
    new.port, new.url = old.port, old.url  # clients keep their URL
    stack.api = new.start()
    with stack.api.client() as c:
        done = wait_for(c, job_id, TERMINAL, timeout=120)
        assert done["status"] == "succeeded", done
        assert done["deliveries"] == 1  # the worker never noticed the API was away
        assert c.get(f"/v1/jobs/{job_id}/result.png").headers["content-type"] == "image/png"
        assert c.get(f"/v1/models/{tiny['id']}").status_code == 200
        after = c.post("/v1/jobs", json=job(tiny, seed=102, steps=5))
        assert wait_for(c, after.json()["id"], TERMINAL)["status"] == "succeeded"


# -------------------------------------------------------------------- aborted uploads
def _multipart(data: bytes, boundary: str) -> tuple[bytes, bytes]:
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.keras"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data, f"\r\n--{boundary}--\r\n".encode()


def _abort_upload(url: str, data: bytes, *, chunked: bool = False) -> None:
    """Send headers and half of a multipart body, then close the socket without reading."""
    host, port = url.removeprefix("http://").split(":")
    boundary = uuid.uuid4().hex
    body, tail = _multipart(data, boundary)
    half = body[: len(body) // 2]
    headers = [
        "POST /v1/models HTTP/1.1",
        f"Host: {host}:{port}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
    ]
    headers.append(
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body) + len(tail)}"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        if chunked:
            for at in range(0, len(half), 64 * 1024):
                piece = half[at : at + 64 * 1024]
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        else:
            sock.sendall(half)
        time.sleep(0.2)  # let the server start reading the body
        sock.shutdown(socket.SHUT_RDWR)


def _settled(stack: Stack, fds: int | None = None, timeout: float = 15.0) -> None:
    """Wait until no partial file is left (and the fd count is back near ``fds``)."""
    assert stack.api.proc is not None
    proc = psutil.Process(stack.api.proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not incoming(stack) and (fds is None or proc.num_fds() <= fds + 5):
            return
        time.sleep(0.2)
    raise AssertionError(f"after aborted uploads: incoming={incoming(stack)}, fds={proc.num_fds()}")


@pytest.fixture()
def big_keras(tmp_path: Path) -> bytes:
    """A real, several-megabyte .keras file (the lectures' convnet): not yet known to the API."""
    return builders.lecture_convnet(tmp_path / "convnet.keras", seed=7).read_bytes()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_client_disconnects_mid_upload(
    stack: Stack, api_client: httpx.Client, big_keras: bytes, chunked: bool
):
    assert len(big_keras) > 4 << 20
    before_models = api_client.get("/v1/models").json()["models"]
    before_files = stored_files(stack.api)
    _abort_upload(stack.api.url, big_keras, chunked=chunked)
    _settled(stack)
    assert api_client.get("/healthz").status_code == 200
    assert stack.api.proc is not None and stack.api.proc.poll() is None
    assert api_client.get("/v1/models").json()["models"] == before_models
    assert stored_files(stack.api) == before_files


def test_many_aborted_uploads_leak_nothing(
    stack: Stack, api_client: httpx.Client, big_keras: bytes, tiny: dict[str, Any]
):
    assert stack.api.proc is not None
    api_client.get("/healthz")
    fds = psutil.Process(stack.api.proc.pid).num_fds()
    before_models = api_client.get("/v1/models").json()["models"]
    before_files = stored_files(stack.api)
    for i in range(20):
        _abort_upload(stack.api.url, big_keras, chunked=bool(i % 2))
    _settled(stack, fds=fds, timeout=30)
    assert api_client.get("/v1/models").json()["models"] == before_models
    assert stored_files(stack.api) == before_files
    # ... and the same bytes sent whole afterwards are a normal upload
    whole = api_client.post("/v1/models", files={"file": ("convnet.keras", big_keras)})
    assert whole.status_code == 201, whole.text
    assert api_client.delete(f"/v1/models/{whole.json()['id']}").status_code == 204


# ---------------------------------------------------------------------- worker faults
def test_queued_jobs_survive_a_worker_sigkill(
    stack: Stack, api_client: httpx.Client, tiny: dict[str, Any]
):
    ids = []
    for seed in range(5):
        answer = api_client.post("/v1/jobs", json=job(tiny, seed=200 + seed, steps=150))
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    wait_for(api_client, ids[0], ("running",))
    wait_until_step(api_client, ids[0], 2, timeout=90)
    statuses = {i: api_client.get(f"/v1/jobs/{i}").json()["status"] for i in ids}
    assert sum(s == "queued" for s in statuses.values()) >= 3, statuses
    stack.kill_worker()
    killed_at = time.monotonic()
    stack.start_worker()
    bound = 240.0
    ends = {}
    for job_id in ids:
        remaining = max(1.0, bound - (time.monotonic() - killed_at))
        ends[job_id] = wait_for(api_client, job_id, TERMINAL, timeout=remaining)
    for record in ends.values():
        if record["status"] == "failed":
            assert record["error"], record
    assert all(r["status"] == "succeeded" for r in ends.values()), ends
    assert ends[ids[0]]["deliveries"] == 2


def test_worker_killed_on_every_delivery_ends_failed(
    stack: Stack, api_client: httpx.Client, tiny: dict[str, Any]
):
    """Three deliveries (the default bound), each killed: the job fails with the reason."""
    answer = api_client.post("/v1/jobs", json=job(tiny, seed=301, steps=2000))
    job_id = answer.json()["id"]
    for delivery in (1, 2, 3):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            record = api_client.get(f"/v1/jobs/{job_id}").json()
            if record["status"] == "running" and record["deliveries"] == delivery:
                break
            assert record["status"] in ("queued", "running"), record
            time.sleep(0.2)
        else:
            raise AssertionError(f"delivery {delivery} never started: {record}")
        wait_until_step(api_client, job_id, 1, timeout=90)
        stack.kill_worker()
        stack.start_worker()
    done = wait_for(api_client, job_id, TERMINAL, timeout=120)
    assert done["status"] == "failed", done
    assert "lost 3 times" in done["error"], done
    # the worker is healthy afterwards
    nxt = api_client.post("/v1/jobs", json=job(tiny, seed=302, steps=5)).json()
    assert wait_for(api_client, nxt["id"], TERMINAL)["status"] == "succeeded"
