"""Load: concurrent clients mixing uploads, activations, feature maps and jobs on a private stack.

Run: ``.venv/bin/python bench/load.py [--seconds 60] [--clients 8]``

Starts its own deployment, as ``tests/e2e/conftest.py`` does: a private ``redis-server`` on a
free loopback port (never 6379, never the machine's Redis), ``featureviz serve`` as a
subprocess and one real Celery worker (prefork, one child, queue ``gpu``). Then ``--clients``
threads, each with its own keep-alive ``httpx.Client``, loop for ``--seconds`` over a weighted
mix of requests:

- ``upload``: the same .keras bytes again (the sha256 is known: a cheap 200);
- ``activations``: one photo, two conv layers, npz;
- ``feature-maps``: one photo, 16 channels of a layer as a PNG grid;
- ``job-submit``: a small gradient-ascent job (10 steps, 32x32, 2 channels); seeds repeat, so
  later ones are answered from the result cache while the first ones run on the worker;
- ``job-poll``: GET of a job submitted earlier.

It prints requests per second, latency p50/p90/p99 per kind, the error count (anything but the
expected status, or a transport error: must be 0), how the submitted jobs ended (waited for
after the load, bounded), and the peak RSS of the API and of the worker (each process with its
children, sampled every 0.5 s with psutil). Exit status 1 when there were errors.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from _common import ROOT, percentile, print_table, wait_healthy  # puts the repo on sys.path

from service.embedded import RedisServer, free_port, start_worker, stop_process

WEIGHTS = {"upload": 1, "activations": 4, "feature-maps": 3, "job-submit": 1, "job-poll": 1}
EXPECTED = {
    "upload": (200, 201),
    "activations": (200,),
    "feature-maps": (200,),
    "job-submit": (202,),
    "job-poll": (200,),
}
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Record:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float, ok: bool, note: str = "") -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            if not ok:
                self.errors[kind] += 1
                if len(self.samples) < 10:
                    self.samples.append(f"{kind}: {note[:300]}")


class Stack:
    """Redis + API + worker in a temporary directory; ``close()`` stops them all."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="featureviz-load-"))
        self.redis = RedisServer(self.tmp / "redis", persist=False).start()
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "FEATUREVIZ_DATA_DIR": str(self.tmp / "data"),
            "FEATUREVIZ_LOG_LEVEL": "WARNING",
        }
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = self.tmp / "api.log"
        with self.log.open("ab") as out:
            self.api = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
            )
        self.worker: subprocess.Popen[bytes] | None = None
        try:
            wait_healthy(self.url, self.api, self.log, 180)
            self.worker = start_worker(self.env, name="load")
            self._wait_ready(120)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                return
            time.sleep(0.5)
        raise RuntimeError("the worker did not become ready")

    def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, 15)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, 9)
        stop_process(self.api)
        self.redis.stop()


class RssSampler(threading.Thread):
    """Peak RSS of each named process tree (the process and all its children), every 0.5 s."""

    def __init__(self, pids: dict[str, int], period: float = 0.5) -> None:
        super().__init__(daemon=True, name="rss")
        self.pids = pids
        self.period = period
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.halt = threading.Event()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak[name] = max(self.peak[name], total)

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.period)


def build_inputs(tmp: Path) -> tuple[bytes, list[bytes]]:
    from tests import builders

    model = builders.tiny_convnet(tmp / "tiny.keras", size=64, filters=16).read_bytes()
    photos = [
        builders.jpeg_bytes(builders.photo((64, 64), name=name))
        for name in ("chelsea", "astronaut", "coffee")
    ]
    photos.append(builders.png_bytes(builders.photo((80, 60))))
    return model, photos


def client_loop(
    url: str,
    model_bytes: bytes,
    model_id: str,
    photos: list[bytes],
    stop_at: float,
    seed: int,
    rec: Record,
) -> None:
    rng = random.Random(seed)
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in kinds]
    base = f"/v1/models/{model_id}"

    def upload(c: httpx.Client) -> httpx.Response:
        return c.post("/v1/models", files={"file": ("tiny.keras", model_bytes)})

    def activations(c: httpx.Client) -> httpx.Response:
        return c.post(
            base + "/activations",
            files={"image": ("photo.jpg", rng.choice(photos))},
            data={"layers": "conv1,conv2"},
        )

    def feature_maps(c: httpx.Client) -> httpx.Response:
        return c.post(
            base + "/feature-maps",
            files={"image": ("photo.jpg", rng.choice(photos))},
            data={"layer": rng.choice(["conv1", "conv2"]), "channels": "0-15", "cmap": "magma"},
        )

    def job_submit(c: httpx.Client) -> httpx.Response:
        body = {
            "model_id": model_id,
            "layer": "conv2",
            "channels": "0-1",
            "steps": 10,
            "size": 32,
            "seed": rng.randrange(12),
        }
        answer = c.post("/v1/jobs", json=body)
        if answer.status_code == 202:
            with rec.lock:
                rec.jobs.append(answer.json()["id"])
        return answer

    def job_poll(c: httpx.Client) -> httpx.Response:
        with rec.lock:
            known = list(rec.jobs[-50:])
        return c.get(f"/v1/jobs/{rng.choice(known)}")

    calls: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        "upload": upload,
        "activations": activations,
        "feature-maps": feature_maps,
        "job-submit": job_submit,
        "job-poll": job_poll,
    }
    with httpx.Client(base_url=url, timeout=120) as c:
        while time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            if kind == "job-poll" and not rec.jobs:
                kind = "job-submit"  # nothing to poll yet
            start = time.perf_counter()
            try:
                answer = calls[kind](c)
                took = time.perf_counter() - start
                ok = answer.status_code in EXPECTED[kind]
                rec.add(kind, took, ok, f"{answer.status_code} {answer.text[:200]}")
            except httpx.HTTPError as exc:
                rec.add(kind, time.perf_counter() - start, False, f"{type(exc).__name__}: {exc}")


def wait_jobs(url: str, ids: list[str], timeout: float) -> dict[str, int]:
    """How the submitted jobs ended; anything still queued/running after ``timeout`` counts."""
    counts: dict[str, int] = defaultdict(int)
    deadline = time.monotonic() + timeout
    pending = list(dict.fromkeys(ids))
    with httpx.Client(base_url=url, timeout=30) as c:
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                status = c.get(f"/v1/jobs/{job_id}").json()["status"]
                if status in TERMINAL:
                    counts[status] += 1
                else:
                    still.append(job_id)
            pending = still
            if pending:
                time.sleep(0.5)
        for job_id in pending:
            counts["not ended: " + c.get(f"/v1/jobs/{job_id}").json()["status"]] += 1
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    args = parser.parse_args(argv)

    print(f"building inputs and starting Redis + API + worker ({os.cpu_count()} cores)...")
    stack = Stack()
    try:
        model_bytes, photos = build_inputs(stack.tmp)
        with httpx.Client(base_url=stack.url, timeout=300) as c:
            first = c.post("/v1/models", files={"file": ("tiny.keras", model_bytes)})
            first.raise_for_status()
            model_id = first.json()["id"]
            for layer in ("conv1", "conv2"):  # warm the model and the compiled functions
                c.post(
                    f"/v1/models/{model_id}/feature-maps",
                    files={"image": ("p.jpg", photos[0])},
                    data={"layer": layer, "channels": "0-15"},
                ).raise_for_status()
            c.post(
                f"/v1/models/{model_id}/activations",
                files={"image": ("p.jpg", photos[0])},
                data={"layers": "conv1,conv2"},
            ).raise_for_status()
        assert stack.worker is not None
        sampler = RssSampler({"api": stack.api.pid, "worker": stack.worker.pid})
        sampler.sample()
        sampler.start()
        rec = Record()
        stop_at = time.monotonic() + args.seconds
        started = time.monotonic()
        threads = [
            threading.Thread(
                target=client_loop,
                args=(stack.url, model_bytes, model_id, photos, stop_at, 1000 + i, rec),
            )
            for i in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        jobs = wait_jobs(stack.url, rec.jobs, timeout=120)
        sampler.halt.set()
        sampler.join()
        alive = stack.api.poll() is None and stack.worker.poll() is None
    finally:
        stack.close()

    rows = []
    total = sum(len(v) for v in rec.latencies.values())
    for kind in WEIGHTS:
        lat = rec.latencies.get(kind, [])
        if not lat:
            continue
        rows.append(
            [
                kind,
                len(lat),
                f"{len(lat) / elapsed:.1f}",
                f"{percentile(lat, 50) * 1000:.0f}",
                f"{percentile(lat, 90) * 1000:.0f}",
                f"{percentile(lat, 99) * 1000:.0f}",
                rec.errors.get(kind, 0),
            ]
        )
    all_lat = [x for v in rec.latencies.values() for x in v]
    rows.append(
        [
            "all",
            total,
            f"{total / elapsed:.1f}",
            f"{percentile(all_lat, 50) * 1000:.0f}",
            f"{percentile(all_lat, 90) * 1000:.0f}",
            f"{percentile(all_lat, 99) * 1000:.0f}",
            sum(rec.errors.values()),
        ]
    )
    print_table(
        f"load: {args.clients} clients for {elapsed:.1f} s",
        ["kind", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"],
        rows,
    )
    mib = 1024 * 1024
    print_table(
        "peak RSS (process + children, sampled every 0.5 s)",
        ["process", "peak MiB"],
        [[name, f"{peak / mib:,.0f}"] for name, peak in sampler.peak.items()],
    )
    print(f"\njobs submitted: {len(rec.jobs)} ({len(set(rec.jobs))} distinct); ended: {jobs}")
    print(f"API and worker alive at the end: {alive}")
    errors = sum(rec.errors.values())
    for line in rec.samples:
        print("error sample:", line)
    print(f"errors: {errors}")
    not_ended = sum(n for k, n in jobs.items() if k.startswith("not ended"))
    return 1 if errors or not_ended or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
