"""Structured JSON logs, one object per line, with the request id or job id of the moment."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("job_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (rid := REQUEST_ID.get()) is not None:
            entry["request_id"] = rid
        jid = JOB_ID.get() or _celery_task_id() or _logged_task_id(record)
        if jid is not None:
            entry["job_id"] = jid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _celery_task_id() -> str | None:
    """Inside a Celery task the task id is the job id (the service sends it so)."""
    task = sys.modules.get("celery")
    if task is None:
        return None
    from celery import current_task

    request = getattr(current_task, "request", None)
    return getattr(request, "id", None)


def _logged_task_id(record: logging.LogRecord) -> str | None:
    """Celery's own lines about a task ("received", "succeeded") carry its id in ``data``."""
    data = getattr(record, "data", None)
    return data.get("id") if isinstance(data, dict) else None


def setup_logging(level: str = "INFO") -> None:
    """Send the root logger's records to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(level.upper())
