"""The reaper: a running job whose worker stopped heartbeating is requeued or failed.

Without it a job whose worker was killed would wait for Redis' visibility timeout (about twice
the hard time limit, hours) before Celery delivered it again. Runs as a daemon thread beside
the API; a Redis lock makes one reaper act at a time across replicas.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from service.settings import Settings
from workers.jobs import JobStore

log = logging.getLogger(__name__)


def reap(jobs: JobStore, enqueue: Callable[[str], None], *, max_deliveries: int) -> list[str]:
    """One pass: act on every running job without a live lease; return the ids acted on."""
    acted = []
    for job_id in jobs.active_ids():
        record = jobs.get(job_id)
        if record is None:
            jobs.redis.srem("fv:jobs:active", job_id)
            continue
        if record["status"] != "running" or jobs.lease_alive(job_id):
            continue
        acted.append(job_id)
        if jobs.cancel_requested(job_id):
            jobs.finish(job_id, "cancelled")
        elif record["deliveries"] >= max_deliveries:
            jobs.finish(
                job_id,
                "failed",
                error=f"the job's worker was lost {record['deliveries']} times; not trying again",
            )
            log.warning("job failed after lost workers", extra={"job_id": job_id})
        else:
            jobs.update(job_id, status="queued", requeued_by="reaper")
            enqueue(job_id)
            log.warning("job requeued: its worker stopped heartbeating", extra={"job_id": job_id})
    return acted


class Reaper(threading.Thread):
    def __init__(self, jobs: JobStore, enqueue: Callable[[str], None], settings: Settings) -> None:
        super().__init__(daemon=True, name="reaper")
        self.jobs = jobs
        self.enqueue = enqueue
        self.settings = settings
        self.period = max(1.0, settings.job_stale_seconds / 3)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.period):
            try:
                lock = self.jobs.redis.set(
                    "fv:reaper:lock", "1", nx=True, px=int(self.period * 900)
                )
                if lock:
                    reap(self.jobs, self.enqueue, max_deliveries=self.settings.job_max_deliveries)
            except redis.RedisError as exc:
                log.info("reaper skipped a pass: %s", exc)
            except Exception:  # noqa: BLE001 - the reaper must outlive any one bad record
                log.exception("reaper pass failed")

    def stop(self) -> None:
        self.halt.set()
