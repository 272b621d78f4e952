"""The sandboxed first load: real child processes with real limits; the parent always survives."""

from __future__ import annotations

import resource
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from featureviz.errors import ModelRejected, TooLarge
from featureviz.safety import FileLimits
from featureviz.sandbox import SandboxLimits, _interpret, inspect_in_sandbox
from tests.featureviz import hostile

LIMITS = SandboxLimits(wall_seconds=120.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox")


@pytest.fixture(scope="module")
def valid_keras(corpus: Path) -> str:
    return hostile.valid_keras(corpus)


def test_valid_keras_model_is_described(valid_keras: str) -> None:
    info = inspect_in_sandbox(valid_keras, file_limits=FileLimits(), limits=LIMITS)
    assert info["format"] == "keras"
    assert info["keras_version"].startswith("3.")
    assert info["input_shape"] == [None, 16, 16, 3]
    assert info["output_shape"] == [None, 2]
    conv = next(row for row in info["layers"] if row["type"] == "Conv2D")
    assert conv["output_shape"] == [None, 14, 14, 3]
    assert conv["params"] == 3 * 3 * 3 * 3 + 3
    assert info["params"] == sum(row["params"] for row in info["layers"])


def test_valid_tf_keras_h5_is_described(corpus: Path) -> None:
    info = inspect_in_sandbox(hostile.valid_h5(corpus), file_limits=FileLimits(), limits=LIMITS)
    assert info["format"] == "h5"
    assert info["input_shape"] == [None, 16, 16, 3]


def test_tiny_memory_limit_is_refused_and_parent_lives(valid_keras: str) -> None:
    before = resource.getrlimit(resource.RLIMIT_AS), resource.getrlimit(resource.RLIMIT_CPU)
    with pytest.raises(ModelRejected, match="exceeded the memory limit"):
        inspect_in_sandbox(
            valid_keras, file_limits=FileLimits(), limits=SandboxLimits(memory_bytes=200 << 20)
        )
    # the limits were the child's alone: the parent can still allocate as before
    assert (
        resource.getrlimit(resource.RLIMIT_AS),
        resource.getrlimit(resource.RLIMIT_CPU),
    ) == before
    assert len(bytearray(300 << 20)) == 300 << 20


def test_wall_clock_timeout_is_refused(valid_keras: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelRejected, match="time limit"):
        inspect_in_sandbox(
            valid_keras, file_limits=FileLimits(), limits=SandboxLimits(wall_seconds=0.5)
        )
    assert time.monotonic() - start < 10  # terminated, not waited for


def test_params_over_limit_are_refused(valid_keras: str) -> None:
    with pytest.raises(ModelRejected, match="parameters, over the limit of 100"):
        inspect_in_sandbox(valid_keras, file_limits=FileLimits(max_params=100), limits=LIMITS)


def test_keras_load_failure_becomes_model_rejected(corpus: Path) -> None:
    path = hostile.unloadable_keras(corpus)
    with pytest.raises(ModelRejected, match="the model could not be loaded") as info:
        inspect_in_sandbox(path, file_limits=FileLimits(), limits=LIMITS)
    assert str(corpus) not in str(info.value)  # server paths do not leak into the detail


def test_weights_too_large_for_memory_are_refused(corpus: Path) -> None:
    path = hostile.memory_bomb_keras(corpus)
    with pytest.raises(ModelRejected, match="memory limit"):
        inspect_in_sandbox(
            path, file_limits=FileLimits(), limits=SandboxLimits(memory_bytes=3 << 30)
        )


def test_hostile_file_is_refused_before_any_child(corpus: Path) -> None:
    path = hostile.lambda_keras(corpus)
    start = time.monotonic()
    with pytest.raises(ModelRejected, match="'Lambda' is not allowed"):
        inspect_in_sandbox(path, file_limits=FileLimits(), limits=LIMITS)
    assert time.monotonic() - start < 1  # the static check in the parent, no TensorFlow import


@pytest.mark.parametrize("seed", range(2))
def test_byte_flipped_model_is_loaded_or_refused(
    valid_keras: str, tmp_path: Path, seed: int
) -> None:
    path = hostile.byte_flips(valid_keras, tmp_path, n=2, seed=1000 + seed)
    try:
        info = inspect_in_sandbox(path, file_limits=FileLimits(), limits=LIMITS)
    except (ModelRejected, TooLarge):
        return
    assert info["format"] == "keras"


# --- how child outcomes map to refusals (no process needed) -------------------------------


@pytest.mark.parametrize(
    ("message", "exitcode", "error", "detail"),
    [
        (("error", "ModelRejected", "layer class 'X' is not allowed"), 0, ModelRejected, "'X'"),
        (("error", "TooLarge", "too big"), 0, TooLarge, "too big"),
        (
            ("error", "ValueError", "bad shape\nlong trace"),
            0,
            ModelRejected,
            "the model could not be loaded: ValueError: bad shape",
        ),
        (("error", "MemoryError", ""), 0, ModelRejected, "exceeded the memory limit"),
        (
            ("error", "ModelRejected", "could not be loaded: ResourceExhaustedError: OOM"),
            0,
            ModelRejected,
            "exceeded the memory limit",
        ),
        (
            ("error", "CpuTimeExceeded", "CPU time limit exceeded"),
            0,
            ModelRejected,
            "exceeded the CPU time limit",
        ),
        (None, -signal.SIGXCPU, ModelRejected, "exceeded the CPU time limit"),
        (None, -signal.SIGKILL, ModelRejected, "killed by SIGKILL"),
        (None, -signal.SIGSEGV, ModelRejected, "killed by SIGSEGV"),
        (None, 3, ModelRejected, "exited with code 3"),
        (["error", "ValueError"], 0, ModelRejected, "could not be loaded: ValueError"),
        (["ok", "not a dict"], 0, ModelRejected, "exited with code 0"),
    ],
)
def test_child_outcomes_map_to_refusals(
    message: Sequence[str] | None, exitcode: int, error: type[Exception], detail: str
) -> None:
    with pytest.raises(error) as info:
        _interpret(message, exitcode, "/srv/models/abc.keras")
    assert detail in str(info.value)
