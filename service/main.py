"""The FastAPI application: ``create_app(settings)``.

Middleware gives every request an id (accepted from ``X-Request-ID`` or made, echoed back),
counts requests and latency per route and status, and refuses bodies whose declared length is
already over the largest allowed upload before a byte is read.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI

from featureviz import __version__
from service import problems
from service.api.routes import health, jobs, models, views
from service.logs import setup_logging
from service.middleware import Observe
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
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    problems.install(app)
    for router in (models.router, views.router, jobs.router, health.router):
        app.include_router(router)
    upload_limit = max(settings.max_model_bytes, settings.max_image_bytes * settings.max_images)

    app.add_middleware(Observe, upload_limit=upload_limit + 1024 * 1024)
    return app
