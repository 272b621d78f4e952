"""RFC 9457 problem+json for every error, in one place.

Engine errors map to statuses by class; FastAPI's validation errors keep their detail as an
``errors`` list of ``{detail, pointer}``; Redis being away is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from featureviz.errors import (
    Cancelled,
    FeatureVizError,
    ImageRejected,
    InvalidRequest,
    LayerNotFound,
    ModelRejected,
    TooLarge,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

_STATUS: dict[type[FeatureVizError], int] = {
    ModelRejected: 422,
    ImageRejected: 422,
    LayerNotFound: 422,
    InvalidRequest: 422,
    TooLarge: 413,
    Cancelled: 409,
}


class Problem(Exception):
    """An HTTP error raised by a route, rendered as problem+json."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(status, title, detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.slug = slug or _slug(title)
        self.headers = headers or {}
        self.extra = extra


def _slug(title: str) -> str:
    return "-".join(title.lower().split())


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": f"urn:featureviz:problem:{slug or _slug(title)}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def not_found(what: str, ident: str) -> Problem:
    return Problem(404, "Not found", f"no {what} {ident!r}", slug="not-found")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.detail, slug=exc.slug, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(FeatureVizError)
    async def _engine(_: Request, exc: FeatureVizError) -> JSONResponse:
        status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 422)
        return problem_response(status, exc.title, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"detail": err.get("msg", ""), "pointer": "#/" + "/".join(str(p) for p in err["loc"])}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"detail": "invalid request", "pointer": "#/"}
        return problem_response(
            422,
            "Validation error",
            f"{first['pointer']}: {first['detail']}",
            slug="validation-error",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized"}.get(
            exc.status_code, "HTTP error"
        )
        return problem_response(
            exc.status_code, title, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return problem_response(
            503,
            "Service unavailable",
            "the job and metadata store (Redis) is not reachable; try again shortly",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "Internal error", "an unexpected error occurred")
