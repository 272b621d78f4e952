"""Gradient-ascent jobs: submit, poll, fetch results, cancel.

Everything is validated here, against the model's layer table and the engine's own config
check, before anything is queued. The same request on the same model bytes and seed is
answered from the stored results (content-addressed), unless ``no_cache``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from featureviz import __version__
from featureviz.activations import check_channels, parse_channels
from featureviz.ascent import AscentConfig, export
from featureviz.errors import InvalidRequest
from featureviz.models import resolve_layers
from service.api.deps import OwnerDep, RuntimeDep
from service.api.routes.models import get_record
from service.problems import Problem, not_found
from service.runtime import Runtime
from service.schemas import PROBLEM_RESPONSES, answers
from workers.callbacks import CallbackRefused, check_callback_url
from workers.jobs import TERMINAL, ended_channel

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_DEFAULTS = AscentConfig()  # the engine's tuned defaults are the API's


class Regularizers(BaseModel):
    l2: float = Field(0.0, ge=0, le=100)
    tv: float = Field(0.0, ge=0, le=100)
    blur: float = Field(0.0, ge=0, le=100)


class JobCreate(BaseModel):
    """A gradient-ascent request: which input maximizes these channels of this layer?"""

    model_config = {"extra": "forbid"}

    model_id: str = Field(max_length=64)
    layer: str = Field(max_length=300, description="Name, path or index of a 4-D layer")
    channels: str | list[int] = Field(
        "0-7", description="'0-39' or a list; one image per channel, optimized as one batch"
    )
    objective: Literal["channel", "neuron"] = "channel"
    steps: int = Field(_DEFAULTS.steps, ge=1)
    learning_rate: float = Field(_DEFAULTS.learning_rate, gt=0, le=1000)
    size: int = Field(_DEFAULTS.size, ge=16)
    parameterization: Literal["fft", "pixel"] = "fft"
    decorrelate: bool = True
    transforms: Literal["standard", "none"] | list[str] = "standard"
    regularizers: Regularizers = Field(default_factory=Regularizers)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    snapshot_every: int = Field(0, ge=0, description="Keep the image every k steps (0: last)")
    optimizer: Literal["adam", "sgd"] = _DEFAULTS.optimizer
    clip_grad: float | None = Field(None, gt=0, description="Clip the gradient's norm")
    normalize_grad: bool = Field(False, description="Divide the gradient by its RMS (lectures)")
    callback_url: str | None = Field(None, max_length=2000)
    no_cache: bool = False


class Progress(BaseModel):
    step: int
    steps: int
    activation: float | None


class JobPublic(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model_id: str
    params: dict[str, Any]
    progress: Progress
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    deliveries: int
    cached: bool
    timings: dict[str, float] = Field(
        default_factory=dict, description="Seconds spent loading, optimizing, exporting"
    )
    links: dict[str, str]


class JobList(BaseModel):
    jobs: list[JobPublic]


def public(record: dict[str, Any]) -> dict[str, Any]:
    base = f"/v1/jobs/{record['id']}"
    links = {"self": base}
    if record["status"] == "succeeded":
        links |= {
            "result_png": f"{base}/result.png",
            "result_npz": f"{base}/result.npz",
            "frames_gif": f"{base}/frames.gif",
            "channel_png": f"{base}/channels/{{c}}.png",
        }
    return {**record, "links": links}


def validate(
    runtime: Runtime, owner: str, body: JobCreate
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the request against the model and limits; return (model record, job params)."""
    s = runtime.settings
    model = get_record(runtime, owner, body.model_id)
    if body.steps > s.job_max_steps:
        raise InvalidRequest(f"steps {body.steps} is over the limit of {s.job_max_steps}")
    if body.size > s.job_max_size:
        raise InvalidRequest(f"size {body.size} is over the limit of {s.job_max_size}")
    (path,) = resolve_layers(model["layers"], [body.layer])
    row = next(r for r in model["layers"] if r["path"] == path)
    if row["channels"] is None:
        raise InvalidRequest(
            f"layer {path!r} has no channel axis (output {row['output_shape']}); pick a conv layer"
        )
    channels = parse_channels(body.channels) or []
    if not channels:
        raise InvalidRequest("no channels given")
    if len(channels) > s.job_max_channels:
        raise InvalidRequest(f"{len(channels)} channels, over the limit of {s.job_max_channels}")
    check_channels(channels, row["channels"], layer=path)
    params = body.model_dump(exclude={"callback_url", "no_cache", "model_id"})
    params |= {"layer_path": path, "channels": channels}
    try:
        AscentConfig.from_params(params)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    if body.callback_url:
        try:
            check_callback_url(body.callback_url, allow_private=s.allow_private_callbacks)
        except CallbackRefused as exc:
            raise InvalidRequest(str(exc)) from None
    return model, params


def content_key(owner: str, model: dict[str, Any], params: dict[str, Any]) -> str:
    canonical = json.dumps(
        {
            "owner": owner,
            "sha256": model["sha256"],
            "preprocess": model["preprocess"],
            "params": params,
            "version": __version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit(runtime: Runtime, owner: str, body: JobCreate, idem_key: str | None) -> dict[str, Any]:
    jobs = runtime.jobs
    body_text = body.model_dump_json()
    if idem_key:
        seen = jobs.idempotent(owner, idem_key)
        if seen is not None:
            return same_key(runtime, seen, body_text)
    model, params = validate(runtime, owner, body)
    if (
        runtime.settings.api_keys
        and jobs.count_queued(owner) >= runtime.settings.max_queued_per_key
    ):
        raise Problem(
            429,
            "Too many jobs",
            f"this key has {runtime.settings.max_queued_per_key} jobs queued or running; "
            "wait for some to finish",
            headers={"Retry-After": "30"},
        )
    key = content_key(owner, model, params)
    record = jobs.create(
        owner=owner,
        model=model,
        params=params,
        result_key=key,
        callback_url=body.callback_url,
        no_cache=body.no_cache,
    )
    if idem_key and not jobs.remember_idempotent(owner, idem_key, record["id"], body_text):
        jobs.finish(record["id"], "cancelled", error="superseded by a concurrent request")
        return same_key(runtime, jobs.idempotent(owner, idem_key) or {}, body_text)
    if not body.no_cache and jobs.results_exist(key):
        return (
            jobs.update(
                record["id"],
                status="succeeded",
                cached=True,
                started_at=record["created_at"],
                finished_at=record["created_at"],
                progress={"step": params["steps"], "steps": params["steps"], "activation": None},
            )
            or record
        )
    runtime.enqueue(record["id"])
    return record


def same_key(runtime: Runtime, seen: dict[str, Any], body_text: str) -> dict[str, Any]:
    if seen.get("body") != body_text:
        raise InvalidRequest("this Idempotency-Key was used with a different request body")
    record = runtime.jobs.get(seen["job_id"])
    if record is None:
        raise Problem(410, "Gone", "the job of this Idempotency-Key has expired")
    return record


@router.post(
    "",
    operation_id="jobs-create",
    status_code=202,
    response_model=JobPublic,
    responses=PROBLEM_RESPONSES | {429: {"content": {"application/problem+json": {}}}},
)
def create_job(
    runtime: RuntimeDep,
    owner: OwnerDep,
    body: JobCreate,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Queue a gradient-ascent job; poll ``Location`` for its state and results."""
    record = submit(runtime, owner, body, idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{record['id']}"
    return public(record)


@router.get("", operation_id="jobs-list", response_model=JobList, responses=PROBLEM_RESPONSES)
def list_jobs(
    runtime: RuntimeDep, owner: OwnerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """The caller's jobs, newest first."""
    return {"jobs": [public(r) for r in runtime.jobs.list(owner, limit=limit)]}


def get_job_record(runtime: Runtime, owner: str, job_id: str) -> dict[str, Any]:
    record = runtime.jobs.get(job_id)
    if record is None or record["owner"] != owner:
        raise not_found("job", job_id)
    return record


@router.get(
    "/{job_id}", operation_id="jobs-get", response_model=JobPublic, responses=PROBLEM_RESPONSES
)
async def get_job(
    runtime: RuntimeDep,
    owner: OwnerDep,
    job_id: str,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=60,
            description="Hold the answer up to this many seconds until the job ends (long polling)",
        ),
    ] = 0,
) -> dict[str, Any]:
    """Status, progress (step, steps, current target activation), timings, error, links."""
    record = await run_in_threadpool(get_job_record, runtime, owner, job_id)
    if wait and record["status"] not in TERMINAL:
        # Subscribe first, then look again: an end between the two is not missed.
        async with runtime.aredis.pubsub() as events:
            await events.subscribe(ended_channel(job_id))
            record = await run_in_threadpool(get_job_record, runtime, owner, job_id)
            if record["status"] not in TERMINAL:
                try:
                    await asyncio.wait_for(_ended(events), timeout=wait)
                except TimeoutError:
                    pass
                record = await run_in_threadpool(get_job_record, runtime, owner, job_id)
    return public(record)


async def _ended(events: Any) -> None:
    async for message in events.listen():
        if message["type"] == "message":
            return


@router.delete(
    "/{job_id}",
    operation_id="jobs-cancel",
    response_model=JobPublic,
    responses=PROBLEM_RESPONSES | {409: {"content": {"application/problem+json": {}}}},
)
def cancel_job(runtime: RuntimeDep, owner: OwnerDep, job_id: str) -> dict[str, Any]:
    """Cancel: a queued job never starts, a running one stops within a few steps."""
    record = get_job_record(runtime, owner, job_id)
    if record["status"] in TERMINAL:
        raise Problem(409, "Conflict", f"the job has already {record['status']}")
    runtime.jobs.request_cancel(job_id)
    if record["status"] == "queued":
        runtime.revoke(job_id)
        record = runtime.jobs.finish(job_id, "cancelled") or record
    return public(record)


def result_bytes(runtime: Runtime, owner: str, job_id: str, name: str) -> bytes:
    record = get_job_record(runtime, owner, job_id)
    if record["status"] != "succeeded":
        raise Problem(
            409, "Not ready", f"the job is {record['status']}; results come with succeeded"
        )
    data = runtime.jobs.result(record["result_key"], name)
    if data is None:
        if runtime.jobs.results_exist(record["result_key"]):
            raise not_found("result", name)
        raise Problem(410, "Gone", "the job's results have expired; submit it again")
    return data


RESULT_RESPONSES = PROBLEM_RESPONSES | {
    409: {"content": {"application/problem+json": {}}},
    410: {"content": {"application/problem+json": {}}},
}


@router.get(
    "/{job_id}/result.png",
    operation_id="jobs-result-png",
    response_class=Response,
    responses=answers({200: {"content": {"image/png": {}}}}, RESULT_RESPONSES),
)
async def result_png(
    runtime: RuntimeDep,
    owner: OwnerDep,
    job_id: str,
    cols: Annotated[int, Query(ge=1, le=64)] = 8,
    scale: Annotated[int, Query(ge=1, le=8)] = 1,
) -> Response:
    """Every channel's image in one grid (the lectures' 5x8 figure for 40 channels)."""
    if cols == 8 and scale == 1:
        data = await run_in_threadpool(result_bytes, runtime, owner, job_id, "grid.png")
    else:
        raw = await run_in_threadpool(result_bytes, runtime, owner, job_id, "result.npz")
        data = await run_in_threadpool(
            lambda: export.grid_png(export.images_from_npz(raw), cols=cols, scale=scale)
        )
    return Response(data, media_type="image/png")


@router.get(
    "/{job_id}/channels/{channel}.png",
    operation_id="jobs-channel-png",
    response_class=Response,
    responses=answers({200: {"content": {"image/png": {}}}}, RESULT_RESPONSES),
)
def channel_png(runtime: RuntimeDep, owner: OwnerDep, job_id: str, channel: int) -> Response:
    """One channel's image."""
    png = export.channel_png(result_bytes(runtime, owner, job_id, "result.npz"), channel)
    if png is None:
        raise not_found("channel of this job", str(channel))
    return Response(png, media_type="image/png")


@router.get(
    "/{job_id}/result.npz",
    operation_id="jobs-result-npz",
    response_class=Response,
    responses=answers({200: {"content": {"application/x-npz": {}}}}, RESULT_RESPONSES),
)
def result_npz(runtime: RuntimeDep, owner: OwnerDep, job_id: str) -> Response:
    """Images, activation history, snapshots and the manifest (``allow_pickle=False``)."""
    return Response(
        result_bytes(runtime, owner, job_id, "result.npz"), media_type="application/x-npz"
    )


@router.get(
    "/{job_id}/frames.gif",
    operation_id="jobs-frames-gif",
    response_class=Response,
    responses=answers({200: {"content": {"image/gif": {}}}}, RESULT_RESPONSES),
)
def frames_gif(runtime: RuntimeDep, owner: OwnerDep, job_id: str) -> Response:
    """The optimization as an animation of its snapshots (``snapshot_every`` sets how many)."""
    gif = export.frames_gif(result_bytes(runtime, owner, job_id, "result.npz"))
    return Response(gif, media_type="image/gif")
