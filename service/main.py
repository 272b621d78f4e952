"""The FastAPI application: ``create_app(settings)``.

Middleware gives every request an id (accepted from ``X-Request-ID`` or made, echoed back),
counts requests and latency per route and status, and refuses bodies whose declared length is
already over the largest allowed upload before a byte is read.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from featureviz import __version__
from service import metrics, problems
from service.api.routes import health, jobs, models, views
from service.logs import REQUEST_ID, setup_logging
from service.runtime import Runtime
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.redis_url:
            raise RuntimeError(
                "REDIS_URL is not set: run `featureviz serve`, which starts its own Redis, "
                "or point REDIS_URL at one"
            )
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10
        )
        app.state.runtime = Runtime(settings, client)
        log.info("featureviz %s ready", __version__)
        yield
        app.state.runtime.close()

    setup_logging(settings.log_level)
    app = FastAPI(
        title="featureviz",
        version=__version__,
        summary="See what a convolutional network has learned.",
        description=(
            "Upload Keras models and images; get intermediate activations, feature-map PNGs "
            "and gradient-ascent feature visualizations. Errors are RFC 9457 problem+json."
        ),
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
    )
    problems.install(app)
    for router in (models.router, views.router, jobs.router, health.router):
        app.include_router(router)
    upload_limit = max(settings.max_model_bytes, settings.max_image_bytes * settings.max_images)

    @app.middleware("http")
    async def observe(request: Request, call_next):  # type: ignore[no-untyped-def]
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id[:128])
        start = time.perf_counter()
        route = request.url.path
        try:
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > upload_limit + 1024 * 1024:
                response: Response = problems.problem_response(
                    413, "Too large", f"the request body is over the limit of {upload_limit} bytes"
                )
            else:
                response = await call_next(request)
            found = request.scope.get("route")
            route = found.path if isinstance(found, APIRoute) else "unmatched"
            response.headers["X-Request-ID"] = request_id[:128]
            if route.endswith("/activations") and response.status_code == 200:
                metrics.ACTIVATION_BYTES.inc(int(response.headers.get("content-length", 0)))
            return response
        finally:
            elapsed = time.perf_counter() - start
            status = locals().get("response")
            code = str(status.status_code) if status is not None else "500"
            metrics.REQUESTS.labels(request.method, route, code).inc()
            metrics.LATENCY.labels(request.method, route).observe(elapsed)
            REQUEST_ID.reset(token)

    return app
