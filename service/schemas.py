"""Request and response schemas of the v1 API (separate classes for what comes in and out)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from featureviz.preprocess import Preprocess


class LayerPublic(BaseModel):
    index: int
    name: str
    path: str = Field(description="Unique path; nested layers as 'vgg16/block3_conv1'.")
    type: str
    output_shape: list[int | None] | None
    params: int
    channels: int | None = Field(description="Channel count of a 4-D output, else null.")


class ModelSummary(BaseModel):
    id: str
    name: str
    sha256: str
    size: int
    format: Literal["keras", "h5"]
    preprocess: Preprocess
    created_at: float
    input_shape: list[int | None]
    params: int


class ModelPublic(ModelSummary):
    output_shape: list[int | None] | None
    keras_version: str | None = None
    layers: list[LayerPublic]


class ModelList(BaseModel):
    models: list[ModelSummary]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


Responses = dict[int | str, dict[str, Any]]

PROBLEM_RESPONSES: Responses = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (400, 401, 404, 413, 422, 503)
}


def answers(ok: Responses, problems: Responses = PROBLEM_RESPONSES) -> Responses:
    """A route's documented answers: its own first, then the problems it may answer."""
    return ok | problems
