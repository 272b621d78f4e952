"""Job completion callbacks, signed as Standard Webhooks and refused on private addresses.

``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``; a secret
given as ``whsec_<base64>`` is decoded as the Standard Webhooks libraries do. Delivery is
retried with exponential backoff in a background thread so the worker takes the next job at
once. Addresses are checked when the job is submitted and again just before each delivery
(a name may resolve elsewhere by then).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from service.logs import JOB_ID

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)


class CallbackRefused(ValueError):
    """The callback URL is not one we will call."""


def check_callback_url(url: str, *, allow_private: bool) -> None:
    """Refuse non-HTTP schemes and, unless allowed, hosts resolving to non-public addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("callback_url must be an http or https URL with a host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise CallbackRefused(f"callback host {parts.hostname!r} does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise CallbackRefused(
                f"callback host {parts.hostname!r} resolves to a private or loopback address "
                f"({address}); refused unless allowed in settings"
            )


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def payload(record: dict[str, Any]) -> dict[str, Any]:
    base = f"/v1/jobs/{record['id']}"
    return {
        "type": f"job.{record['status']}",
        "timestamp": time.time(),
        "data": {
            "id": record["id"],
            "status": record["status"],
            "error": record.get("error"),
            "links": {
                "self": base,
                "result_png": base + "/result.png",
                "result_npz": base + "/result.npz",
            },
        },
    }


def send(url: str, record: dict[str, Any], *, secret: str, allow_private: bool) -> bool:
    """Try each backoff step until the receiver answers 2xx; True when delivered."""
    JOB_ID.set(record["id"])
    body = json.dumps(payload(record)).encode()
    msg_id = f"msg_{record['id']}_{record['status']}"
    for attempt, pause in enumerate((0.0, *BACKOFF)):
        time.sleep(pause)
        try:
            check_callback_url(url, allow_private=allow_private)
        except CallbackRefused as exc:
            log.warning("callback refused: %s", exc)
            return False
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, msg_id, ts, body),
        }
        try:
            answer = httpx.post(
                url, content=body, headers=headers, timeout=10, follow_redirects=False
            )
            if 200 <= answer.status_code < 300:
                return True
            log.info("callback answered %s (attempt %d)", answer.status_code, attempt + 1)
        except httpx.HTTPError as exc:
            log.info("callback failed (attempt %d): %s", attempt + 1, exc)
    return False


def deliver_callback(
    record: dict[str, Any], *, secret: str, allow_private: bool
) -> threading.Thread:
    """Deliver in the background; the worker goes on to its next job."""
    thread = threading.Thread(
        target=send,
        args=(record["callback_url"], record),
        kwargs={"secret": secret, "allow_private": allow_private},
        daemon=True,
        name=f"callback-{record['id']}",
    )
    thread.start()
    return thread
