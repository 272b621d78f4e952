"""The service's own job records in Redis, shared by the API and the workers.

Celery reports any unknown id as PENDING, so the truth about a job lives here: status,
progress, timings, error, owner, deliveries and the key of its results. A running job holds a
lease (``fv:job:<id>:lease``) that its worker renews with a heartbeat; the reaper requeues or
fails a running job whose lease lapsed, so a killed worker never leaves a job ``running``.

Redis keys::

    fv:job:<id>               JSON record (TTL: results TTL + 30 days, for 410 after expiry)
    fv:jobs:<owner>           sorted set of the owner's job ids by creation time
    fv:jobs:active            set of queued or running job ids (what the reaper looks at)
    fv:job:<id>:cancel        cancel flag, checked by the optimization loop
    fv:job:<id>:lease         the running delivery's token, expiring without heartbeats
    fv:result:<key>:<name>    result bytes (grid.png, result.npz, frames.gif, c<i>.png), TTL
    fv:resultcache:<key>      "stored" while the results of that content key exist
    fv:idem:<owner>:<key>     Idempotency-Key -> {"job_id", "body"}
    fv:job:<id>:ended         pub/sub channel: the final status, published once
"""

from __future__ import annotations

import builtins
import json
import secrets
import time
from typing import Any, cast

import redis

TERMINAL = ("succeeded", "failed", "cancelled")


def ended_channel(job_id: str) -> str:
    """The pub/sub channel told once when a job ends, for clients that wait on it."""
    return f"fv:job:{job_id}:ended"


RECORD_GRACE = 30 * 24 * 3600


class JobStore:
    def __init__(self, client: redis.Redis, *, result_ttl: int) -> None:
        self.redis = client
        self.result_ttl = result_ttl

    # records -----------------------------------------------------------------------------
    def _save(self, record: dict[str, Any], pipe: Any = None) -> None:
        target = pipe if pipe is not None else self.redis
        target.set(f"fv:job:{record['id']}", json.dumps(record), ex=self.result_ttl + RECORD_GRACE)

    def create(
        self,
        *,
        owner: str,
        model: dict[str, Any],
        params: dict[str, Any],
        result_key: str,
        callback_url: str | None,
        no_cache: bool = False,
    ) -> dict[str, Any]:
        now = time.time()
        record = {
            "id": secrets.token_hex(12),
            "owner": owner,
            "model_id": model["id"],
            "model_sha256": model["sha256"],
            "model_format": model["format"],
            "preprocess": model["preprocess"],
            "params": params,
            "result_key": result_key,
            "callback_url": callback_url,
            "no_cache": no_cache,
            "status": "queued",
            "progress": {"step": 0, "steps": params["steps"], "activation": None},
            "created_at": now,
            "started_at": None,
            "finished_at": None,
            "error": None,
            "deliveries": 0,
            "cached": False,
        }
        pipe = self.redis.pipeline()
        self._save(record, pipe)
        pipe.zadd(f"fv:jobs:{owner}", {record["id"]: now})
        pipe.sadd("fv:jobs:active", record["id"])
        pipe.execute()
        return record

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.get(f"fv:job:{job_id}")
        return json.loads(raw) if raw else None

    def update(self, job_id: str, **fields: Any) -> dict[str, Any] | None:
        """Read-modify-write under WATCH, so concurrent updates never lose each other."""
        key = f"fv:job:{job_id}"
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        return None
                    record = json.loads(raw)
                    if record["status"] in TERMINAL:
                        return record  # a finished job stays finished
                    record.update(fields)
                    pipe.multi()
                    self._save(record, pipe)
                    if record["status"] in TERMINAL:
                        pipe.srem("fv:jobs:active", job_id)
                        pipe.publish(ended_channel(job_id), record["status"])
                    pipe.execute()
                    return record
                except redis.WatchError:
                    continue

    def finish(
        self, job_id: str, status: str, *, error: str | None = None
    ) -> dict[str, Any] | None:
        return self.update(job_id, status=status, error=error, finished_at=time.time())

    def list(self, owner: str, *, limit: int = 100) -> list[dict[str, Any]]:
        ids = cast(builtins.list[bytes], self.redis.zrevrange(f"fv:jobs:{owner}", 0, limit - 1))
        raws = self.redis.mget([f"fv:job:{i.decode()}" for i in ids]) if ids else []
        return [json.loads(r) for r in raws if r]

    def active_ids(self) -> builtins.list[str]:
        return [i.decode() for i in cast(set[bytes], self.redis.smembers("fv:jobs:active"))]

    def count_queued(self, owner: str) -> int:
        ids = self.active_ids()
        raws = self.redis.mget([f"fv:job:{i}" for i in ids]) if ids else []
        return sum(1 for r in raws if r and json.loads(r)["owner"] == owner)

    # cancel and lease ---------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        self.redis.set(f"fv:job:{job_id}:cancel", "1", ex=self.result_ttl)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(f"fv:job:{job_id}:cancel"))

    def acquire_lease(self, job_id: str, token: str, ttl: float) -> bool:
        return bool(self.redis.set(f"fv:job:{job_id}:lease", token, nx=True, px=int(ttl * 1000)))

    def renew_lease(self, job_id: str, token: str, ttl: float) -> bool:
        """Extend the lease if this delivery still holds it (atomic compare-and-expire)."""
        script = (
            "if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
        )
        return bool(self.redis.eval(script, 1, f"fv:job:{job_id}:lease", token, int(ttl * 1000)))

    def release_lease(self, job_id: str, token: str) -> None:
        script = (
            "if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end"
        )
        self.redis.eval(script, 1, f"fv:job:{job_id}:lease", token)

    def lease_alive(self, job_id: str) -> bool:
        return bool(self.redis.exists(f"fv:job:{job_id}:lease"))

    # results ------------------------------------------------------------------------------
    def put_results(self, result_key: str, parts: dict[str, bytes]) -> None:
        pipe = self.redis.pipeline()
        for name, data in parts.items():
            pipe.set(f"fv:result:{result_key}:{name}", data, ex=self.result_ttl)
        pipe.set(f"fv:resultcache:{result_key}", json.dumps(sorted(parts)), ex=self.result_ttl)
        pipe.execute()

    def result(self, result_key: str, name: str) -> bytes | None:
        return cast(bytes | None, self.redis.get(f"fv:result:{result_key}:{name}"))

    def results_exist(self, result_key: str) -> bool:
        return bool(self.redis.exists(f"fv:resultcache:{result_key}"))

    # idempotency --------------------------------------------------------------------------
    def idempotent(self, owner: str, key: str) -> dict[str, Any] | None:
        raw = self.redis.get(f"fv:idem:{owner}:{key}")
        return json.loads(raw) if raw else None

    def remember_idempotent(self, owner: str, key: str, job_id: str, body: str) -> bool:
        """Claim the key for this job; False when another request claimed it first."""
        value = json.dumps({"job_id": job_id, "body": body})
        return bool(self.redis.set(f"fv:idem:{owner}:{key}", value, nx=True, ex=24 * 3600))
