"""Builders of hostile (and a few valid) model files, for safety, sandbox and API tests.

Each function takes a directory and returns the path of the file it wrote there. Keras and
tf_keras are imported inside the functions that need them, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tests.builders import png_chunk

PathLike = str | os.PathLike[str]

# A Keras 2 style config with one Dense layer: enough for the static checks to reach the part
# of the file under test, without importing TensorFlow.
TINY_H5_CONFIG: dict[str, Any] = {
    "class_name": "Sequential",
    "config": {
        "name": "sequential",
        "layers": [
            {
                "class_name": "InputLayer",
                "config": {"batch_input_shape": [None, 4], "dtype": "float32", "name": "input_1"},
            },
            {"class_name": "Dense", "config": {"name": "dense", "units": 2, "activation": "relu"}},
        ],
    },
}


def _out(tmp: PathLike, name: str) -> str:
    return os.fspath(Path(tmp) / name)


def valid_keras(tmp: PathLike, name: str = "valid.keras") -> str:
    """A tiny Keras 3 Sequential conv net (16x16x3 input, 3 filters)."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    path = _out(tmp, name)
    model.save(path)
    return path


def valid_h5(tmp: PathLike, name: str = "valid.h5") -> str:
    """A tiny Keras 2 model saved by tf_keras as legacy HDF5, compiled (a training_config too)."""
    import tf_keras

    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            tf_keras.Input((16, 16, 3)),
            layers.Conv2D(3, 3, activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    path = _out(tmp, name)
    model.save(path)
    return path


def lambda_keras(tmp: PathLike) -> str:
    """A real Keras 3 archive whose Lambda layer carries marshalled Python bytecode."""
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Lambda(lambda x: x + 1)])
    path = _out(tmp, "lambda.keras")
    model.save(path)
    return path


def lambda_h5(tmp: PathLike) -> str:
    """A Keras 2 HDF5 file with a Lambda layer, as tf_keras writes it (bytecode in the config)."""
    import tf_keras

    model = tf_keras.Sequential(
        [tf_keras.Input((8, 8, 1)), tf_keras.layers.Lambda(lambda x: x * 2)]
    )
    path = _out(tmp, "lambda.h5")
    model.save(path)
    return path


def edit_config(
    src: PathLike, tmp: PathLike, name: str, edit: Callable[[dict[str, Any]], None]
) -> str:
    """Copy the archive ``src`` with ``edit`` applied to its config.json in place."""
    path = _out(tmp, name)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(info.filename, data)
    return path


def _replace_layer(index: int, layer: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["config"]["layers"][index] = layer

    return edit


def builtins_eval_keras(tmp: PathLike) -> str:
    """A valid archive whose Dense activation was edited into ``builtins.eval``."""

    def edit(config: dict[str, Any]) -> None:
        config["config"]["layers"][-1]["config"]["activation"] = {
            "module": "builtins",
            "class_name": "function",
            "config": "eval",
            "registered_name": "function",
        }

    return edit_config(valid_keras(tmp, "base_eval.keras"), tmp, "builtins_eval.keras", edit)


def builtins_layer_keras(tmp: PathLike) -> str:
    """A valid archive with a layer object pointing at ``{"module": "builtins", ...}``."""
    layer = {"module": "builtins", "class_name": "eval", "config": {}, "registered_name": None}
    base = valid_keras(tmp, "base_builtins.keras")
    return edit_config(base, tmp, "builtins_layer.keras", _replace_layer(-2, layer))


def custom_registered_keras(tmp: PathLike) -> str:
    """A valid archive with a layer registered as the custom object ``evil>Thing``."""
    layer = {
        "module": "evil",
        "class_name": "Thing",
        "config": {"name": "thing"},
        "registered_name": "evil>Thing",
    }
    base = valid_keras(tmp, "base_custom.keras")
    return edit_config(base, tmp, "custom_registered.keras", _replace_layer(-2, layer))


def disguised_registered_keras(tmp: PathLike) -> str:
    """A built-in class name and module, but a custom ``registered_name``: Keras prefers it."""

    def edit(config: dict[str, Any]) -> None:
        config["config"]["layers"][-1]["registered_name"] = "evil>Dense"

    base = valid_keras(tmp, "base_disguised.keras")
    return edit_config(base, tmp, "disguised_registered.keras", edit)


def unloadable_keras(tmp: PathLike) -> str:
    """Statically clean, but Keras fails to build it: a Conv2D with a nonsense filter count."""

    def edit(config: dict[str, Any]) -> None:
        config["config"]["layers"][2]["config"]["filters"] = "many"

    return edit_config(valid_keras(tmp, "base_unloadable.keras"), tmp, "unloadable.keras", edit)


def memory_bomb_keras(tmp: PathLike) -> str:
    """Statically clean, but its Dense layer asks for ~1 TB of weights when built."""

    def edit(config: dict[str, Any]) -> None:
        config["config"]["layers"][-1]["config"]["units"] = 2_000_000_000

    return edit_config(valid_keras(tmp, "base_membomb.keras"), tmp, "memory_bomb.keras", edit)


def tfsm_layer_keras(tmp: PathLike) -> str:
    """A valid archive with a TFSMLayer (it would load a SavedModel from a path)."""
    layer = {
        "module": "keras.layers",
        "class_name": "TFSMLayer",
        "config": {"name": "tfsm", "filepath": "/tmp/saved_model", "call_endpoint": "serve"},
        "registered_name": None,
    }
    base = valid_keras(tmp, "base_tfsm.keras")
    return edit_config(base, tmp, "tfsm_layer.keras", _replace_layer(-2, layer))


def _zip_with_tiny_config(zf: zipfile.ZipFile) -> None:
    zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
    zf.writestr("config.json", json.dumps(TINY_H5_CONFIG))


def zip_bomb(tmp: PathLike, megabytes: int = 300) -> str:
    """A .keras archive whose weights member inflates 300 MB of zeros from ~300 KB."""
    path = _out(tmp, "zip_bomb.keras")
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        _zip_with_tiny_config(zf)
        with zf.open("model.weights.h5", "w", force_zip64=True) as member:
            for _ in range(megabytes):
                member.write(chunk)
    return path


def zip_lying_size(tmp: PathLike) -> str:
    """A stored member whose local and central headers declare 8 GiB for 1 KB of data."""
    path = _out(tmp, "zip_lying_size.keras")
    with zipfile.ZipFile(path, "w") as zf:
        _zip_with_tiny_config(zf)
        zf.writestr("assets/blob", bytes(1024))
    data = bytearray(Path(path).read_bytes())
    at = data.rfind(b"PK\x01\x02")  # the last central-directory entry is assets/blob
    struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)  # uncompressed size
    Path(path).write_bytes(bytes(data))
    return path


def many_members(tmp: PathLike, count: int = 1200) -> str:
    """A .keras archive with more members than the default limit of 1000."""
    path = _out(tmp, "many_members.keras")
    with zipfile.ZipFile(path, "w") as zf:
        _zip_with_tiny_config(zf)
        for i in range(count):
            zf.writestr(f"assets/{i}", b"")
    return path


def path_traversal(tmp: PathLike) -> str:
    """A .keras archive with a member named ``../../evil.py``."""
    path = _out(tmp, "path_traversal.keras")
    with zipfile.ZipFile(path, "w") as zf:
        _zip_with_tiny_config(zf)
        zf.writestr("../../evil.py", b"import os\n")
    return path


def _tiny_h5(path: str, *, config: bool = True) -> h5py.File:
    h5 = h5py.File(path, "w")
    if config:
        h5.attrs["model_config"] = json.dumps(TINY_H5_CONFIG)
        h5.attrs["keras_version"] = "2.21.0"
        h5.attrs["backend"] = "tensorflow"
    weights = h5.create_group("model_weights").create_group("dense").create_group("dense")
    weights["kernel:0"] = np.zeros((4, 2), "float32")
    weights["bias:0"] = np.zeros((2,), "float32")
    return h5


def h5_external_link(tmp: PathLike) -> str:
    """An HDF5 model with an external link into another file (here /etc/passwd)."""
    path = _out(tmp, "external_link.h5")
    with _tiny_h5(path) as h5:
        h5["model_weights"]["dense"]["evil"] = h5py.ExternalLink("/etc/passwd", "/")
    return path


def h5_external_dataset(tmp: PathLike) -> str:
    """An HDF5 model with a dataset whose bytes live in an external raw file."""
    path = _out(tmp, "external_dataset.h5")
    with _tiny_h5(path) as h5:
        h5["model_weights"].create_dataset(
            "leak", shape=(16,), dtype="uint8", external=[("/etc/hostname", 0, 16)]
        )
    return path


def h5_virtual_dataset(tmp: PathLike) -> str:
    """An HDF5 model with a virtual dataset mapping another file's data."""
    source = _out(tmp, "virtual_source.h5")
    with h5py.File(source, "w") as src:
        src["data"] = np.arange(8, dtype="float32")
    path = _out(tmp, "virtual_dataset.h5")
    layout = h5py.VirtualLayout(shape=(8,), dtype="float32")
    layout[:] = h5py.VirtualSource(source, "data", shape=(8,))
    with _tiny_h5(path) as h5:
        h5["model_weights"].create_virtual_dataset("mirror", layout)
    return path


def h5_soft_link(tmp: PathLike) -> str:
    """An HDF5 model with a soft link (Keras never writes one)."""
    path = _out(tmp, "soft_link.h5")
    with _tiny_h5(path) as h5:
        h5["model_weights"]["alias"] = h5py.SoftLink("/model_weights/dense")
    return path


def keras_weights_external_link(tmp: PathLike) -> str:
    """A .keras archive whose model.weights.h5 holds an external link."""
    weights = _out(tmp, "linked.weights.h5")
    with _tiny_h5(weights, config=False) as h5:
        h5["evil"] = h5py.ExternalLink("/etc/passwd", "/")
    path = _out(tmp, "weights_external_link.keras")
    with zipfile.ZipFile(path, "w") as zf:
        _zip_with_tiny_config(zf)
        zf.write(weights, "model.weights.h5")
    return path


def h5_weights_only(tmp: PathLike) -> str:
    """An HDF5 file with weights and no model_config, as ``save_weights`` writes."""
    path = _out(tmp, "weights_only.h5")
    _tiny_h5(path, config=False).close()
    return path


def deep_config_keras(tmp: PathLike, depth: int = 5000) -> str:
    """A .keras archive whose config nests lists thousands deep (recursion bomb)."""
    path = _out(tmp, "deep.keras")
    junk = "[" * depth + "]" * depth
    text = '{"class_name": "Sequential", "config": {"layers": [], "junk": ' + junk + "}}"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", text)
    return path


def truncated(path: PathLike, tmp: PathLike) -> str:
    """The first half of ``path``."""
    data = Path(path).read_bytes()
    out = _out(tmp, "truncated" + Path(path).suffix)
    Path(out).write_bytes(data[: len(data) // 2])
    return out


def not_a_model(tmp: PathLike) -> str:
    """A PNG file renamed .keras."""

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
    png += png_chunk(b"IDAT", zlib.compress(b"\x00\x00")) + png_chunk(b"IEND", b"")
    out = _out(tmp, "image.keras")
    Path(out).write_bytes(png)
    return out


def text_file(tmp: PathLike) -> str:
    """Python source renamed .h5."""
    out = _out(tmp, "script.h5")
    Path(out).write_text("import os\nos.system('id')\n")
    return out


def empty(tmp: PathLike) -> str:
    """A zero-byte upload."""
    out = _out(tmp, "empty.keras")
    Path(out).write_bytes(b"")
    return out


def byte_flips(path: PathLike, tmp: PathLike, n: int, seed: int) -> str:
    """A copy of ``path`` with ``n`` random bytes replaced (seeded, so failures reproduce)."""
    rng = random.Random(seed)
    data = bytearray(Path(path).read_bytes())
    for _ in range(n):
        at = rng.randrange(len(data))
        data[at] ^= rng.randrange(1, 256)
    out = _out(tmp, f"flipped_{seed}{Path(path).suffix}")
    Path(out).write_bytes(bytes(data))
    return out


def copy_as(path: PathLike, tmp: PathLike, name: str) -> str:
    """A copy of ``path`` under another name (e.g. HDF5 bytes named .keras)."""
    out = _out(tmp, name)
    shutil.copyfile(path, out)
    return out
