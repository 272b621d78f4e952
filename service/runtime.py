"""What the API process holds between requests: Redis, the model store, loaded models and
compiled activation functions.

Loaded models are cached by sha256 and compiled functions by (sha256, preprocess, layers), so a
second request on a model loads nothing and traces nothing again. Models are loaded here only
after the sandbox has inspected the same bytes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio

from featureviz.activations import ActivationFunction, FunctionCache
from service import metrics
from service.model_store import ModelStore
from service.problems import not_found
from service.settings import Settings
from workers.celery_app import QUEUE, VISUALIZE_TASK, make_celery
from workers.jobs import JobStore
from workers.reaper import Reaper

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.models = ModelStore(client, settings.model_dir, record_ttl=settings.model_record_ttl)
        self.loaded = FunctionCache(settings.model_cache_size)
        self.functions = FunctionCache(settings.function_cache_size)
        # One child inspecting a model at a time: each may take gigabytes.
        self.sandbox_slots = threading.BoundedSemaphore(1)
        self.jobs = JobStore(client, result_ttl=settings.job_result_ttl)
        self._aredis: redis.asyncio.Redis | None = None
        self.celery = make_celery(settings)
        self.reaper = Reaper(self.jobs, self.enqueue, settings)
        self.reaper.start()

    def close(self) -> None:
        self.reaper.stop()

    @property
    def aredis(self) -> redis.asyncio.Redis:
        """An asyncio client for waiting on pub/sub without holding a thread."""
        if self._aredis is None:
            self._aredis = redis.asyncio.Redis.from_url(self.settings.redis_url or "")
        return self._aredis

    def enqueue(self, job_id: str) -> None:
        """Send by task name: the API never imports the worker's task module."""
        self.celery.send_task(VISUALIZE_TASK, args=[job_id], queue=QUEUE, task_id=job_id)

    def revoke(self, job_id: str) -> None:
        self.celery.control.revoke(job_id)

    def live_workers(self) -> list[str]:
        """Names of workers that answer a ping and consume queue ``gpu``."""
        inspect = self.celery.control.inspect(timeout=1.0)
        queues = inspect.active_queues() or {}
        return sorted(name for name, qs in queues.items() if any(q["name"] == QUEUE for q in qs))

    def update_job_metrics(self) -> None:
        counts = {"queued": 0, "running": 0}
        for job_id in self.jobs.active_ids():
            record = self.jobs.get(job_id)
            if record and record["status"] in counts:
                counts[record["status"]] += 1
        for state, n in counts.items():
            metrics.JOBS.labels(state).set(n)
        metrics.QUEUE_DEPTH.set(self.redis.llen(QUEUE))

    def keras_model(self, record: dict[str, Any]) -> Any:
        from featureviz.models import load_model

        path = self.models.file_path(record["sha256"], record["format"])

        def load() -> Any:
            if not path.exists():  # deleted through another API process since it was read
                self.models.records.forget(record["id"])
                raise not_found("model", record["id"])
            return load_model(str(path), limits=self.file_limits())

        return self.loaded.get(record["sha256"], load)

    def activation_function(
        self, record: dict[str, Any], paths: Sequence[str]
    ) -> ActivationFunction:
        key = (record["sha256"], record["preprocess"], tuple(paths))
        return self.functions.get(
            key,
            lambda: ActivationFunction(
                self.keras_model(record), paths, preprocess_mode=record["preprocess"]
            ),
        )

    def forget(self, sha256: str) -> None:
        self.loaded.drop(lambda k: k == sha256)
        self.functions.drop(lambda k: isinstance(k, tuple) and k[0] == sha256)

    def file_limits(self) -> Any:
        from featureviz.safety import FileLimits

        s = self.settings
        return FileLimits(
            max_bytes=s.max_model_bytes, max_layers=s.max_layers, max_params=s.max_params
        )
