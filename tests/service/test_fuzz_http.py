"""A hostile-file corpus over real HTTP: every file gets a 4xx problem+json or a correct 200.

The corpus is built here, seeded, from files the tests make themselves (nothing downloaded):

- models: random byte flips of a valid ``.keras`` and a valid legacy ``.h5``; truncations at
  several points; HDF5 bytes named ``.keras`` and the reverse (the service sniffs content, so
  those load); many-member archives, path traversal, deep configs, lying zip sizes, soft links,
  external and virtual datasets, links inside ``model.weights.h5``;
- images (a real photo, scikit-image's ``chelsea``): byte flips and truncations of PNG, JPEG,
  WebP and GIF; odd-but-valid files (48-bit PNG, 16-bit and CMYK TIFF, APNG, multi-page TIFF,
  GIF frames of other sizes); formats outside the allowlist; headers declaring huge pixel
  counts in PNG, GIF, BMP and TIFF.

Never a 5xx; a refused model leaves the store and ``GET /v1/models`` as they were; and after the
corpus the API process is alive and still answers a valid request. ``tests/service/
test_api_errors.py`` holds the first, hand-picked set of bad inputs; this module goes wide.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests import builders
from tests.conftest import Service, stored_files
from tests.featureviz import hostile

PROBLEM = "application/problem+json"

# Counts chosen to keep the module near a minute: a flipped .h5 often passes the static checks
# and costs a sandboxed load (a spawned child importing TensorFlow, ~3-5 s on 2 cores).
KERAS_FLIPS = 12
H5_FLIPS = 8
IMAGE_FLIPS = 10


def assert_problem_or_ok(answer: httpx.Response) -> dict[str, Any] | None:
    """A 4xx must be problem+json with type/title/status/detail; anything 5xx fails."""
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    if answer.status_code >= 400:
        assert answer.headers["content-type"] == PROBLEM, answer.headers
        body = answer.json()
        assert {"type", "title", "status", "detail"} <= set(body), body
        assert body["status"] == answer.status_code
        assert isinstance(body["detail"], str) and body["detail"]
        return body
    return None


# ------------------------------------------------------------------------------------ models
def _truncate(src: str, tmp: Path, at: int, tag: str) -> str:
    data = Path(src).read_bytes()
    out = tmp / f"trunc_{tag}{Path(src).suffix}"
    out.write_bytes(data[:at])
    return str(out)


def _truncations(kind: str) -> dict[str, Callable[[Path, dict[str, str]], str]]:
    def make(fraction: float | None, cut: int | None) -> Callable[[Path, dict[str, str]], str]:
        def build(tmp: Path, valid: dict[str, str]) -> str:
            size = Path(valid[kind]).stat().st_size
            at = int(size * fraction) if fraction is not None else cut
            assert at is not None
            return _truncate(valid[kind], tmp, at, f"{kind}_{fraction}_{cut}")

        return build

    points: dict[str, tuple[float | None, int | None]] = {
        "8b": (None, 8),
        "100b": (None, 100),
        "quarter": (0.25, None),
        "three-quarters": (0.75, None),
        "minus-22b": (None, -22),  # a zip without its end-of-central-directory record
        "minus-1b": (None, -1),
    }
    return {f"trunc-{kind}-{name}": make(*point) for name, point in points.items()}


def _flips(kind: str, count: int) -> dict[str, Callable[[Path, dict[str, str]], str]]:
    def make(seed: int) -> Callable[[Path, dict[str, str]], str]:
        return lambda tmp, valid: hostile.byte_flips(valid[kind], tmp, n=1 + seed % 8, seed=seed)

    return {f"flip-{kind}-{seed}": make(seed) for seed in range(count)}


def _many_small_members(tmp: Path, valid: dict[str, str]) -> str:
    """A real model with 900 empty assets: under the member limit, so it loads."""
    out = tmp / "many_assets.keras"
    with zipfile.ZipFile(valid["keras"]) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
        for i in range(900):
            zout.writestr(f"assets/{i}", b"")
    return str(out)


REFUSED = {
    "many-members": lambda tmp, valid: hostile.many_members(tmp),
    "many-members-50k": lambda tmp, valid: hostile.many_members(tmp, count=50_000),
    "path-traversal": lambda tmp, valid: hostile.path_traversal(tmp),
    "deep-config": lambda tmp, valid: hostile.deep_config_keras(tmp),
    "deep-config-200k": lambda tmp, valid: hostile.deep_config_keras(tmp, depth=200_000),
    "zip-lying-size": lambda tmp, valid: hostile.zip_lying_size(tmp),
    "h5-soft-link": lambda tmp, valid: hostile.h5_soft_link(tmp),
    "h5-external-dataset": lambda tmp, valid: hostile.h5_external_dataset(tmp),
    "h5-virtual-dataset": lambda tmp, valid: hostile.h5_virtual_dataset(tmp),
    "keras-weights-external-link": lambda tmp, valid: hostile.keras_weights_external_link(tmp),
    "tfsm-layer": lambda tmp, valid: hostile.tfsm_layer_keras(tmp),
    "disguised-registered-name": lambda tmp, valid: hostile.disguised_registered_keras(tmp),
    "lambda-keras": lambda tmp, valid: hostile.lambda_keras(tmp),
    "unloadable": lambda tmp, valid: hostile.unloadable_keras(tmp),
}
"""Files that must be refused (4xx)."""

ACCEPTED = {
    "h5-named-keras": lambda tmp, valid: hostile.copy_as(valid["h5"], tmp, "h5_bytes.keras"),
    "keras-named-h5": lambda tmp, valid: hostile.copy_as(valid["keras"], tmp, "keras_bytes.h5"),
    "keras-named-exe": lambda tmp, valid: hostile.copy_as(valid["keras"], tmp, "model.exe"),
    "h5-no-suffix": lambda tmp, valid: hostile.copy_as(valid["h5"], tmp, "model"),
    "many-assets-under-limit": _many_small_members,
}
"""Files the service should take (content is sniffed; limits are not hit)."""

EITHER = {**_flips("keras", KERAS_FLIPS), **_flips("h5", H5_FLIPS)}
EITHER |= _truncations("keras") | _truncations("h5")
"""Damaged files: refused cleanly, or (a flip that hit weight bytes) loaded correctly."""


def _upload(http: httpx.Client, path: Path) -> httpx.Response:
    with path.open("rb") as fh:
        return http.post("/v1/models", files={"file": (path.name, fh)})


def _check_model_upload(
    api: Service, http: httpx.Client, path: Path, expect: str
) -> httpx.Response:
    before_files = stored_files(api)
    before_models = http.get("/v1/models").json()["models"]
    answer = _upload(http, path)
    problem = assert_problem_or_ok(answer)
    if problem is not None:
        assert expect in ("refused", "either"), (path.name, answer.text)
        assert answer.status_code in (413, 422), answer.text
        assert stored_files(api) == before_files
        assert http.get("/v1/models").json()["models"] == before_models
        return answer
    assert expect in ("accepted", "either"), (path.name, answer.text)
    assert answer.status_code in (200, 201), answer.text
    record = answer.json()
    assert record["input_shape"] == [None, 16, 16, 3], record
    assert record["layers"] and all("path" in row for row in record["layers"])
    assert record["format"] == ("h5" if Path(path).read_bytes()[:4] != b"PK\x03\x04" else "keras")
    assert http.get(f"/v1/models/{record['id']}").json()["sha256"] == record["sha256"]
    if answer.status_code == 201:  # leave the store as it was for the next case
        assert http.delete(f"/v1/models/{record['id']}").status_code == 204
        assert stored_files(api) == before_files
    return answer


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_model_refused(
    api: Service, http: httpx.Client, tmp_path: Path, valid: dict[str, str], case: str
):
    _check_model_upload(api, http, Path(REFUSED[case](tmp_path, valid)), "refused")


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_misnamed_model_accepted(
    api: Service, http: httpx.Client, tmp_path: Path, valid: dict[str, str], case: str
):
    answer = _check_model_upload(api, http, Path(ACCEPTED[case](tmp_path, valid)), "accepted")
    assert answer.status_code in (200, 201)


@pytest.mark.parametrize("case", sorted(EITHER))
def test_damaged_model_refused_or_loaded(
    api: Service, http: httpx.Client, tmp_path: Path, valid: dict[str, str], case: str
):
    _check_model_upload(api, http, Path(EITHER[case](tmp_path, valid)), "either")


def test_no_partial_uploads_left(api: Service):
    assert not list((api.data_dir / "models" / "incoming").iterdir())


# ------------------------------------------------------------------------------------ images
def _encode(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


PHOTO = Image.fromarray(builders.photo((96, 64)))
VALID_IMAGES = {
    "png": _encode(PHOTO, "PNG"),
    "jpeg": _encode(PHOTO, "JPEG", quality=90),
    "webp": _encode(PHOTO, "WEBP", quality=80),
    "gif": _encode(PHOTO.convert("P"), "GIF"),
}


def _flip(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(1 + seed % 6):
        at = rng.randrange(len(out))
        out[at] ^= rng.randrange(1, 256)
    return bytes(out)


def huge_png(width: int, height: int, *, idat: bool = False) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = builders.png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) if idat else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + builders.png_chunk(b"IHDR", header)
        + body
        + builders.png_chunk(b"IEND", b"")
    )


def huge_gif(width: int, height: int) -> bytes:
    """A GIF89a whose screen and only frame declare width x height (2-colour table)."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    data = b"\x02\x02\x44\x01\x00"  # LZW min code size 2, one tiny sub-block, terminator
    return b"GIF89a" + screen + frame + data + b"\x3b"


def huge_gif_frame(width: int, height: int) -> bytes:
    """A 1x1 logical screen whose frame declares a huge size (the frame is what is decoded)."""
    screen = struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + frame + b"\x02\x02\x44\x01\x00\x3b"


def huge_bmp(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring width x height, with 16 bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\x00" * 16
    size = 14 + len(info) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(info)) + info + pixels


def huge_tiff(width: int, height: int) -> bytes:
    """A little-endian TIFF, 8-bit grayscale, one strip of 16 bytes, declaring width x height."""
    entries = [
        (256, 4, 1, width),  # ImageWidth (LONG)
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: BlackIsZero
        (273, 4, 1, 0),  # StripOffsets (patched below)
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    strip_at = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        value = strip_at if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def _odd_valid_images() -> dict[str, bytes]:
    rgb = np.asarray(PHOTO)
    out: dict[str, bytes] = {}
    rgb16 = rgb.astype(">u2") * 257  # 48-bit PNG written by hand: Pillow cannot save it
    raw = b"".join(b"\x00" + row.tobytes() for row in rgb16)
    header = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 16, 2, 0, 0, 0)
    out["png-48bit"] = (
        b"\x89PNG\r\n\x1a\n"
        + builders.png_chunk(b"IHDR", header)
        + builders.png_chunk(b"IDAT", zlib.compress(raw))
        + builders.png_chunk(b"IEND", b"")
    )
    out["tiff-16bit-gray"] = _encode(Image.fromarray(rgb[..., 1].astype(np.uint16) * 257), "TIFF")
    out["tiff-cmyk"] = _encode(PHOTO.convert("CMYK"), "TIFF")
    out["jpeg-cmyk"] = _encode(PHOTO.convert("CMYK"), "JPEG")
    out["jpeg-gray-progressive"] = _encode(PHOTO.convert("L"), "JPEG", progressive=True)
    frames = [PHOTO, PHOTO.transpose(Image.Transpose.FLIP_LEFT_RIGHT), PHOTO.convert("L")]
    out["apng"] = _encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    out["tiff-multipage"] = _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    out["webp-animated"] = _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    small = PHOTO.resize((8, 8)).convert("P")
    out["gif-frames-of-other-sizes"] = _encode(
        PHOTO.convert("P"), "GIF", save_all=True, append_images=[small], disposal=2
    )
    out["png-1x1"] = _encode(PHOTO.resize((1, 1)), "PNG")
    out["png-4000x1"] = _encode(PHOTO.resize((4000, 1)), "PNG")
    out["bmp-rle8"] = _encode(PHOTO.convert("P"), "BMP")
    out["png-la"] = _encode(PHOTO.convert("LA"), "PNG")
    out["tiff-float"] = _encode(Image.fromarray(rgb[..., 0].astype(np.float32) / 255), "TIFF")
    out["tiff-float-constant"] = _encode(Image.fromarray(np.ones((8, 8), np.float32)), "TIFF")
    return out


def _bad_images() -> dict[str, tuple[bytes, tuple[int, ...]]]:
    """Images that must be refused, with the statuses allowed."""
    too_big = (413,)
    bad: dict[str, tuple[bytes, tuple[int, ...]]] = {
        "png-header-1e6x1e6": (huge_png(1_000_000, 1_000_000), too_big),
        "png-header-2^31-1": (huge_png(2**31 - 1, 2**31 - 1), (413, 422)),
        "png-header-65535x65535-idat": (huge_png(65535, 65535, idat=True), too_big),
        "png-header-zero-size": (huge_png(0, 0), (422,)),
        "gif-screen-65535x65535": (huge_gif(65535, 65535), too_big),
        "gif-frame-65535x65535": (huge_gif_frame(65535, 65535), (413, 422)),
        "bmp-header-100000x100000": (huge_bmp(100_000, 100_000), too_big),
        "bmp-header-negative-height": (huge_bmp(100_000, -100_000), too_big),
        "tiff-header-100000x100000": (huge_tiff(100_000, 100_000), too_big),
        "tiff-header-1x2^31": (huge_tiff(1, 2**31), (413, 422)),
        "png-6500x6000-no-pixels": (huge_png(6500, 6000, idat=True), (422,)),
        "ico": (_encode(PHOTO.resize((32, 32)), "ICO"), (422,)),
        "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", (422,)),
        "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>', (422,)),
        "ppm": (_encode(PHOTO, "PPM"), (422,)),
        "zeros-4k": (bytes(4096), (422,)),
        "png-signature-only": (b"\x89PNG\r\n\x1a\n", (422,)),
        "jpeg-soi-only": (b"\xff\xd8\xff", (422,)),
    }
    return bad


ODD_VALID = _odd_valid_images()
BAD_IMAGES = _bad_images()


def _image_either() -> dict[str, bytes]:
    cases: dict[str, bytes] = {}
    for fmt, data in VALID_IMAGES.items():
        for seed in range(IMAGE_FLIPS):
            cases[f"flip-{fmt}-{seed}"] = _flip(data, seed)
        for name, at in (("16b", 16), ("third", len(data) // 3), ("minus-1b", len(data) - 1)):
            cases[f"trunc-{fmt}-{name}"] = data[:at]
    for name in ("png-48bit", "tiff-cmyk", "apng", "gif-frames-of-other-sizes"):
        for seed in range(3):
            cases[f"flip-{name}-{seed}"] = _flip(ODD_VALID[name], 100 + seed)
    return cases


IMAGE_EITHER = _image_either()


def _activations(http: httpx.Client, model: dict[str, Any], name: str, data: bytes):
    return http.post(
        f"/v1/models/{model['id']}/activations",
        files={"image": (name, data)},
        data={"layers": "conv1"},
    )


def _assert_activations(answer: httpx.Response) -> None:
    assert answer.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(answer.content), allow_pickle=False) as arrays:
        conv1 = arrays["conv1"]
    assert conv1.shape == (1, 32, 32, 8) and conv1.dtype == np.float32
    assert np.isfinite(conv1).all()


@pytest.mark.parametrize("case", sorted(IMAGE_EITHER))
def test_damaged_image_refused_or_answered(http: httpx.Client, uploaded: Any, case: str):
    answer = _activations(http, uploaded["tiny"], f"{case}.img", IMAGE_EITHER[case])
    if assert_problem_or_ok(answer) is None:
        _assert_activations(answer)
    else:
        assert answer.status_code in (413, 422), answer.text


@pytest.mark.parametrize("case", sorted(ODD_VALID))
def test_odd_valid_image_answered(http: httpx.Client, uploaded: Any, case: str):
    model = uploaded["tiny"]
    answer = _activations(http, model, case, ODD_VALID[case])
    assert answer.status_code == 200, answer.text
    _assert_activations(answer)
    picture = http.post(
        f"/v1/models/{model['id']}/feature-maps",
        files={"image": (case, ODD_VALID[case])},
        data={"layer": "conv1", "channels": "0-3", "with_input": "true"},
    )
    assert picture.status_code == 200, picture.text
    assert picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).format == "PNG"


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
@pytest.mark.parametrize("route", ["activations", "feature-maps"])
def test_bad_image_refused(http: httpx.Client, uploaded: Any, case: str, route: str):
    data, statuses = BAD_IMAGES[case]
    model = uploaded["tiny"]
    if route == "activations":
        answer = _activations(http, model, case, data)
    else:
        answer = http.post(
            f"/v1/models/{model['id']}/feature-maps",
            files={"image": (case, data)},
            data={"layer": "conv1"},
        )
    assert assert_problem_or_ok(answer) is not None, (case, answer.status_code)
    assert answer.status_code in statuses, (case, answer.status_code, answer.text)


def test_empty_image_on_feature_maps(http: httpx.Client, uploaded: Any):
    answer = http.post(
        f"/v1/models/{uploaded['tiny']['id']}/feature-maps",
        files={"image": ("empty.png", b"")},
        data={"layer": "conv1"},
    )
    body = assert_problem_or_ok(answer)
    assert answer.status_code == 422 and body is not None and "empty" in body["detail"]


def test_one_bad_image_in_a_batch_refuses_the_batch(http: httpx.Client, uploaded: Any):
    good = VALID_IMAGES["jpeg"]
    files = [("image", ("a.jpg", good)), ("image", ("b.png", huge_png(100_000, 100_000)))]
    answer = http.post(f"/v1/models/{uploaded['tiny']['id']}/activations", files=files)
    body = assert_problem_or_ok(answer)
    assert answer.status_code == 413 and body is not None and "pixels" in body["detail"]


# --------------------------------------------------------------------------------- the end
def test_api_alive_after_the_corpus(api: Service, http: httpx.Client, uploaded: Any):
    """Runs last in this module (pytest keeps file order): the process survived everything."""
    assert api.proc is not None and api.proc.poll() is None
    assert http.get("/healthz").status_code == 200
    answer = _activations(http, uploaded["tiny"], "cat.jpg", VALID_IMAGES["jpeg"])
    assert answer.status_code == 200, answer.text
    _assert_activations(answer)
    assert not list((api.data_dir / "models" / "incoming").iterdir())
