"""Celery tasks: a job id in, the engine called, progress and results written to Redis.

TensorFlow is imported lazily here, in the prefork child, never in the Celery parent. The task
holds a lease on its job that a heartbeat thread renews; a second delivery of the same job
(Redis' visibility timeout, or the reaper's requeue) finds the lease held and leaves it alone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from featureviz import __version__
from featureviz.activations import FunctionCache
from featureviz.errors import Cancelled, FeatureVizError
from service.logs import JOB_ID
from service.settings import get_settings
from workers.callbacks import deliver_callback
from workers.celery_app import VISUALIZE_TASK
from workers.jobs import TERMINAL, JobStore

log = logging.getLogger(__name__)
_models = FunctionCache(maxsize=4)
_client: redis.Redis | None = None


def _store() -> JobStore:
    global _client
    settings = get_settings()
    if _client is None:
        _client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=10)
    return JobStore(_client, result_ttl=settings.job_result_ttl)


def _prepare_tensorflow() -> None:
    """First use in this child: quiet logs, GPU memory growth (one process per GPU)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialized
            pass


def _load(record: dict[str, Any]) -> Any:
    from featureviz.models import load_model

    settings = get_settings()
    path = settings.model_dir / f"{record['model_sha256']}.{record['model_format']}"
    return _models.get(record["model_sha256"], lambda: load_model(str(path)))


class Heartbeat(threading.Thread):
    """Renews the job's lease until stopped; a worker that dies stops renewing."""

    def __init__(self, store: JobStore, job_id: str, token: str, ttl: float, every: float):
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.store, self.job_id, self.token, self.ttl, self.every = store, job_id, token, ttl, every
        self.halt = threading.Event()

    def run(self) -> None:
        JOB_ID.set(self.job_id)
        while not self.halt.wait(self.every):
            try:
                self.store.renew_lease(self.job_id, self.token, self.ttl)
            except redis.RedisError as exc:  # Redis away: keep trying, the job goes on
                log.warning("heartbeat failed: %s", exc)


def manifest(record: dict[str, Any]) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    return {
        "job_id": record["id"],
        "model_sha256": record["model_sha256"],
        "preprocess": record["preprocess"],
        "params": record["params"],
        "seed": record["params"]["seed"],
        "versions": {
            "featureviz": __version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    }


def run_job(store: JobStore, record: dict[str, Any]) -> dict[str, bytes]:
    """Run the optimization of one job and return its result files."""
    _prepare_tensorflow()
    from featureviz.ascent import AscentConfig, visualize
    from featureviz.ascent.export import export

    params = record["params"]
    timings: dict[str, float] = {}
    began = time.time()
    model = _load(record)
    timings["load_s"] = time.time() - began
    config = AscentConfig.from_params(params)
    job_id = record["id"]
    last_write = [0.0]

    def progress(step: int, activations: Any) -> bool:
        timings.setdefault("first_progress_at", time.time())
        timings.setdefault("first_progress_step", float(step))
        now = time.monotonic()
        if now - last_write[0] >= 0.5 or step >= params["steps"]:
            last_write[0] = now
            store.update(
                job_id,
                progress={
                    "step": int(step),
                    "steps": params["steps"],
                    "activation": float(activations.mean()),
                },
            )
        return store.cancel_requested(job_id)

    began = time.time()
    result = visualize(
        model,
        params["layer_path"],
        params["channels"],
        config,
        preprocess=record["preprocess"],
        objective_kind=params["objective"],
        progress=progress,
    )
    timings["optimize_s"] = time.time() - began
    began = time.time()
    parts = export(result, manifest(record))
    timings["export_s"] = time.time() - began
    store.update(job_id, timings=timings)
    return parts


@shared_task(name=VISUALIZE_TASK, bind=True)
def visualize_job(self: Any, job_id: str) -> None:
    context = JOB_ID.set(job_id)
    try:
        _visualize(job_id)
    finally:
        JOB_ID.reset(context)


def _visualize(job_id: str) -> None:
    """One delivery of a job: lease, run, record the outcome, call back."""
    settings = get_settings()
    store = _store()
    token = uuid.uuid4().hex
    record = store.get(job_id)
    if record is None or record["status"] in TERMINAL:
        log.info("nothing to do: job is %s", record and record["status"])
        return
    if not store.acquire_lease(job_id, token, settings.job_stale_seconds):
        log.info("job is held by another live delivery; leaving it")
        return
    beat = Heartbeat(
        store, job_id, token, settings.job_stale_seconds, settings.job_heartbeat_seconds
    )
    beat.start()
    try:
        deliveries = record["deliveries"] + 1
        if deliveries > settings.job_max_deliveries:
            store.finish(
                job_id,
                "failed",
                error=f"the job's worker was lost {deliveries - 1} times; not trying again",
            )
            return
        if store.cancel_requested(job_id):
            store.finish(job_id, "cancelled")
            return
        store.update(
            job_id,
            status="running",
            started_at=time.time(),
            deliveries=deliveries,
            worker=f"{socket.gethostname()}:{os.getpid()}",
        )
        log.info("job started", extra={"delivery": deliveries})
        if not record.get("no_cache") and store.results_exist(record["result_key"]):
            store.update(job_id, cached=True)
        else:
            parts = run_job(store, record)
            store.put_results(record["result_key"], parts)
        final = store.finish(job_id, "succeeded")
        log.info("job succeeded")
    except Cancelled:
        final = store.finish(job_id, "cancelled")
        log.info("job cancelled")
    except SoftTimeLimitExceeded:
        final = store.finish(
            job_id,
            "failed",
            error=f"the job ran past its time limit of {settings.job_soft_time_limit}s",
        )
    except FeatureVizError as exc:
        final = store.finish(job_id, "failed", error=exc.detail)
    except Exception as exc:  # noqa: BLE001 - the job fails with the reason, the worker lives
        log.exception("job failed")
        final = store.finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        beat.halt.set()
        store.release_lease(job_id, token)
    if final is not None and final.get("callback_url"):
        deliver_callback(
            final, secret=settings.webhook_secret, allow_private=settings.allow_private_callbacks
        )
