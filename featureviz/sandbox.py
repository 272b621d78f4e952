"""First load and inspection of an uploaded model in a spawned child with resource limits.

Core signature::

    inspect_in_sandbox(path, *, file_limits, limits) -> describe(model) + format, keras_version

Static checks (:mod:`featureviz.safety`) refuse what they can see; this catches what only a
real load shows: a config that asks for a 100 GB tensor, a loader that spins, a native crash.
The child is started with ``spawn``, never ``fork``: the parent may hold TensorFlow threads and
locks that a forked child would inherit half-taken. The child caps its address space and CPU
time with ``setrlimit`` before it imports TensorFlow, and the parent enforces the wall clock.
Whatever goes wrong in the child comes back as ``ModelRejected``; the parent never dies with it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from featureviz.errors import ModelRejected, TooLarge
from featureviz.safety import FileLimits, GiB, check_model_file

__all__ = ["SandboxLimits", "inspect_in_sandbox"]

log = logging.getLogger(__name__)

_CHILD_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    # Inspection needs no parallelism; fewer threads also means fewer 8 MB stacks under RLIMIT_AS.
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "2",
    "OMP_NUM_THREADS": "2",
}
_MAX_MESSAGE_BYTES = 64 << 20
_MEMORY_HINTS: tuple[str, ...] = (
    "memoryerror",
    "cannot allocate memory",
    "bad_alloc",
    "out of memory",
)
_MEMORY_HINTS += ("failed to map segment", "resource exhausted", "resourceexhausted")


@dataclass(frozen=True)
class SandboxLimits:
    """Resources for one first load; generous for VGG-sized models, fatal for bombs."""

    memory_bytes: int = 4 * GiB
    cpu_seconds: int = 120
    wall_seconds: float = 180.0


def inspect_in_sandbox(
    path: str, *, file_limits: FileLimits, limits: SandboxLimits
) -> dict[str, Any]:
    """Load ``path`` in a limited child and return its layer table with format and version.

    The cheap static check runs here first, so most hostile files never cost a process.
    """
    fmt = check_model_file(path, limits=file_limits)
    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child_main,
        args=(writer, path, file_limits, limits),
        name="featureviz-sandbox",
        daemon=True,
    )
    proc.start()
    writer.close()  # the child holds the only writer: EOF on our end means it is gone
    ready: list[Any] = []
    try:
        ready = wait([reader, proc.sentinel], timeout=limits.wall_seconds)
        message = _read(reader) if ready else None
    finally:
        reader.close()
        _stop(proc, grace=2.0 if ready else 0.0)
    if not ready:
        log.warning(
            "sandbox child hit the wall-clock limit of %ss on %s", limits.wall_seconds, path
        )
        raise ModelRejected(f"model loading exceeded the time limit of {limits.wall_seconds:g} s")
    result = _interpret(message, proc.exitcode, path)
    if not isinstance(result.get("params"), int):
        raise ModelRejected("the model could not be loaded: the loader sent no parameter count")
    if result["params"] > file_limits.max_params:
        raise ModelRejected(
            f"the model has {result['params']} parameters, over the limit of "
            f"{file_limits.max_params}"
        )
    result["format"] = fmt
    return result


def _read(reader: Connection) -> list[Any] | None:
    """The child's one message, or None when it exited without a well-formed one.

    JSON, never pickle: a child subverted by the file must not get to run code in the parent.
    """
    try:
        if not reader.poll():
            return None
        message = json.loads(reader.recv_bytes(maxlength=_MAX_MESSAGE_BYTES))
    except (EOFError, OSError, ValueError):
        return None
    ok = isinstance(message, list) and len(message) >= 2 and message[0] in ("ok", "error")
    return message if ok else None


def _stop(proc: Any, *, grace: float) -> None:
    """Let a finished child exit, else terminate, then kill: native code may ignore SIGTERM."""
    proc.join(timeout=grace)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=2.0)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=5.0)


def _interpret(message: Sequence[Any] | None, exitcode: int | None, path: str) -> dict[str, Any]:
    if message is not None and message[0] == "ok" and isinstance(message[1], dict):
        return dict(message[1])
    if message is not None and message[0] == "error":
        kind, text = str(message[1]), str(message[2] if len(message) > 2 else "")
        text = text.replace(path, os.path.basename(path))
        if _looks_like_memory(kind, text):
            raise ModelRejected("model loading exceeded the memory limit")
        if kind == "CpuTimeExceeded" or "CpuTimeExceeded" in text:
            raise ModelRejected("model loading exceeded the CPU time limit")
        if kind == "ModelRejected":
            raise ModelRejected(text)
        if kind == "TooLarge":
            raise TooLarge(text)
        reason = f"{kind}: {text.splitlines()[0]}" if text else kind
        raise ModelRejected(f"the model could not be loaded: {reason[:300]}")
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        if sig == signal.SIGXCPU:
            raise ModelRejected("model loading exceeded the CPU time limit")
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        raise ModelRejected(
            f"model loading was killed by {name}: it exceeded the memory or CPU limit, or crashed"
        )
    raise ModelRejected(f"the model could not be loaded: the loader exited with code {exitcode}")


def _looks_like_memory(kind: str, text: str) -> bool:
    blob = f"{kind} {text}".lower()
    return any(hint in blob for hint in _MEMORY_HINTS)


def _child_main(
    conn: Connection, path: str, file_limits: FileLimits, limits: SandboxLimits
) -> None:
    """Entry of the spawned child: environment and limits first, then the heavy imports."""
    os.environ.update(_CHILD_ENV)
    try:
        _set_limits(limits)
        conn.send_bytes(json.dumps(["ok", _child_inspect(path, file_limits)]).encode())
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent as data
        try:
            conn.send_bytes(json.dumps(["error", type(exc).__name__, str(exc)[:2000]]).encode())
        except BaseException:  # noqa: BLE001 - e.g. out of memory while reporting
            os._exit(3)
    finally:
        conn.close()


def _set_limits(limits: SandboxLimits) -> None:
    import resource

    def cap(kind: int, soft: int, hard: int) -> None:
        _, current_hard = resource.getrlimit(kind)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(kind, (soft, hard))

    cap(resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes)
    # Soft CPU limit sends SIGXCPU (reported as a CPU overrun); the hard one kills 5 s later.
    cap(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 5)
    signal.signal(signal.SIGXCPU, _on_sigxcpu)


class CpuTimeExceeded(BaseException):
    """Raised in the child by SIGXCPU; a BaseException so that loaders' ``except Exception``
    blocks do not swallow it and the overrun is reported instead of a bare kill."""


def _on_sigxcpu(signum: int, frame: Any) -> None:
    raise CpuTimeExceeded("CPU time limit exceeded")


def _child_inspect(path: str, file_limits: FileLimits) -> dict[str, Any]:
    """Load and describe the model: runs only in the child, keeping TensorFlow out of the parent."""
    import keras

    from featureviz import models

    model = models.load_model(path, limits=file_limits)
    info = models.describe(model)
    info["keras_version"] = keras.__version__
    return info
