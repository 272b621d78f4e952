"""Static checks on an uploaded model file, before Keras reads a byte of it.

Core signature::

    check_model_file(path, *, limits=FileLimits()) -> "keras" | "h5"

A model file is a code carrier: a ``.keras`` archive or an HDF5 file holds a JSON config that
Keras turns into Python objects, and ``safe_mode=True`` only stops the known-dangerous
deserializers (lambdas). So the config is read here with plain ``zipfile``/``h5py``/``json`` and
must pass ``featureviz.allowlist.check_config``: built-in Keras objects only. Archives are
checked for member count, declared size and compression ratio (decompression bombs), HDF5 files
for external links and external or virtual datasets (they make the HDF5 library open other
files). Every refusal is ``ModelRejected``
(or ``TooLarge`` for the byte size); no other exception leaves :func:`check_model_file`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any, Literal

import h5py

from featureviz.allowlist import (
    ALLOWED_ACTIVATIONS,
    ALLOWED_LAYER_CLASSES,
    ALLOWED_OBJECT_CLASSES,
    MAX_LAYERS,
    check_config,
)
from featureviz.errors import ModelRejected, TooLarge

__all__ = [
    "ALLOWED_ACTIVATIONS",
    "ALLOWED_LAYER_CLASSES",
    "ALLOWED_OBJECT_CLASSES",
    "FileLimits",
    "check_config",
    "check_model_file",
    "config_from_file",
    "sniff_format",
]

MiB = 1 << 20
GiB = 1 << 30
Format = Literal["keras", "h5"]

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_HDF5_OFFSETS = (0, 512, 1024, 2048)  # the superblock follows a user block of 2**n >= 512 bytes
_HEAD_BYTES = _HDF5_OFFSETS[-1] + len(_HDF5_MAGIC)
_MAX_RATIO = 100  # Keras stores members uncompressed; deflate of real weights is ~1:1
_RATIO_FLOOR = MiB  # small members may compress well (JSON), never refuse those on ratio
_KERAS_MEMBERS = {"config.json", "metadata.json", "model.weights.h5", "model.weights.npz"}


@dataclass(frozen=True)
class FileLimits:
    """Ceilings for an uploaded model file; the defaults fit VGG/ResNet-sized CNNs."""

    max_bytes: int = 512 * MiB
    max_members: int = 1000
    max_uncompressed_bytes: int = 2 * GiB
    max_config_bytes: int = 16 * MiB
    max_layers: int = MAX_LAYERS
    max_params: int = 500_000_000


def sniff_format(head: bytes) -> Format:
    """Tell a ``.keras`` zip from an HDF5 file by magic bytes; refuse everything else."""
    if not head:
        raise ModelRejected("empty upload")
    if head.startswith(_ZIP_MAGIC):
        return "keras"
    if any(head[at : at + len(_HDF5_MAGIC)] == _HDF5_MAGIC for at in _HDF5_OFFSETS):
        return "h5"
    raise ModelRejected("not a Keras model file: expected a .keras archive or an HDF5 .h5 file")


def check_model_file(path: str, *, limits: FileLimits = FileLimits()) -> Format:
    """Check ``path`` without Keras: size, format, archive or HDF5 structure, config allowlist.

    Returns the format, which the caller needs to name the stored file: Keras picks its loader
    by suffix, so a ``.keras`` name on HDF5 bytes (or the reverse) is refused here.
    """
    try:
        fmt = _sniff_path(path, limits)
        config = _check_keras(path, limits) if fmt == "keras" else _check_h5(path, limits)
        check_config(config, max_layers=limits.max_layers)
        return fmt
    except (ModelRejected, TooLarge):
        raise
    except RecursionError:
        raise ModelRejected("the model config is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means a file we will not load
        raise ModelRejected(f"the model file is corrupt or unreadable: {_short(exc)}") from None


def config_from_file(path: str, *, limits: FileLimits = FileLimits()) -> dict[str, Any]:
    """The model config as a dict, read with size limits and without Keras."""
    try:
        fmt = _sniff_path(path, limits)
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                return _read_json(zf, "config.json", limits.max_config_bytes)
        with h5py.File(path, "r") as h5:
            return _h5_config(h5, limits)
    except (ModelRejected, TooLarge):
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelRejected(f"the model file is corrupt or unreadable: {_short(exc)}") from None


def _sniff_path(path: str, limits: FileLimits) -> Format:
    st = os.stat(path)
    if not os.path.isfile(path):
        raise ModelRejected("not a Keras model file: not a regular file")
    if st.st_size > limits.max_bytes:
        raise TooLarge(
            f"the model file has {st.st_size} bytes, over the limit of {limits.max_bytes}"
        )
    with open(path, "rb") as f:
        fmt = sniff_format(f.read(_HEAD_BYTES))
    suffix = os.path.splitext(path)[1].lower()
    if (suffix == ".keras" and fmt != "keras") or (suffix in (".h5", ".hdf5") and fmt != "h5"):
        raise ModelRejected(f"the file is named {suffix} but holds a {fmt} file")
    return fmt


def _check_keras(path: str, limits: FileLimits) -> dict[str, Any]:
    """Check the archive's table of contents, then read its config and weights' links."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise ModelRejected(f"the archive has {len(infos)} members, over {limits.max_members}")
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise ModelRejected("the archive has duplicate member names")
        total = 0
        for info in infos:
            name = info.filename.replace("\\", "/")
            if name.startswith("/") or ".." in name.split("/") or ":" in name:
                raise ModelRejected(f"the archive member name {info.filename!r} is not allowed")
            if name not in _KERAS_MEMBERS and not name.startswith("assets/"):
                raise ModelRejected(f"unexpected archive member {info.filename!r}")
            total += info.file_size
            if info.file_size > _RATIO_FLOOR and info.file_size > _MAX_RATIO * max(
                info.compress_size, 1
            ):
                raise ModelRejected(f"the archive member {info.filename!r} is a decompression bomb")
        if total > limits.max_uncompressed_bytes:
            raise TooLarge(
                f"the archive expands to {total} bytes, over {limits.max_uncompressed_bytes}"
            )
        for required in ("config.json", "metadata.json"):
            if required not in names:
                raise ModelRejected(f"not a Keras model archive: {required} is missing")
        _read_json(zf, "metadata.json", MiB)
        config = _read_json(zf, "config.json", limits.max_config_bytes)
        if "model.weights.h5" in names:
            with tempfile.TemporaryDirectory(prefix="featureviz-") as tmp:
                weights = os.path.join(tmp, "model.weights.h5")
                with zf.open("model.weights.h5") as src, open(weights, "wb") as dst:
                    shutil.copyfileobj(src, dst, MiB)  # the CRC check at the end catches damage
                with h5py.File(weights, "r") as h5:
                    _check_h5_links(h5, limits)
    return config


def _read_json(zf: zipfile.ZipFile, name: str, max_bytes: int) -> dict[str, Any]:
    if zf.getinfo(name).file_size > max_bytes:
        raise TooLarge(f"{name} is over the limit of {max_bytes} bytes")
    with zf.open(name) as f:
        data = f.read(max_bytes + 1)  # never trust the declared size alone
    if len(data) > max_bytes:
        raise TooLarge(f"{name} is over the limit of {max_bytes} bytes")
    return _parse_json(data, name)


def _parse_json(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ModelRejected(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ModelRejected(f"{what} is not a JSON object")
    return value


def _check_h5(path: str, limits: FileLimits) -> dict[str, Any]:
    with h5py.File(path, "r") as h5:
        _check_h5_links(h5, limits)
        return _h5_config(h5, limits)


def _h5_config(h5: h5py.File, limits: FileLimits) -> dict[str, Any]:
    if "model_config" not in h5.attrs:
        raise ModelRejected(
            "an HDF5 file without a model_config: weights only? upload the whole model"
        )
    size = h5.attrs.get_id("model_config").get_storage_size()
    if size > limits.max_config_bytes:
        raise TooLarge(f"model_config is over the limit of {limits.max_config_bytes} bytes")
    raw = h5.attrs["model_config"]
    if hasattr(raw, "tolist"):  # a numpy scalar or 0-d array of bytes/str
        raw = raw.tolist()
    if not isinstance(raw, bytes | str):
        raise ModelRejected("the HDF5 model_config is not a JSON string")
    if len(raw) > limits.max_config_bytes:  # variable-length strings: storage size is a pointer
        raise TooLarge(f"model_config is over the limit of {limits.max_config_bytes} bytes")
    return _parse_json(raw, "model_config")


def _check_h5_links(h5: h5py.File, limits: FileLimits) -> None:
    """Walk every link without following any that leaves the file; refuse external data."""
    max_objects = 50 * limits.max_layers + 1000
    seen: set[Any] = {h5.id}
    stack: list[h5py.Group] = [h5]
    count = 0
    while stack:
        group = stack.pop()
        for name in group:
            count += 1
            if count > max_objects:
                raise ModelRejected(f"the HDF5 file has more than {max_objects} objects")
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise ModelRejected(f"HDF5 external link {name!r} is not allowed")
            if not isinstance(link, h5py.HardLink):
                raise ModelRejected(f"HDF5 soft link {name!r} is not allowed")
            obj = group[name]
            if isinstance(obj, h5py.Dataset):
                if obj.external or obj.is_virtual:
                    raise ModelRejected(f"HDF5 dataset {name!r} reads data from another file")
            elif isinstance(obj, h5py.Group) and obj.id not in seen:
                seen.add(obj.id)
                stack.append(obj)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:limit] if text else type(exc).__name__
