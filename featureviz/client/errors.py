"""The one exception type of the client: every problem+json answer, and jobs that end badly."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["FeatureVizHTTPError", "JobFailed", "problem", "retry_after"]


class FeatureVizHTTPError(Exception):
    """An error answered by the service, with the fields of its problem+json body.

    ``status`` is the HTTP status, ``title``/``detail``/``type`` the RFC 9457 members and
    ``errors`` the validation list (``[{detail, pointer}]``) of a 422, if any.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        type: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(status, title, detail, type, errors)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = errors

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}"


class JobFailed(FeatureVizHTTPError):
    """A waited-on job ended ``failed`` or ``cancelled``; ``detail`` is the job's error."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        type: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        job_id: str | None = None,
        job_status: str | None = None,
    ) -> None:
        super().__init__(status, title, detail, type, errors)
        self.args = (status, title, detail, type, errors, job_id, job_status)
        self.job_id = job_id
        self.job_status = job_status

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> JobFailed:
        status = record.get("status", "failed")
        detail = record.get("error") or f"the job {status}"
        return cls(
            409,
            f"Job {status}",
            str(detail),
            f"urn:featureviz:problem:job-{status}",
            None,
            record.get("id"),
            status,
        )


def problem(response: httpx.Response) -> FeatureVizHTTPError:
    """Build the exception from an error response (problem+json, else the raw text)."""
    body: Any = None
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except ValueError:
            body = None
    if isinstance(body, dict):
        detail = body.get("detail")
        if not isinstance(detail, str):
            detail = json.dumps(detail) if detail is not None else response.reason_phrase
        return FeatureVizHTTPError(
            int(body.get("status") or response.status_code),
            str(body.get("title") or response.reason_phrase),
            detail,
            str(body.get("type") or "about:blank"),
            body.get("errors"),
        )
    text = response.text.strip()[:500] or response.reason_phrase
    return FeatureVizHTTPError(response.status_code, response.reason_phrase or "Error", text)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
