"""One plain ASGI middleware for every request: request id, metrics, access log, body limit.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` wraps
every answer in a stream of its own, which costs milliseconds per request and would copy the
tensor chunks that ``ChunksResponse`` sends as they are.
"""

from __future__ import annotations

import logging
import time
import uuid

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics, problems
from service.logs import REQUEST_ID

access = logging.getLogger("featureviz.access")


class Observe:
    def __init__(self, app: ASGIApp, *, upload_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = (headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex)[:128]
        token = REQUEST_ID.set(request_id)
        start = time.perf_counter()
        status = 500
        sent = 0

        async def observed(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            elif message["type"] == "http.response.body":
                sent += memoryview(message.get("body", b"")).nbytes
            await send(message)

        try:
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.upload_limit:
                answer = problems.problem_response(
                    413,
                    "Too large",
                    f"the request body is over the limit of {self.upload_limit} bytes",
                )
                await answer(scope, receive, observed)
            else:
                await self.app(scope, receive, observed)
        finally:
            found = scope.get("route")
            route = found.path if isinstance(found, APIRoute) else "unmatched"
            elapsed = time.perf_counter() - start
            method = scope["method"]
            metrics.REQUESTS.labels(method, route, str(status)).inc()
            metrics.LATENCY.labels(method, route).observe(elapsed)
            if route.endswith("/activations") and status == 200:
                metrics.ACTIVATION_BYTES.inc(sent)
            access.info(
                "%s %s %s",
                method,
                scope["path"],
                status,
                extra={"status": status, "route": route, "ms": round(elapsed * 1000, 1)},
            )
            REQUEST_ID.reset(token)
