"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics
from service.api.deps import OwnerDep, RuntimeDep
from service.problems import Problem

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="health-live")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="health-ready",
    responses={503: {"content": {"application/problem+json": {}}}},
)
def readyz(runtime: RuntimeDep) -> dict[str, object]:
    """Redis answers and a worker listens on queue ``gpu``."""
    try:
        runtime.redis.ping()
    except Exception:  # noqa: BLE001 - any failure means not ready
        raise Problem(503, "Not ready", "Redis does not answer") from None
    workers = runtime.live_workers()
    if not workers:
        raise Problem(503, "Not ready", "no worker is listening on queue 'gpu'")
    return {"status": "ready", "workers": workers}


@router.get(
    "/metrics",
    operation_id="health-metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def prometheus_metrics(runtime: RuntimeDep, _: OwnerDep) -> Response:
    """Prometheus metrics."""
    for cache, gauge in (
        (runtime.loaded, metrics.MODEL_CACHE),
        (runtime.functions, metrics.FUNCTION_CACHE),
    ):
        gauge.labels("hit").set(cache.hits)
        gauge.labels("miss").set(cache.misses)
    runtime.update_job_metrics()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
