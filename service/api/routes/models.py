"""Model routes: upload, list, inspect, delete."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from featureviz.errors import TooLarge
from featureviz.preprocess import Preprocess
from featureviz.safety import sniff_format
from service.api.deps import OwnerDep, RuntimeDep
from service.problems import not_found
from service.runtime import Runtime
from service.schemas import PROBLEM_RESPONSES, ModelList, ModelPublic, ModelSummary, answers

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/models", tags=["models"])

CHUNK = 1024 * 1024


def copy_limited(upload: UploadFile, dest: Path, limit: int) -> tuple[str, int]:
    """Copy an upload to ``dest`` while hashing; refuse it past ``limit`` bytes."""
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        while chunk := upload.file.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the model file is over the limit of {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def inspect(runtime: Runtime, path: Path) -> dict[str, Any]:
    """First load of unknown bytes: in a sandboxed child, one at a time."""
    from featureviz.sandbox import SandboxLimits, inspect_in_sandbox

    s = runtime.settings
    limits = SandboxLimits(
        memory_bytes=s.load_memory_bytes,
        cpu_seconds=s.load_cpu_seconds,
        wall_seconds=s.load_wall_seconds,
    )
    with runtime.sandbox_slots:
        return inspect_in_sandbox(str(path), file_limits=runtime.file_limits(), limits=limits)


@router.post(
    "",
    operation_id="models-upload",
    response_model=ModelPublic,
    status_code=201,
    responses=answers({200: {"model": ModelPublic, "description": "These bytes are known"}}),
)
def upload_model(
    runtime: RuntimeDep,
    owner: OwnerDep,
    response: Response,
    file: Annotated[UploadFile, File(description="A .keras archive or a legacy .h5 file")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    preprocess: Annotated[Preprocess, Form()] = "rescale",
) -> dict[str, Any]:
    """Upload a Keras model. The same bytes uploaded twice are one model (200)."""
    part = runtime.models.incoming_path()
    tmp = part
    try:
        sha, size = copy_limited(file, part, runtime.settings.max_model_bytes)
        with part.open("rb") as fh:
            fmt = sniff_format(fh.read(4096))
        tmp = part.with_suffix(f".{fmt}")  # Keras picks its loader by the extension
        os.replace(part, tmp)
        existing = runtime.models.find(owner, sha)
        if existing is not None:
            response.status_code = 200
            return existing
        inspection = runtime.models.inspection(sha)
        if inspection is None:
            inspection = inspect(runtime, tmp)
        record = runtime.models.add(
            owner=owner,
            sha256=sha,
            size=size,
            name=name or Path(file.filename or "model").stem or "model",
            preprocess=preprocess,
            inspection=inspection,
            source=tmp,
        )
        log.info("model stored", extra={"model_id": record["id"], "sha256": sha})
        return record
    finally:
        part.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


@router.get("", operation_id="models-list", response_model=ModelList, responses=PROBLEM_RESPONSES)
def list_models(runtime: RuntimeDep, owner: OwnerDep) -> dict[str, Any]:
    """Every model of the caller, oldest first."""
    return {"models": [ModelSummary.model_validate(r) for r in runtime.models.list(owner)]}


def get_record(runtime: Runtime, owner: str, model_id: str) -> dict[str, Any]:
    record = runtime.models.get(owner, model_id)
    if record is None:
        raise not_found("model", model_id)
    return record


@router.get(
    "/{model_id}",
    operation_id="models-get",
    response_model=ModelPublic,
    responses=PROBLEM_RESPONSES,
)
def get_model(runtime: RuntimeDep, owner: OwnerDep, model_id: str) -> dict[str, Any]:
    """One model with its layer table (like ``model.summary()``, nested layers by path)."""
    return get_record(runtime, owner, model_id)


@router.delete(
    "/{model_id}", operation_id="models-delete", status_code=204, responses=PROBLEM_RESPONSES
)
async def delete_model(runtime: RuntimeDep, owner: OwnerDep, model_id: str) -> Response:
    """Delete a model; its file goes when no other owner uses the same bytes."""
    record = await run_in_threadpool(get_record, runtime, owner, model_id)
    await run_in_threadpool(runtime.models.delete, record)
    if runtime.models.inspection(record["sha256"]) is None:
        runtime.forget(record["sha256"])
    return Response(status_code=204)
