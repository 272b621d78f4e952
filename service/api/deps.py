"""Annotated dependencies shared by the routes: settings, runtime, the caller's identity.

They are ``async def`` on purpose: none blocks, and FastAPI would run a plain ``def``
dependency in the thread pool, one hand-off per dependency per request.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.problems import Problem
from service.runtime import Runtime
from service.settings import Settings

PUBLIC_OWNER = "public"


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


def owner_of(key: str) -> str:
    """A stable, non-reversible owner id for an API key (the key itself is never stored)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


async def get_owner(request: Request) -> str:
    """The owner of what this request creates and sees; 401 when keys are on and none match.

    ``async`` because it never blocks: FastAPI runs a plain ``def`` dependency in the thread
    pool, a hop per dependency per request.
    """
    keys: list[str] = request.app.state.runtime.settings.api_keys
    if not keys:
        return PUBLIC_OWNER
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    if given:
        matched = None
        for key in keys:  # compare with every key, in constant time each
            if hmac.compare_digest(given.encode(), key.encode()):
                matched = key
        if matched is not None:
            request.state.owner = owner_of(matched)
            return request.state.owner
    raise Problem(
        401,
        "Unauthorized",
        "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
OwnerDep = Annotated[str, Depends(get_owner)]
