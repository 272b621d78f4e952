"""Helpers shared by the benchmarks: private services, interleaved timing, tables, metrics.

Every benchmark measures its variants in ONE run, alternating them round by round after a
warm-up, and reports medians, p90 and ratios against a baseline measured in the same run:
machines are noisy, and only numbers taken side by side compare.

Services are started from the project's own code (``service.embedded``), as
``tests/conftest.py`` does: a private ``redis-server`` on a free loopback port (never 6379,
never a Redis already running here) and ``python -m service.cli serve`` as a subprocess, both
stopped in ``finally``.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from service.embedded import RedisServer, free_port, stop_process  # noqa: E402


# ---------------------------------------------------------------------------------- services
@dataclass
class Api:
    """A running ``featureviz serve`` against a private Redis, and a keep-alive client."""

    url: str
    data_dir: Path
    log: Path
    client: httpx.Client

    def upload_model(
        self, path: Path, *, preprocess: str = "rescale", name: str | None = None
    ) -> dict[str, Any]:
        with path.open("rb") as fh:
            data = {"preprocess": preprocess} | ({"name": name} if name else {})
            resp = self.client.post(
                "/v1/models", files={"file": (path.name, fh)}, data=data, timeout=600
            )
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"upload of {path} failed: {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def metrics(self) -> dict[str, float]:
        """GET /metrics parsed to ``{'name{labels}': value}`` (Prometheus text format)."""
        resp = self.client.get("/metrics")
        resp.raise_for_status()
        return parse_metrics(resp.text)


# a label value may itself hold braces (route="/v1/models/{model_id}/activations")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


@contextmanager
def running_api(
    *, startup_timeout: float = 180.0, env: Mapping[str, str] | None = None, keep: bool = False
) -> Iterator[Api]:
    """A private Redis (no persistence) and the API subprocess on free ports; always stopped.

    The temporary directory (Redis dir, model store, ``api.log``) is removed afterwards unless
    ``keep``.
    """
    tmp = Path(tempfile.mkdtemp(prefix="featureviz-bench-"))
    redis_server = RedisServer(tmp / "redis", persist=False)
    proc: subprocess.Popen[bytes] | None = None
    client: httpx.Client | None = None
    log = tmp / "api.log"
    try:
        redis_server.start()
        url, proc = spawn_api(redis_server.url, tmp / "data", log, env)
        wait_healthy(url, proc, log, startup_timeout)
        client = httpx.Client(base_url=url, timeout=600)
        yield Api(url=url, data_dir=tmp, log=log, client=client)
    finally:
        if client is not None:
            client.close()
        stop_process(proc)
        redis_server.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def spawn_api(
    redis_url: str, data_dir: Path, log: Path, env: Mapping[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``featureviz serve`` on a free port (not waiting for it); its output goes to ``log``.

    Several may share one Redis and one ``data_dir``, as replicas of the API would.
    """
    port = free_port()
    full_env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "FEATUREVIZ_DATA_DIR": str(data_dir),
        "FEATUREVIZ_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
    return f"http://127.0.0.1:{port}", proc


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"API did not answer /healthz within {timeout:.0f} s")


# ------------------------------------------------------------------------------------ timing
@dataclass
class Samples:
    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p90(self) -> float:
        return percentile(self.seconds, 90)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) without numpy."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    variants: Mapping[str, Callable[[], Any]],
    *,
    reps: int,
    warmup: int = 2,
    settle: float = 0.0,
) -> dict[str, Samples]:
    """Time every variant ``reps`` times, alternating them round by round.

    Each round runs every variant once, in an order rotated by one each round, so drift of the
    machine (another process, thermal state) hits every variant alike. ``warmup`` rounds run
    first and are not recorded. ``settle`` seconds may pass (untimed) between two calls, to
    keep TensorFlow's spinning thread pools from charging one variant for another; it also
    lets the CPU cool down, so it is off by default.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    out = {name: Samples(name) for name in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if settle:
                time.sleep(settle)
            out[name].seconds.append(timed(variants[name]))
    return out


# ------------------------------------------------------------------------------------ tables
def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table; the first column left-aligned, the others right-aligned."""
    pad = len(header)
    cells = [[str(h) for h in header]] + [
        ([str(c) for c in row] + [""] * pad)[:pad] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        rest = zip(row[1:], widths[1:], strict=True)
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in rest]
        return "  ".join(parts).rstrip()

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


def timing_rows(
    results: Mapping[str, Samples],
    baseline: str,
    *,
    extra: Mapping[str, Sequence[Any]] | None = None,
) -> list[list[Any]]:
    """Rows ``name, n, median ms, p90 ms, ratio to baseline (of medians)`` + extra columns."""
    base = results[baseline].median
    rows = []
    for name, s in results.items():
        ratio = "1.00 (baseline)" if name == baseline else f"{s.median / base:.2f}"
        rows.append(
            [name, len(s.seconds), ms(s.median), ms(s.p90), ratio, *(extra or {}).get(name, [])]
        )
    return rows


TIMING_HEADER = ["variant", "n", "median ms", "p90 ms", "ratio"]


def verdict(ratio: float, target: float) -> str:
    return f"{'PASS' if ratio <= target else 'MISS'} (target <= {target:g})"


class RawClient:
    """A keep-alive ``http.client`` connection with prebuilt multipart bodies.

    Latency here is the service's: the client does as little as a client can (httpx costs
    several milliseconds more per 6 MB answer, see bench/README.md).
    """

    def __init__(self, url: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        import http.client

        for attempt in (1, 2):  # the server closes idle keep-alive connections: reconnect once
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
                answer = self.conn.getresponse()
                return answer.status, answer.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def multipart(files: Sequence[tuple[str, str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body: (field, filename, bytes) files plus plain fields."""
    boundary = "featurevizbench0123456789"
    out = bytearray()
    for name, value in fields.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    for name, filename, data in files:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
