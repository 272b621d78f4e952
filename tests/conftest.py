"""Real services for the tests: a private Redis, the API under uvicorn, a Celery worker.

Everything is started here from the project's own code (``service.embedded``) on free
loopback ports; nothing relies on a Redis already running on the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from service.embedded import RedisServer, free_port, stop_process  # noqa: E402
from tests import builders  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), persist=True).start()
    yield server
    server.stop()


class Service:
    """A running ``featureviz serve`` process and an HTTP client for it."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {**os.environ, **env, "FEATUREVIZ_DATA_DIR": str(data_dir)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"api-{self.port}.log"

    def start(self, timeout: float = 120.0) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("API did not start")

    def stop(self) -> None:
        stop_process(self.proc)

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, headers=headers)


@pytest.fixture(scope="session")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API against the test Redis (no worker: jobs tests add their own)."""
    data = tmp_path_factory.mktemp("api")
    service = Service({"REDIS_URL": redis_server.url}, data).start()
    yield service
    service.stop()


@pytest.fixture()
def http(api: Service) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "convnet": builders.lecture_convnet(d / "convnet.keras"),
        "tiny": builders.tiny_convnet(d / "tiny.keras"),
        "keras2": builders.keras2_h5(d / "xray.h5"),
        "nested": builders.nested_conv_base(d / "cats_and_dogs.keras"),
    }


def upload(client: httpx.Client, path: Path, **form: str) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post("/v1/models", files={"file": (path.name, fh)}, data=form)


@pytest.fixture(scope="session")
def uploaded(api: Any, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    with api.client() as client:
        out = {}
        for name, path in files.items():
            answer = upload(client, path)
            assert answer.status_code in (200, 201), answer.text
            out[name] = answer.json()
        return out


def stored_files(service: Service) -> list[str]:
    """Every file in the service's model store, relative to it (a refusal changes none)."""
    store = service.data_dir / "models"
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A valid small .keras and Keras 2 .h5, the seeds of the hostile corpus."""
    from tests.featureviz import hostile

    tmp = tmp_path_factory.mktemp("valid")
    return {"keras": hostile.valid_keras(tmp), "h5": hostile.valid_h5(tmp)}
