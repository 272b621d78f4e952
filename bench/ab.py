"""A/B of two API configurations on case 1's request, with the in-process function beside them.

Run: ``.venv/bin/python bench/ab.py --b FEATUREVIZ_MODEL_RECORD_TTL=0 [--a K=V ...]``

Two ``featureviz serve`` processes share one private Redis and one model store; each gets its
own environment overrides. The lectures' convnet is uploaded once, then the same activation
request (1 photo, every conv/pool layer, npz) goes to A, to B and to the in-process compiled
function in turn, the order rotating each round. It prints the medians and B / A, the figure
that says whether a setting (or a change run as B from another checkout's environment) pays.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import Samples, interleaved, multipart, print_table, spawn_api, wait_healthy

from service.embedded import RedisServer, stop_process


def overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", nargs="*", default=[], help="KEY=VALUE settings of A")
    parser.add_argument("--b", nargs="*", default=[], help="KEY=VALUE settings of B")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    envs = {"A": overrides(args.a), "B": overrides(args.b)}

    from featureviz.activations import ActivationFunction
    from featureviz.images import decode_image, to_batch
    from featureviz.models import load_model, spatial_layers
    from tests.builders import lecture_convnet, photo, png_bytes

    tmp = Path(tempfile.mkdtemp(prefix="featureviz-ab-"))
    model_path = lecture_convnet(tmp / "convnet.keras", seed=0)
    png = png_bytes(photo((150, 150), name="chelsea"))
    redis_server = RedisServer(tmp / "redis", persist=False).start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        urls = {}
        for name, extra in envs.items():
            log = tmp / f"api-{name}.log"
            urls[name], procs[name] = spawn_api(redis_server.url, tmp / "data", log, extra)
        for name, url in urls.items():
            wait_healthy(url, procs[name], tmp / f"api-{name}.log", 180)
        import httpx

        with model_path.open("rb") as fh:
            record = httpx.post(
                f"{urls['A']}/v1/models",
                files={"file": (model_path.name, fh)},
                data={"preprocess": "rescale"},
                timeout=600,
            ).json()
        body, content_type = multipart([("image", "photo.png", png)], {})
        path = f"/v1/models/{record['id']}/activations"
        conns = {n: http.client.HTTPConnection(urlsplit(u).netloc) for n, u in urls.items()}

        def post(name: str) -> Any:
            conns[name].request("POST", path, body=body, headers={"Content-Type": content_type})
            answer = conns[name].getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{name}: {answer.status} {data[:300]!r}")

        model = load_model(str(model_path))
        fn = ActivationFunction(model, spatial_layers(record["layers"]), preprocess_mode="rescale")
        batch = to_batch([decode_image(png)], height=150, width=150, channels=3)
        results: dict[str, Samples] = interleaved(
            {"A": lambda: post("A"), "B": lambda: post("B"), "function": lambda: fn(batch)},
            reps=args.rounds,
            warmup=5,
        )
        a, b, f = (results[k].median for k in ("A", "B", "function"))
        print_table(
            f"A/B on case 1 (convnet, 1 photo, all conv/pool layers), {args.rounds} rounds\n"
            f"  A: {envs['A'] or 'defaults'}\n  B: {envs['B'] or 'defaults'}",
            ["variant", "median ms", "/ function"],
            [[k, f"{s.median * 1000:.2f}", f"{s.median / f:.2f}"] for k, s in results.items()],
        )
        print(f"\nB / A = {b / a:.3f}")
    finally:
        for proc in procs.values():
            stop_process(proc)
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
