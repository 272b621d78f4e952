"""The floor for any service: decode + the compiled function + raw bytes over loopback TCP.

A process of its own holds the model and the same ``ActivationFunction`` the API uses and
answers a bare length-prefixed protocol: no HTTP, no framework, no Redis, no archive format,
no validation. The arrays leave with one ``sendmsg`` of views of their memory and the client
reads them with ``recv_into``. What the service costs over this is what HTTP, FastAPI, the
model registry and npz add; what this costs over the in-process function is what crossing a
process boundary costs on the machine at all.

Run as ``python bench/_floor.py MODEL PREPROCESS PATHS`` (comma list); it prints its port.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")


def _recv_exact(sock: socket.socket, n: int) -> memoryview:
    """``n`` bytes into fresh memory that is not zeroed first (as ``http.client`` reads)."""
    import numpy as np

    view = memoryview(np.empty(n, dtype=np.uint8))
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("peer closed")
        got += k
    return view


def serve(model_path: str, preprocess_mode: str, paths: list[str]) -> None:
    from featureviz.activations import ActivationFunction
    from featureviz.images import decode_image, to_batch
    from featureviz.models import input_spec, load_model

    model = load_model(model_path)
    fn = ActivationFunction(model, paths, preprocess_mode=preprocess_mode)
    height, width, channels = input_spec(model)
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        try:
            (count,) = _COUNT.unpack(_recv_exact(conn, _COUNT.size))
        except ConnectionError:
            return
        images = []
        for _ in range(count):
            (size,) = _COUNT.unpack(_recv_exact(conn, _COUNT.size))
            images.append(decode_image(bytes(_recv_exact(conn, size))))
        arrays = fn(to_batch(images, height=height, width=width, channels=channels))
        views = [memoryview(a).cast("B") for a in arrays.values()]
        conn.sendall(_SIZE.pack(sum(v.nbytes for v in views)))
        for view in views:
            conn.sendall(view)


class Floor:
    """A running floor server for one model and its client end."""

    def __init__(self, model_path: Path, preprocess_mode: str, paths: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(model_path), preprocess_mode, ",".join(paths)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, pngs: list[bytes]) -> memoryview:
        """Send the images, return the activations' bytes (layer after layer, row-major)."""
        head = _COUNT.pack(len(pngs)) + b"".join(_COUNT.pack(len(p)) + p for p in pngs)
        self.sock.sendall(head)
        (size,) = _SIZE.unpack(_recv_exact(self.sock, _SIZE.size))
        return _recv_exact(self.sock, size)

    def close(self) -> None:
        from service.embedded import stop_process

        self.sock.close()
        stop_process(self.proc)

    def __enter__(self) -> Floor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
