"""One self-contained HTML page about a model, built over HTTP with ``featureviz.client``.

``build_report(client, model, image, visualize=[...]) -> str``: the model's layer table, the
input image, the feature-map grid of every convolution layer for that image (the first
``max_channels`` channels), the first convolution layer's kernels, and for the chosen layers
the gradient-ascent grid of a job run on a worker. Images are inlined as base64 data URIs and
the CSS is inline: the page needs nothing but itself. Every string that comes from the model
(names, paths, types) is escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from featureviz.client import Client, FeatureVizHTTPError, ImageLike, Job, ModelRef
from featureviz.client.parts import png_bytes

log = logging.getLogger(__name__)

CONV_TYPES = frozenset(
    {"Conv2D", "Conv2DTranspose", "SeparableConv2D", "DepthwiseConv2D", "Convolution2D"}
)
MIN_TILE = 48  # feature maps smaller than this many pixels a side are drawn scaled up

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2433;
background:#f6f7fb}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #d8dce6;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px;font-family:ui-monospace,monospace}
.meta{color:#5a6478;margin:0 0 16px}.note{color:#5a6478;font-size:13px;margin:4px 0 10px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #e1e4ec;padding:4px 8px;text-align:left}
th{background:#eef0f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.mono{font-family:ui-monospace,monospace}tr.conv td{background:#f3f8ff}
figure{margin:8px 0 18px;background:#fff;border:1px solid #e1e4ec;padding:8px;display:inline-block;
max-width:100%;box-sizing:border-box}
figure img{max-width:100%;image-rendering:pixelated;display:block}
figcaption{color:#5a6478;font-size:12px;margin-top:4px}
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_of(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def is_conv(row: Mapping[str, Any]) -> bool:
    """A convolution layer with a channel axis."""
    return bool(row.get("channels")) and row.get("type") in CONV_TYPES


def conv_layers(layers: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Convolution layers with a channel axis, in model order."""
    return [r for r in layers if is_conv(r)]


def _figure(png: bytes, caption: str, alt: str) -> str:
    return (
        f'<figure><img src="{data_uri(png)}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _shape(shape: Any) -> str:
    if shape is None:
        return ""
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _layer_table(layers: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in layers:
        conv = ' class="conv"' if is_conv(r) else ""
        channels = "" if r.get("channels") is None else str(r["channels"])
        rows.append(
            f"<tr{conv}><td class=num>{int(r.get('index', 0))}</td>"
            f"<td class=mono>{html.escape(str(r.get('path', r.get('name', ''))))}</td>"
            f"<td>{html.escape(str(r.get('type', '')))}</td>"
            f"<td class=mono>{html.escape(_shape(r.get('output_shape')))}</td>"
            f"<td class=num>{int(r.get('params', 0)):,}</td>"
            f"<td class=num>{channels}</td></tr>"
        )
    return (
        "<table><thead><tr><th>#</th><th>layer (path)</th><th>type</th><th>output shape</th>"
        "<th>params</th><th>channels</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _tile_scale(row: Mapping[str, Any]) -> int:
    shape = row.get("output_shape") or []
    side = min((d for d in shape[1:3] if d), default=MIN_TILE)
    return max(1, min(8, math.ceil(MIN_TILE / side)))


def build_report(
    client: Client,
    model: ModelRef,
    image: ImageLike,
    *,
    visualize: Sequence[str] = (),
    max_channels: int = 32,
    visualize_channels: int = 16,
    steps: int = 128,
    size: int = 128,
    seed: int = 0,
    cmap: str = "viridis",
    progress: bool = False,
    timeout: float | None = None,
) -> str:
    """Build the page; ``visualize`` names layers whose gradient-ascent grid is included.

    The jobs are submitted first and waited on after the synchronous views are drawn, so
    the worker runs while the feature maps are rendered. A job that fails raises
    ``JobFailed``.
    """
    if max_channels < 1 or visualize_channels < 1:
        raise ValueError("max_channels and visualize_channels must be >= 1")
    record = client.model(model)
    layers = record["layers"]
    by_name = {r["path"]: r for r in layers} | {r["name"]: r for r in layers}
    jobs: list[tuple[Mapping[str, Any], Job]] = []
    for name in visualize:
        row = by_name.get(name)
        count = min(visualize_channels, int(row["channels"])) if row and row["channels"] else 1
        job = client.submit(
            record, name, f"0-{count - 1}", steps=steps, size=size, seed=seed
        )  # unknown layers and bad sizes come back as 422 here, before any work
        jobs.append((row or {"path": name, "channels": count}, job))

    name = str(record.get("name", record["id"]))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>featureviz: {html.escape(name)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>What <code>{html.escape(name)}</code> has learned</h1>",
        f"<p class=meta>model {html.escape(str(record['id']))} &middot; input "
        f"{html.escape(_shape(record.get('input_shape')))} &middot; "
        f"{int(record.get('params', 0)):,} parameters &middot; preprocess "
        f"{html.escape(str(record.get('preprocess', '')))} &middot; sha256 "
        f"{html.escape(str(record.get('sha256', ''))[:12])} &middot; generated "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        "<h2>Input image</h2>",
        _figure(_input_png(image), "the image as sent (resized server-side)", "input image"),
        "<h2>Layers</h2>",
        _layer_table(layers),
    ]

    convs = conv_layers(layers)
    parts.append("<h2>Feature maps</h2>")
    if not convs:
        parts.append("<p class=note>This model has no convolution layer.</p>")
    else:
        parts.append(
            f"<p class=note>Each grid shows one convolution layer's activation for the input "
            f"image, one tile per channel, normalized per channel ({html.escape(cmap)}). "
            f"At most the first {max_channels} channels of each layer are shown.</p>"
        )
    for row in convs:
        total = int(row["channels"])
        shown = min(total, max_channels)
        grid = client.feature_maps(
            record,
            image,
            row["path"],
            channels=f"0-{shown - 1}",
            cmap=cmap,
            cols=8,
            scale=_tile_scale(row),
        )
        note = f"channels 0-{shown - 1} of {total}"
        if shown < total:
            note += f" (first {shown} shown)"
        parts.append(f"<h3>{html.escape(row['path'])}</h3>")
        parts.append(_figure(_png_of(grid), f"{row['type']}, {note}", row["path"]))

    if convs:
        first = convs[0]
        try:
            kernels = client.filters(record, first["path"], cols=8, scale=8)
        except FeatureVizHTTPError as exc:  # e.g. a depthwise first layer has no 4-D kernel
            log.info("no kernels for %s: %s", first["path"], exc)
        else:
            parts.append("<h2>Kernels of the first convolution layer</h2>")
            parts.append(f"<h3>{html.escape(first['path'])}</h3>")
            parts.append(_figure(_png_of(kernels), "the learned weights as tiles", "kernels"))

    if jobs:
        parts.append("<h2>Gradient ascent: the input each filter likes best</h2>")
        parts.append(
            f"<p class=note>{steps} steps at {size}x{size}, seed {seed}; at most the first "
            f"{visualize_channels} channels of each layer.</p>"
        )
    for row, job in jobs:
        job.wait(timeout=timeout, progress=progress)
        channels = job.record.get("params", {}).get("channels") or []
        caption = f"job {job.id}, channels {_span(channels)}"
        parts.append(f"<h3>{html.escape(str(row['path']))}</h3>")
        parts.append(_figure(job.result_png(), caption, f"{row['path']} gradient ascent"))

    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _span(channels: Sequence[int]) -> str:
    if not channels:
        return "?"
    if list(channels) == list(range(channels[0], channels[0] + len(channels))):
        return f"{channels[0]}-{channels[-1]}" if len(channels) > 1 else str(channels[0])
    return ",".join(map(str, channels))


def _input_png(image: ImageLike) -> bytes:
    """The input as PNG for the page (any format Pillow opens, re-encoded)."""
    if isinstance(image, str | Path):
        image = Path(image).read_bytes()
    if isinstance(image, bytes):
        with Image.open(io.BytesIO(image)) as opened:
            opened.thumbnail((512, 512))
            return _png_of(opened.convert("RGB"))
    return png_bytes(image)
