"""A synchronous Python client for the featureviz v1 HTTP API.

``Client(base_url, api_key).submit(model, layer, channels) -> Job``; three lines for a pipeline::

    c = Client("http://127.0.0.1:8000")
    m = c.upload_model("model.keras")
    png = c.submit(m, "block3_conv1", "0-39").wait().result_png()

Every error the service answers (RFC 9457 problem+json) is raised as one exception type,
``FeatureVizHTTPError``; a job that ends ``failed`` or ``cancelled`` while waited on raises its
subclass ``JobFailed``. Connect errors and 502/503/504 are retried with exponential backoff,
honouring ``Retry-After``. Only httpx, numpy and Pillow are needed; Keras is imported only to
upload an in-memory ``keras.Model``.
"""

from __future__ import annotations

import email.utils
import io
import json
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import httpx
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

__all__ = ["Client", "FeatureVizHTTPError", "Job", "JobFailed"]

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({502, 503, 504})
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
MAX_BACKOFF = 30.0

ModelRef = str | Mapping[str, Any]
ImageLike = str | Path | bytes | Image.Image | np.ndarray
Channels = str | Sequence[int] | None


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


def _problem(response: httpx.Response) -> FeatureVizHTTPError:
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


def _retry_after(response: httpx.Response) -> float | None:
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


def _model_id(model: ModelRef) -> str:
    if isinstance(model, str):
        return model
    if isinstance(model, Mapping) and "id" in model:
        return str(model["id"])
    raise TypeError(f"a model is an id or a model record, not {type(model).__name__}")


def _channels(channels: Channels) -> str | None:
    if channels is None or isinstance(channels, str):
        return channels
    return ",".join(str(int(c)) for c in channels)


def _png(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(f"an image array is HxW, HxWx3 or HxWx4, got shape {array.shape}")
        if array.dtype != np.uint8:
            values = array.astype(np.float32)
            if values.size and float(np.nanmax(values)) <= 1.0:
                values = values * 255.0  # floats in [0, 1]
            array = np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
        image = Image.fromarray(array)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _image_part(image: ImageLike, index: int) -> tuple[str, bytes, str]:
    """One multipart file: paths and bytes as they are, arrays and PIL images as PNG."""
    if isinstance(image, str | Path):
        path = Path(image)
        return path.name, path.read_bytes(), "application/octet-stream"
    if isinstance(image, bytes | bytearray | memoryview):
        return f"image{index}", bytes(image), "application/octet-stream"
    if isinstance(image, Image.Image | np.ndarray):
        return f"image{index}.png", _png(image), "image/png"
    raise TypeError(f"an image is a path, bytes, a PIL image or an array, not {type(image)}")


def _image_list(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    if isinstance(images, str | Path | bytes | bytearray | Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    return list(images)


def _npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


class Client:
    """The featureviz v1 API over a synchronous ``httpx.Client``.

    Parameters
    ----------
    base_url
        Where the service listens.
    api_key
        Sent as ``Authorization: Bearer <key>`` when the service has keys turned on.
    timeout
        Seconds for each request (connect, read, write, pool).
    retries
        Extra attempts after a connect error or a 502/503/504, with exponential backoff
        (0.5 s, 1 s, 2 s ...) or the server's ``Retry-After``.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        headers = {"User-Agent": "featureviz-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        files: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request with retries; raise ``FeatureVizHTTPError`` on a 4xx/5xx answer.

        ``files`` is a callable building the multipart files, called once per attempt so
        that streams are fresh on a retry.
        """
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method, path, files=files() if files else None, **kwargs
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.retries:
                    raise
                delay = min(MAX_BACKOFF, 0.5 * 2**attempt)
                log.warning("%s %s: %s; retrying in %.1fs", method, path, exc, delay)
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    if response.is_error:
                        raise _problem(response)
                    return response
                delay = _retry_after(response)
                delay = min(MAX_BACKOFF, 0.5 * 2**attempt if delay is None else delay)
                log.warning(
                    "%s %s: %s; retrying in %.1fs", method, path, response.status_code, delay
                )
            attempt += 1
            time.sleep(delay)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- models ----------------------------------------------------------------------------

    def upload_model(
        self,
        path_or_keras_model: str | Path | Any,
        *,
        name: str | None = None,
        preprocess: Literal["none", "rescale", "caffe", "tf", "torch"] = "rescale",
    ) -> dict[str, Any]:
        """Upload a .keras/.h5 file or an in-memory ``keras.Model``; return the model record.

        The same bytes are one model server-side (the existing record comes back), so
        uploading before every use is cheap. A ``keras.Model`` is saved to a temporary
        ``.keras`` file first.
        """
        if isinstance(path_or_keras_model, str | Path):
            return self._upload_file(Path(path_or_keras_model), name, preprocess)
        import keras  # only here: a model in memory means Keras is loaded already

        if not isinstance(path_or_keras_model, keras.Model):
            raise TypeError(
                f"upload_model takes a path or a keras.Model, not {type(path_or_keras_model)}"
            )
        with tempfile.TemporaryDirectory(prefix="featureviz-") as tmp:
            model_name = name or getattr(path_or_keras_model, "name", None) or "model"
            path = Path(tmp) / "model.keras"
            path_or_keras_model.save(path)
            return self._upload_file(path, model_name, preprocess)

    def _upload_file(self, path: Path, name: str | None, preprocess: str) -> dict[str, Any]:
        data: dict[str, str] = {"preprocess": preprocess}
        if name:
            data["name"] = name
        with path.open("rb") as fh:

            def files() -> dict[str, tuple[str, IO[bytes], str]]:
                fh.seek(0)
                return {"file": (path.name, fh, "application/octet-stream")}

            return self._json("POST", "/v1/models", files=files, data=data)

    def models(self) -> list[dict[str, Any]]:
        """Every model of the caller (summaries, oldest first)."""
        return self._json("GET", "/v1/models")["models"]

    def model(self, id: ModelRef) -> dict[str, Any]:
        """One model record with its layer table."""
        return self._json("GET", f"/v1/models/{_model_id(id)}")

    def delete_model(self, id: ModelRef) -> None:
        """Delete a model (its jobs' results stay until they expire)."""
        self.request("DELETE", f"/v1/models/{_model_id(id)}")

    def layers(self, model: ModelRef) -> list[dict[str, Any]]:
        """The layer table: index, name, path, type, output_shape, params, channels."""
        if isinstance(model, Mapping) and "layers" in model:
            return list(model["layers"])
        return self.model(model)["layers"]

    # -- synchronous views -----------------------------------------------------------------

    def activations(
        self,
        model: ModelRef,
        images: ImageLike | Iterable[ImageLike],
        layers: str | Sequence[str] | None = None,
        channels: Channels = None,
    ) -> dict[str, np.ndarray]:
        """Activations by layer path, float32 NHWC, one row per image.

        ``images`` is one image or a list: paths, encoded bytes, PIL images, or uint8/float
        arrays HxWx3 (floats in [0, 1] or [0, 255]); a 4-D array is a batch. ``layers``
        defaults to every layer with a 4-D output.
        """
        parts = [_image_part(im, i) for i, im in enumerate(_image_list(images))]
        if not parts:
            raise ValueError("give at least one image")
        form: dict[str, str] = {}
        if layers is not None:
            form["layers"] = layers if isinstance(layers, str) else ",".join(layers)
        if (spec := _channels(channels)) is not None:
            form["channels"] = spec
        response = self.request(
            "POST",
            f"/v1/models/{_model_id(model)}/activations",
            files=lambda: [("image", part) for part in parts],
            data=form,
            headers={"Accept": "application/x-npz"},
        )
        return _npz(response.content)

    def feature_maps(
        self,
        model: ModelRef,
        image: ImageLike,
        layer: str,
        *,
        channels: Channels = None,
        channel: int | None = None,
        cmap: str = "viridis",
        normalize: Literal["channel", "layer", "fixed"] = "channel",
        vmin: float | None = None,
        vmax: float | None = None,
        cols: int | None = None,
        scale: int = 1,
        labels: bool = False,
        with_input: bool = False,
    ) -> Image.Image:
        """A PNG grid of one image's feature maps: channels of ``layer``, or with
        ``layer="*"`` and ``channel`` that channel across every layer."""
        form: dict[str, Any] = {
            "layer": layer,
            "cmap": cmap,
            "normalize": normalize,
            "scale": str(scale),
            "labels": str(labels).lower(),
            "with_input": str(with_input).lower(),
        }
        optional = {
            "channels": _channels(channels),
            "channel": channel,
            "vmin": vmin,
            "vmax": vmax,
            "cols": cols,
        }
        form |= {k: str(v) for k, v in optional.items() if v is not None}
        part = _image_part(image, 0)
        response = self.request(
            "POST",
            f"/v1/models/{_model_id(model)}/feature-maps",
            files=lambda: {"image": part},
            data=form,
        )
        return _open_png(response.content)

    def filters(self, model: ModelRef, layer: str, **opts: Any) -> Image.Image:
        """The layer's kernels as tiles (``cols``, ``cmap``, ``scale`` as query options)."""
        params = {"layer": layer, **{k: v for k, v in opts.items() if v is not None}}
        response = self.request("GET", f"/v1/models/{_model_id(model)}/filters.png", params=params)
        return _open_png(response.content)

    # -- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        model: ModelRef,
        layer: str,
        channels: Channels = "0-7",
        *,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Job:
        """Queue a gradient-ascent job; ``params`` go into the JSON body of ``POST /v1/jobs``
        (``steps``, ``size``, ``learning_rate``, ``seed``, ``parameterization`` ...).

        An ``Idempotency-Key`` is always sent (a fresh one unless given), so a retried
        request never queues the job twice.
        """
        body = {"model_id": _model_id(model), "layer": layer, **params}
        if channels is not None:
            body["channels"] = channels if isinstance(channels, str) else list(channels)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return Job(self, self._json("POST", "/v1/jobs", json=body, headers=headers))

    def job(self, id: str) -> Job:
        """A job by id, with its current record."""
        return Job(self, self._json("GET", f"/v1/jobs/{id}"))

    def jobs(self, limit: int = 100) -> list[Job]:
        """The caller's jobs, newest first."""
        records = self._json("GET", "/v1/jobs", params={"limit": limit})["jobs"]
        return [Job(self, r) for r in records]

    # -- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``/healthz``: the API process answers."""
        return self._json("GET", "/healthz")


def _open_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


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
        out: dict[str, Any] = _npz(self._get("result.npz"))
        if "manifest" in out:
            out["manifest"] = json.loads(str(out["manifest"]))
        return out

    def result_images(self) -> np.ndarray:
        """The final images, (channels, H, W, 3) float32 in [0, 1]."""
        return _npz(self._get("result.npz"))["images"]


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
