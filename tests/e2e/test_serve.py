"""`featureviz serve` without REDIS_URL: its own Redis and worker, restarted when it dies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests import builders
from tests.conftest import Service, upload
from tests.e2e.conftest import wait_for


def wait_ready(client: httpx.Client, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get("/readyz")
        if answer.status_code == 200:
            return answer.json()
        time.sleep(0.5)
    raise AssertionError(f"not ready after {timeout}s: {answer.text}")


def celery_workers(proc: psutil.Process) -> list[psutil.Process]:
    """Live Celery main processes started by ``proc`` (a killed one may linger as a zombie)."""
    found = []
    for p in proc.children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "celery" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_serve_starts_redis_and_a_worker_and_keeps_it_alive(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    service = Service({}, tmp_path / "data")
    service.env = {**env, "FEATUREVIZ_DATA_DIR": str(tmp_path / "data")}
    service.start()
    try:
        assert service.proc is not None
        me = psutil.Process(service.proc.pid)
        redis = [p for p in me.children() if "redis-server" in p.name()]
        assert len(redis) == 1
        ports = {
            c.laddr.port
            for c in redis[0].net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert ports and 6379 not in ports
        assert all(
            c.laddr.ip == "127.0.0.1"
            for c in redis[0].net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        )
        with service.client() as client:
            wait_ready(client)
            model = upload(client, builders.tiny_convnet(tmp_path / "t.keras", size=24)).json()
            body = {
                "model_id": model["id"],
                "layer": "conv1",
                "channels": "0-1",
                "steps": 5,
                "size": 24,
            }
            job = client.post("/v1/jobs", json=body).json()
            assert wait_for(client, job["id"], ("succeeded",))["status"] == "succeeded"

            (first,) = celery_workers(me)
            os.killpg(first.pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                alive = [p for p in celery_workers(me) if p.pid != first.pid]
                if alive:
                    break
                time.sleep(0.5)
            assert alive, "the worker was not restarted"
            wait_ready(client)
            job = client.post("/v1/jobs", json={**body, "seed": 1}).json()
            assert wait_for(client, job["id"], ("succeeded",))["status"] == "succeeded"
        children = me.children(recursive=True)
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(60) == 0
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    finally:
        service.stop()
