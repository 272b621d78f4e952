"""A response that sends a list of chunks as they are: tensors go out without a copy."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class ChunksResponse(Response):
    """Send ``chunks`` (bytes or memoryviews of arrays) one after another.

    ``Response`` would need one joined ``bytes`` body: for a 100 MB answer that is a copy of
    100 MB and page faults on fresh memory, paid on every request.
    """

    def __init__(
        self,
        chunks: Sequence[bytes | memoryview],
        *,
        media_type: str,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(b"", media_type=media_type, headers=headers, background=background)
        self.chunks = coalesce(chunks)
        size = sum(memoryview(c).nbytes for c in chunks)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.raw_headers.append((b"content-length", str(size).encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if self.background is not None:
            await self.background()


def coalesce(
    chunks: Sequence[bytes | memoryview], small: int = 64 * 1024
) -> list[bytes | memoryview]:
    """Join runs of small chunks (zip and npy headers) so each becomes one socket write."""
    out: list[bytes | memoryview] = []
    pending: list[bytes | memoryview] = []
    for chunk in chunks:
        if memoryview(chunk).nbytes < small:
            pending.append(chunk)
            continue
        if pending:
            out.append(b"".join(pending))
            pending = []
        out.append(chunk)
    if pending:
        out.append(b"".join(pending))
    return out
