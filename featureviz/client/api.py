"""``Client``: the featureviz v1 API over a synchronous ``httpx.Client``, with retries."""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import httpx
import numpy as np
from PIL import Image

from featureviz.client.errors import problem, retry_after
from featureviz.client.job import Job
from featureviz.client.parts import (
    Channels,
    ImageLike,
    ModelRef,
    channel_spec,
    image_list,
    image_part,
    model_id,
    open_png,
    read_npz,
)

log = logging.getLogger("featureviz.client")

__all__ = ["DEFAULT_URL", "Client"]

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_BACKOFF = 30.0


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
                        raise problem(response)
                    return response
                delay = retry_after(response)
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
        return self._json("GET", f"/v1/models/{model_id(id)}")

    def delete_model(self, id: ModelRef) -> None:
        """Delete a model (its jobs' results stay until they expire)."""
        self.request("DELETE", f"/v1/models/{model_id(id)}")

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
        parts = [image_part(im, i) for i, im in enumerate(image_list(images))]
        if not parts:
            raise ValueError("give at least one image")
        form: dict[str, str] = {}
        if layers is not None:
            form["layers"] = layers if isinstance(layers, str) else ",".join(layers)
        if (spec := channel_spec(channels)) is not None:
            form["channels"] = spec
        response = self.request(
            "POST",
            f"/v1/models/{model_id(model)}/activations",
            files=lambda: [("image", part) for part in parts],
            data=form,
            headers={"Accept": "application/x-npz"},
        )
        return read_npz(response.content)

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
            "channels": channel_spec(channels),
            "channel": channel,
            "vmin": vmin,
            "vmax": vmax,
            "cols": cols,
        }
        form |= {k: str(v) for k, v in optional.items() if v is not None}
        part = image_part(image, 0)
        response = self.request(
            "POST",
            f"/v1/models/{model_id(model)}/feature-maps",
            files=lambda: {"image": part},
            data=form,
        )
        return open_png(response.content)

    def filters(self, model: ModelRef, layer: str, **opts: Any) -> Image.Image:
        """The layer's kernels as tiles (``cols``, ``cmap``, ``scale`` as query options)."""
        params = {"layer": layer, **{k: v for k, v in opts.items() if v is not None}}
        response = self.request("GET", f"/v1/models/{model_id(model)}/filters.png", params=params)
        return open_png(response.content)

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
        body = {"model_id": model_id(model), "layer": layer, **params}
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
