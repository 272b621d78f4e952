"""Static checks: every hostile file is refused with ModelRejected/TooLarge, real models pass."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import pytest

from featureviz.errors import ModelRejected, TooLarge
from featureviz.safety import (
    FileLimits,
    check_config,
    check_model_file,
    config_from_file,
    sniff_format,
)
from tests.featureviz import hostile

REFUSED = (ModelRejected, TooLarge)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def valid_keras(corpus: Path) -> str:
    return hostile.valid_keras(corpus)


@pytest.fixture(scope="module")
def valid_h5(corpus: Path) -> str:
    return hostile.valid_h5(corpus)


# --- real models pass ---------------------------------------------------------------------


def test_keras3_sequential_conv_net_passes(valid_keras: str) -> None:
    assert check_model_file(valid_keras) == "keras"


def test_tf_keras_h5_passes(valid_h5: str) -> None:
    assert check_model_file(valid_h5) == "h5"
    config = config_from_file(valid_h5)
    assert config["class_name"] == "Sequential"
    assert "module" not in config["config"]["layers"][1]  # Keras 2 style, and still allowed


def test_nested_vgg16_in_sequential_passes(tmp_path: Path) -> None:
    import keras

    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    model = keras.Sequential(
        [keras.Input((32, 32, 3)), base, keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    path = str(tmp_path / "vgg.keras")
    model.save(path)
    assert check_model_file(path) == "keras"


def test_nested_functional_and_keras3_h5_pass(tmp_path: Path) -> None:
    import keras

    layers = keras.layers
    x = keras.Input((16, 16, 3))
    y = layers.Conv2D(4, 3, padding="same", kernel_initializer="he_normal")(x)
    z = layers.Add()([y, layers.DepthwiseConv2D(3, padding="same")(y)])
    inner = keras.Model(x, layers.GlobalAveragePooling2D()(layers.LeakyReLU()(z)), name="inner")
    outer_in = keras.Input((16, 16, 3))
    out = layers.Dense(3, kernel_regularizer="l2", kernel_constraint="max_norm")(inner(outer_in))
    model = keras.Model(outer_in, out)
    assert check_model_file(_save(model, tmp_path / "nested.keras")) == "keras"
    assert check_model_file(_save(model, tmp_path / "nested.h5")) == "h5"


def test_hdf5_with_user_block_passes(tmp_path: Path) -> None:
    path = str(tmp_path / "userblock.h5")
    with h5py.File(path, "w", userblock_size=512) as h5:
        h5.attrs["model_config"] = json.dumps(hostile.TINY_H5_CONFIG)
    assert Path(path).read_bytes()[:4] != b"\x89HDF"
    assert check_model_file(path) == "h5"


def _save(model: Any, path: Path) -> str:
    model.save(str(path))
    return str(path)


# --- hostile files are refused ------------------------------------------------------------

HOSTILE: list[tuple[Callable[[Path], str], str]] = [
    (hostile.lambda_keras, "'Lambda' is not allowed"),
    (hostile.lambda_h5, "'Lambda' is not allowed"),
    (hostile.builtins_eval_keras, "activation 'eval' is not allowed"),
    (hostile.builtins_layer_keras, "'builtins'"),
    (hostile.custom_registered_keras, "'evil>Thing' is not allowed"),
    (hostile.disguised_registered_keras, "'evil>Dense' is not allowed"),
    (hostile.tfsm_layer_keras, "'TFSMLayer' is not allowed"),
    (hostile.zip_bomb, "decompression bomb"),
    (hostile.zip_lying_size, "archive"),
    (hostile.many_members, "members"),
    (hostile.path_traversal, "'../../evil.py' is not allowed"),
    (hostile.h5_external_link, "external link"),
    (hostile.h5_external_dataset, "another file"),
    (hostile.h5_virtual_dataset, "another file"),
    (hostile.h5_soft_link, "soft link"),
    (hostile.keras_weights_external_link, "external link"),
    (hostile.h5_weights_only, "weights only? upload the whole model"),
    (hostile.deep_config_keras, "nested too deeply"),
    (hostile.not_a_model, "not a Keras model file"),
    (hostile.text_file, "not a Keras model file"),
    (hostile.empty, "empty upload"),
]


@pytest.mark.parametrize(("build", "detail"), HOSTILE, ids=[b.__name__ for b, _ in HOSTILE])
def test_hostile_file_is_refused(build: Callable[[Path], str], detail: str, tmp_path: Path) -> None:
    path = build(tmp_path)
    with pytest.raises(REFUSED) as info:
        check_model_file(path)
    assert detail in str(info.value)


@pytest.mark.parametrize("which", ["valid_keras", "valid_h5"])
def test_truncated_file_is_refused(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    path = hostile.truncated(request.getfixturevalue(which), tmp_path)
    with pytest.raises(ModelRejected):
        check_model_file(path)


@pytest.mark.parametrize("which", ["valid_keras", "valid_h5"])
def test_byte_flips_never_raise_anything_else(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = request.getfixturevalue(which)
    outcomes = set()
    for seed in range(40):
        path = hostile.byte_flips(source, tmp_path, n=4, seed=seed)
        try:
            outcomes.add(check_model_file(path))
        except REFUSED:
            outcomes.add("refused")
    assert "refused" in outcomes  # the corpus does hit the checks, not only weight bytes


def test_hdf5_bytes_named_keras_are_refused(valid_h5: str, tmp_path: Path) -> None:
    with pytest.raises(ModelRejected, match="named .keras but holds a h5"):
        check_model_file(hostile.copy_as(valid_h5, tmp_path, "disguised.keras"))


# --- limits -------------------------------------------------------------------------------


def test_size_limit_is_too_large(valid_keras: str) -> None:
    with pytest.raises(TooLarge):
        check_model_file(valid_keras, limits=FileLimits(max_bytes=1000))


def test_config_size_limit(valid_keras: str, valid_h5: str) -> None:
    for path in (valid_keras, valid_h5):
        with pytest.raises(TooLarge, match="over the limit"):
            check_model_file(path, limits=FileLimits(max_config_bytes=100))


def test_layer_count_limit(valid_keras: str, valid_h5: str) -> None:
    for path in (valid_keras, valid_h5):
        with pytest.raises(ModelRejected, match="more than 3 layers"):
            check_model_file(path, limits=FileLimits(max_layers=3))


def test_uncompressed_total_limit(valid_keras: str) -> None:
    with pytest.raises(TooLarge, match="expands to"):
        check_model_file(valid_keras, limits=FileLimits(max_uncompressed_bytes=1000))


def test_member_limit(tmp_path: Path) -> None:
    with pytest.raises(ModelRejected, match="over 10"):
        check_model_file(hostile.many_members(tmp_path, 20), limits=FileLimits(max_members=10))


def test_missing_config_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "no_config.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", "{}")
    with pytest.raises(ModelRejected, match="config.json is missing"):
        check_model_file(str(path))


# --- sniffing and the config walk ---------------------------------------------------------


def test_sniff_format() -> None:
    assert sniff_format(b"PK\x03\x04rest") == "keras"
    assert sniff_format(b"\x89HDF\r\n\x1a\n") == "h5"
    assert sniff_format(bytes(512) + b"\x89HDF\r\n\x1a\n") == "h5"
    with pytest.raises(ModelRejected, match="empty upload"):
        sniff_format(b"")
    with pytest.raises(ModelRejected, match="expected a .keras archive or an HDF5 .h5 file"):
        sniff_format(b"\x89PNG\r\n\x1a\n")


def _model(*layers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"class_name": "Sequential", "config": {"name": "m", "layers": list(layers)}, **extra}


def _layer(class_name: str, module: str | None = "keras.layers", **config: Any) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


@pytest.mark.parametrize(
    ("layer", "detail"),
    [
        (_layer("Lambda"), "layer class 'Lambda' is not allowed"),
        (_layer("TorchModuleWrapper"), "'TorchModuleWrapper'"),
        (_layer("JaxLayer"), "'JaxLayer'"),
        (_layer("StringLookup", vocabulary="/etc/passwd"), "'StringLookup'"),
        (_layer("TextVectorization"), "'TextVectorization'"),
        (_layer("Hashing"), "'Hashing'"),
        (_layer("Dense", module="keras.src.layers.core.lambda_layer"), "module"),
        (_layer("Dense", module="os"), "module 'os'"),
        (
            _layer(
                "Dense",
                units=2,
                activation={"module": "builtins", "class_name": "function", "config": "exec"},
            ),
            "activation 'exec'",
        ),
        (
            _layer("Dense", units=2, activation={"value": ["base64 bytecode", None, None]}),
            "activation None",
        ),
        (_layer("Dense", kernel_initializer=_layer("Evil", module="keras.initializers")), "'Evil'"),
        (_layer("Dense", function="code"), "'function' is not allowed"),
        (_layer("Dense", x={"class_name": "__lambda__", "config": {"code": "..."}}), "__lambda__"),
        (_layer("Normalization", mean="/data/mean.npy", variance=1.0), "Normalization mean"),
        ({"class_name": ["Dense"], "config": {}}, "not a string"),
    ],
)
def test_config_walk_refuses(layer: dict[str, Any], detail: str) -> None:
    with pytest.raises(ModelRejected) as info:
        check_config(_model(_layer("InputLayer"), layer))
    assert detail in str(info.value)


def test_config_walk_allows_builtin_objects() -> None:
    dense = _layer(
        "Dense",
        units=2,
        activation={"module": "keras.activations", "class_name": "function", "config": "relu"},
        kernel_initializer={"class_name": "GlorotUniform", "config": {"seed": None}},
        kernel_regularizer=_layer("L1L2", module="keras.regularizers"),
        dtype=_layer("DTypePolicy", module="keras", name="float32"),
    )
    norm = _layer(
        "Normalization",
        mean=[0.5, 0.4],
        variance={"class_name": "__numpy__", "config": {"value": [1.0, 2.0]}},
    )
    functional = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "registered_name": "Functional",
        "config": {"layers": [_layer("Conv2D")]},
        # a nested sub-model's compile config is deserialized even with compile=False
        "compile_config": {"optimizer": _layer("Adam", module="keras.optimizers")},
    }
    # the top-level compile config is dropped by Keras with compile=False: custom losses are fine
    top_compile = {"loss": {"module": "mine", "class_name": "Focal", "registered_name": "a>Focal"}}
    check_config(_model(_layer("InputLayer"), dense, norm, functional, compile_config=top_compile))


def test_config_that_is_not_a_model_is_refused() -> None:
    with pytest.raises(ModelRejected, match="does not describe a Keras model"):
        check_config(_layer("Dense"))
