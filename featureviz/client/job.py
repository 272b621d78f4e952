"""A submitted gradient-ascent job: polling with a progress bar, cancel, and its results."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from featureviz.client.errors import JobFailed
from featureviz.client.parts import read_npz

if TYPE_CHECKING:
    from featureviz.client.api import Client

__all__ = ["TERMINAL", "Job"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Job:
    """A gradient-ascent job: its record, polling, and its results once ``succeeded``."""

    def __init__(self, client: Client, record: dict[str, Any]) -> None:
        self.client = client
        self.record = record

    def __repr__(self) -> str:
        step = self.progress.get("step", 0)
        steps = self.progress.get("steps", "?")
        return f"<Job {self.id} {self.status} {step}/{steps}>"

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def progress(self) -> dict[str, Any]:
        return dict(self.record.get("progress") or {})

    @property
    def error(self) -> str | None:
        return self.record.get("error")

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def refresh(self, wait: float = 0.0) -> Job:
        """Fetch the current record; with ``wait``, the server answers early when the job ends."""
        params = {"wait": round(wait, 3)} if wait > 0 else None
        self.record = self.client._json("GET", f"/v1/jobs/{self.id}", params=params)
        return self

    def wait(self, timeout: float | None = None, progress: bool = True, poll: float = 0.5) -> Job:
        """Wait until the job ends; return self when it ``succeeded``.

        Each look long-polls the server for up to ``poll`` seconds, so the end is seen at once
        and the bar still moves every ``poll`` seconds.

        Raises ``JobFailed`` (a ``FeatureVizHTTPError``) when it ends ``failed`` or
        ``cancelled`` and ``TimeoutError`` after ``timeout`` seconds. ``progress`` draws a
        one-line bar on stderr.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _ProgressBar(sys.stderr, self.id) if progress else None
        try:
            while True:
                if bar:
                    bar.draw(self.record)
                if self.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.id} is still {self.status} after {timeout}s")
                left = (
                    poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
                )
                self.refresh(wait=left)
        finally:
            if bar:
                bar.close()
        if self.status != "succeeded":
            raise JobFailed.from_record(self.record)
        return self

    def cancel(self) -> Job:
        """Ask the job to stop (a queued job never starts; a running one stops soon)."""
        self.record = self.client._json("DELETE", f"/v1/jobs/{self.id}")
        return self

    def _get(self, name: str, **params: Any) -> bytes:
        return self.client.request("GET", f"/v1/jobs/{self.id}/{name}", params=params).content

    def result_png(self, cols: int = 8, scale: int = 1) -> bytes:
        """Every channel's image in one PNG grid."""
        return self._get("result.png", cols=cols, scale=scale)

    def channel_png(self, c: int) -> bytes:
        """One channel's image as PNG."""
        return self._get(f"channels/{int(c)}.png")

    def frames_gif(self) -> bytes:
        """The optimization's snapshots as an animated GIF."""
        return self._get("frames.gif")

    def result_npz(self) -> dict[str, Any]:
        """``images``, ``history``, ``snapshots``, ``snapshot_steps``, ``channels``,
        ``objective_values`` as arrays and ``manifest`` decoded to a dict."""
        out: dict[str, Any] = read_npz(self._get("result.npz"))
        if "manifest" in out:
            out["manifest"] = json.loads(str(out["manifest"]))
        return out

    def result_images(self) -> np.ndarray:
        """The final images, (channels, H, W, 3) float32 in [0, 1]."""
        return read_npz(self._get("result.npz"))["images"]


class _ProgressBar:
    """``\\r``-redrawn one-line bar: job id, status, step/steps, activation."""

    WIDTH = 30

    def __init__(self, stream: IO[str], job_id: str) -> None:
        self.stream = stream
        self.label = job_id[:8]
        self.last = ""
        self.drawn = False

    def draw(self, record: Mapping[str, Any]) -> None:
        progress = record.get("progress") or {}
        step, steps = int(progress.get("step") or 0), int(progress.get("steps") or 0)
        filled = int(self.WIDTH * step / steps) if steps else 0
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"{self.label} {record.get('status', '?'):<9} [{bar}] {step}/{steps}"
        activation = progress.get("activation")
        if activation is not None:
            line += f" act {activation:.4g}"
        if line != self.last:
            pad = " " * max(0, len(self.last) - len(line))
            self.stream.write("\r" + line + pad)
            self.stream.flush()
            self.last, self.drawn = line, True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
