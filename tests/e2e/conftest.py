"""A whole deployment for the job tests: its own Redis, the API, and a real Celery worker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.embedded import RedisServer, start_worker
from tests import builders
from tests.conftest import Service

WEBHOOK_SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXdlYmhvb2tz"


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis", persist=True).start()
        self.env = {
            "REDIS_URL": self.redis.url,
            "FEATUREVIZ_DATA_DIR": str(tmp / "data"),
            "FEATUREVIZ_JOB_STALE_SECONDS": "6",
            "FEATUREVIZ_JOB_HEARTBEAT_SECONDS": "1",
            "FEATUREVIZ_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "FEATUREVIZ_ALLOW_PRIVATE_CALLBACKS": "true",
            "FEATUREVIZ_JOB_MAX_STEPS": "5000",
        }
        self.api = Service(self.env, tmp / "data").start()
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log_path = tmp / "worker.log"
        self.worker_log = self.worker_log_path.open("ab")

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.worker = start_worker(self.env, name=f"gpu{time.monotonic_ns()}", log=self.worker_log)
        return self.worker

    def kill_worker(self) -> None:
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)  # warm shutdown: the main process only
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop_worker()
        self.api.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack"))
    s.start_worker()
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.api.client() as c:
        yield c


@pytest.fixture(scope="module")
def model(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = builders.tiny_convnet(tmp_path_factory.mktemp("m") / "tiny.keras", size=32, filters=8)
    with path.open("rb") as fh:
        answer = client.post("/v1/models", files={"file": ("tiny.keras", fh)})
    assert answer.status_code == 201, answer.text
    return answer.json()


def wait_for(
    client: httpx.Client,
    job_id: str,
    statuses: tuple[str, ...],
    timeout: float = 90.0,
    poll: float = 0.2,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = client.get(f"/v1/jobs/{job_id}")
        if answer.status_code == 200:
            record = answer.json()
            if record["status"] in statuses:
                return record
        time.sleep(poll)
    raise AssertionError(f"job {job_id} not in {statuses} after {timeout}s: {record}")


def wait_until_step(
    client: httpx.Client, job_id: str, step: int, timeout: float = 60.0
) -> dict[str, Any]:
    """Poll until the job's progress reaches ``step``; its record then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/v1/jobs/{job_id}")
        if answer.status_code == 200 and answer.json()["progress"]["step"] >= step:
            return answer.json()
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached step {step}")
