"""Synchronous views of a model: activation tensors, feature-map PNGs, kernel PNGs.

The work runs in the API process (threadpool) on a cached loaded model and a cached compiled
activation function; tensors leave as bytes built by ``featureviz.encodings``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from featureviz import encodings, render
from featureviz.activations import check_channels, parse_channels, select_channels
from featureviz.errors import ImageRejected, InvalidRequest, TooLarge
from featureviz.images import decode_image, to_batch
from featureviz.models import find_layer, input_spec, resolve_layers, spatial_layers
from service.api.deps import OwnerDep, RuntimeDep
from service.api.routes.models import get_record
from service.responses import ChunksResponse
from service.runtime import Runtime
from service.schemas import PROBLEM_RESPONSES, answers
from service.timing import Phases

router = APIRouter(prefix="/v1/models/{model_id}", tags=["views"])

NPZ = "application/x-npz"
OIP_BINARY = "application/octet-stream"
Format = Literal["npz", "json", "binary", "stats"]
_MEDIA = {"npz": NPZ, "json": "application/json", "binary": OIP_BINARY, "stats": "stats"}
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A PNG image"}
}


def read_images(runtime: Runtime, uploads: list[UploadFile]) -> list[np.ndarray]:
    s = runtime.settings
    if len(uploads) > s.max_images:
        raise TooLarge(f"{len(uploads)} images in one request, over the limit of {s.max_images}")
    images = []
    for upload in uploads:
        data = upload.file.read(s.max_image_bytes + 1)
        if len(data) > s.max_image_bytes:
            raise TooLarge(
                f"image {upload.filename!r} is over the limit of {s.max_image_bytes} bytes"
            )
        try:
            images.append(decode_image(data, max_pixels=s.max_image_pixels))
        except (ImageRejected, TooLarge) as exc:
            raise type(exc)(f"image {upload.filename!r}: {exc.detail}") from None
    return images


def compute(
    runtime: Runtime,
    record: dict[str, Any],
    images: list[np.ndarray],
    paths: list[str],
    phase: Phases | None = None,
) -> dict[str, np.ndarray]:
    """Activations of ``paths`` for a batch of decoded images (cached model and function)."""
    phase = phase or Phases()
    with phase("load"):
        model = runtime.keras_model(record)
        function = runtime.activation_function(record, paths)
    height, width, channels = input_spec(model)
    with phase("resize"):
        batch = to_batch(images, height=height, width=width, channels=channels)
    with phase("compute"):
        return function(batch)


def choose_format(request: Request, fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    accept = request.headers.get("accept", "")
    for kind, media in _MEDIA.items():
        if media in accept:
            return kind  # type: ignore[return-value]
    return "npz"


@router.post(
    "/activations",
    operation_id="views-activations",
    responses=answers(
        {
            200: {
                "description": "Activations by layer path, float32 NHWC",
                "content": {NPZ: {}, "application/json": {}, OIP_BINARY: {}},
            }
        }
    ),
)
def activations(
    request: Request,
    runtime: RuntimeDep,
    owner: OwnerDep,
    model_id: str,
    image: Annotated[list[UploadFile], File(description="One or more images")],
    layers: Annotated[str | None, Form(description="Comma list of names, paths or indices")] = None,
    channels: Annotated[str | None, Form(description="e.g. '0-7,12'")] = None,
    format: Annotated[Format | None, Query(description="Overrides Accept")] = None,
) -> Response:
    """Intermediate activations of a batch of images.

    ``npz`` (default) loads with ``np.load(..., allow_pickle=False)``; ``json`` and ``binary``
    follow the Open Inference Protocol (binary: ``Inference-Header-Content-Length``);
    ``stats`` is per-channel mean, max, std and fraction > 0.
    """
    phase = Phases()
    with phase("lookup"):
        record = get_record(runtime, owner, model_id)
    table = record["layers"]
    paths = resolve_layers(table, layers.split(",")) if layers else spatial_layers(table)
    if not paths:
        raise InvalidRequest("this model has no layer with a 4-D output; name layers explicitly")
    chosen = parse_channels(channels)
    fmt = choose_format(request, format)
    with phase("decode"):
        images = read_images(runtime, image)
    arrays = select_channels(compute(runtime, record, images, paths, phase), chosen)
    with phase("encode"):
        if fmt == "npz":
            chunks = encodings.npz_chunks(arrays)
        elif fmt == "binary":
            chunks, header_length = encodings.oip_binary_chunks(arrays, model_name=record["id"])
        elif fmt == "json":
            encodings.check_json_size(arrays, runtime.settings.max_json_bytes)
            body = encodings.to_oip_json(arrays, model_name=record["id"])
        else:
            body = json.dumps(encodings.channel_stats(arrays)).encode()
    headers = {"Server-Timing": phase.header()}
    if fmt == "npz":
        return ChunksResponse(chunks, media_type=NPZ, headers=headers)
    if fmt == "binary":
        headers["Inference-Header-Content-Length"] = str(header_length)
        return ChunksResponse(chunks, media_type=OIP_BINARY, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def check_pixels(runtime: Runtime, tiles: int, height: int, width: int, scale: int) -> None:
    pixels = tiles * height * width * scale * scale
    if pixels > runtime.settings.max_image_pixels:
        raise TooLarge(
            f"the picture would have {pixels} pixels, over the limit of "
            f"{runtime.settings.max_image_pixels}; ask for fewer channels or a smaller scale"
        )


@router.post(
    "/feature-maps",
    operation_id="views-feature-maps",
    response_class=Response,
    responses=PNG_RESPONSE | PROBLEM_RESPONSES,
)
def feature_maps(
    runtime: RuntimeDep,
    owner: OwnerDep,
    model_id: str,
    image: Annotated[UploadFile, File(description="One image")],
    layer: Annotated[str, Form(description="Name, path or index; '*' with 'channel' for all")],
    channels: Annotated[str | None, Form(description="e.g. '0-31'; default all")] = None,
    channel: Annotated[int | None, Form(ge=0, description="One channel (across layers)")] = None,
    cmap: Annotated[str, Form()] = "viridis",
    normalize: Annotated[Literal["channel", "layer", "fixed"], Form()] = "channel",
    vmin: Annotated[float | None, Form()] = None,
    vmax: Annotated[float | None, Form()] = None,
    cols: Annotated[int | None, Form(ge=1, le=64)] = None,
    scale: Annotated[int, Form(ge=1, le=16)] = 1,
    labels: Annotated[bool, Form()] = False,
    with_input: Annotated[bool, Form()] = False,
) -> Response:
    """Feature maps of one image as a PNG grid: channels of a layer, or one channel across
    every layer (``layer=*`` with ``channel``)."""
    record = get_record(runtime, owner, model_id)
    render.check_cmap(cmap)
    table = record["layers"]
    if channels is not None and channel is not None:
        raise InvalidRequest("give either 'channels' or 'channel', not both")
    across = layer.strip() == "*"
    if across and channel is None:
        raise InvalidRequest("layer='*' draws one channel across every layer: give 'channel'")
    paths = spatial_layers(table) if across else resolve_layers(table, [layer])
    rows = {row["path"]: row for row in table}
    for path in paths:
        if rows[path]["channels"] is None:
            raise InvalidRequest(
                f"layer {path!r} has no channel axis (output {rows[path]['output_shape']})"
            )
    chosen = [channel] if channel is not None else parse_channels(channels)
    style: dict[str, Any] = dict(
        cmap=cmap, normalize_mode=normalize, vmin=vmin, vmax=vmax, scale=scale, labels=labels
    )
    if not across:
        check_channels(chosen or [], rows[paths[0]]["channels"], layer=paths[0])
    images = read_images(runtime, [image])
    acts = compute(runtime, record, images, paths)
    first = {p: a[0] for p, a in acts.items()}
    shown = images[0] if with_input else None
    if across:
        height = max(a.shape[0] for a in first.values())
        width = max(a.shape[1] for a in first.values())
        check_pixels(runtime, len(first) + 1, height, width, scale)
        assert channel is not None
        rgb = render.channel_across_layers(first, channel, cols=cols, input_image=shown, **style)
    else:
        maps = first[paths[0]]
        height, width = maps.shape[:2]
        check_pixels(runtime, len(chosen or range(maps.shape[-1])) + 1, height, width, scale)
        rgb = render.channel_grid(maps, chosen, cols=cols or 8, input_image=shown, **style)
    return Response(render.to_png(rgb), media_type="image/png")


@router.get(
    "/filters.png",
    operation_id="views-filters",
    response_class=Response,
    responses=PNG_RESPONSE | PROBLEM_RESPONSES,
)
def filters(
    runtime: RuntimeDep,
    owner: OwnerDep,
    model_id: str,
    layer: Annotated[str, Query(description="A Conv2D layer: name, path or index")],
    cols: Annotated[int, Query(ge=1, le=64)] = 8,
    cmap: Annotated[str, Query()] = "viridis",
    scale: Annotated[int, Query(ge=1, le=32)] = 8,
) -> Response:
    """The layer's kernels as tiles: colour for a first layer on RGB, else one map per input
    channel and filter."""
    record = get_record(runtime, owner, model_id)
    (path,) = resolve_layers(record["layers"], [layer])
    found = find_layer(runtime.keras_model(record), path)
    kernel = getattr(found, "kernel", None)
    if kernel is None or len(kernel.shape) != 4:
        raise InvalidRequest(
            f"layer {path!r} ({type(found).__name__}) has no 2-D convolution kernel"
        )
    rgb = render.kernel_tiles(np.asarray(kernel), cols=cols, cmap=cmap, scale=scale)
    return Response(render.to_png(rgb), media_type="image/png")
