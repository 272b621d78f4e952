"""Activations over HTTP vs the in-process compiled function, measured side by side.

Run: ``.venv/bin/python bench/activations.py [--quick]`` (see bench/README.md).

1. the lectures' convnet (150x150x3), 1 image, every conv/pool layer as npz over HTTP vs the
   in-process ``ActivationFunction`` on the same batch (target ratio <= 2), plus the lectures'
   ``keras.Model(model.inputs, outputs).predict``;
2. the same with 20 images in one request;
3. VGG16 224x224 (the trained demo model, caffe preprocessing), every conv/pool layer, 1 and 8
   images;
4. JSON vs npz vs the OIP binary extension for the same answer (latency and bytes);
5. a second request on a model loads nothing and traces nothing again (cache metrics).

Cases 1-3 also time the request's in-process parts (decode + resize, npz encoding) and read
the server-side handler time from the API's own latency histogram, to show where time goes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import (
    TIMING_HEADER,
    Api,
    RawClient,
    Samples,
    human_bytes,
    interleaved,
    ms,
    multipart,
    print_table,
    running_api,
    timing_rows,
    verdict,
)
from _floor import Floor

TARGET = 2.0
FLOOR = "floor: raw TCP, decode + function"
ROUTE_KEY = '{method="POST",route="/v1/models/{model_id}/activations"}'
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry")

# (reps, warmup) per case, full run and --quick
REPS = {
    "convnet1": ((30, 3), (8, 2)),
    "convnet20": ((20, 2), (4, 1)),
    "vgg1": ((20, 2), (4, 1)),
    "vgg8": ((8, 1), (2, 1)),
    "formats": ((20, 2), (5, 1)),
}


def crops(n: int, size: int) -> list[Any]:
    """``n`` different square crops of scikit-image photos, resized to ``size`` x ``size``."""
    import numpy as np
    from PIL import Image

    from tests.builders import photo

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        rgb = photo(name=PHOTOS[i % len(PHOTOS)])
        h, w = rgb.shape[:2]
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        tile = Image.fromarray(rgb[y : y + side, x : x + side])
        out.append(np.asarray(tile.resize((size, size), Image.Resampling.BILINEAR)))
    return out


def pngs_of(images: Sequence[Any]) -> list[bytes]:
    from tests.builders import png_bytes

    return [png_bytes(rgb) for rgb in images]


class Case:
    """One model and one set of uploaded images, timed over HTTP and in process."""

    def __init__(
        self,
        api: Api,
        record: dict[str, Any],
        model: Any,
        pngs: list[bytes],
        layers: list[str] | None = None,
        floor: Floor | None = None,
    ) -> None:
        from featureviz.activations import ActivationFunction
        from featureviz.models import input_spec, spatial_layers

        self.api = api
        self.record = record
        self.model = model
        self.pngs = pngs
        self.layers = layers
        self.paths = layers or spatial_layers(record["layers"])
        self.spec = input_spec(model)
        self.batch = self.decode()
        self.fn = ActivationFunction(model, self.paths, preprocess_mode=record["preprocess"])
        self.floor = floor

    # -- the request's parts, in this process
    def decode(self) -> Any:
        from featureviz.images import decode_image, to_batch

        h, w, c = self.spec
        return to_batch([decode_image(p) for p in self.pngs], height=h, width=w, channels=c)

    def compute(self) -> dict[str, Any]:
        return self.fn(self.batch)

    def encode(self, arrays: dict[str, Any] | None = None) -> bytes:
        from featureviz import encodings

        return encodings.to_npz(arrays if arrays is not None else self._arrays)

    # -- over HTTP
    def request(self, fmt: str | None = None) -> bytes:
        if not hasattr(self, "_raw"):
            files = [("image", f"img{i}.png", data) for i, data in enumerate(self.pngs)]
            fields = {"layers": ",".join(self.layers)} if self.layers else {}
            self._raw = RawClient(str(self.api.client.base_url))
            self._body = multipart(files, fields)
        path = f"/v1/models/{self.record['id']}/activations"
        status, content = self._raw.post(path + (f"?format={fmt}" if fmt else ""), *self._body)
        if status != 200:
            raise RuntimeError(f"activations: {status} {content[:500]!r}")
        return content

    def raw_tcp(self) -> memoryview:
        assert self.floor is not None
        return self.floor.request(self.pngs)

    def check(self) -> tuple[int, float]:
        """Bytes of the npz answer and its largest difference from the in-process result.

        The floor's bytes are checked too: they must be the in-process arrays, layer by layer.
        """
        import numpy as np

        from featureviz.encodings import from_npz

        body = self.request()
        got = from_npz(body)
        self._arrays = want = self.compute()
        if list(got) != list(want):
            raise RuntimeError(f"HTTP answered layers {list(got)}, expected {list(want)}")
        diff = max(float(np.max(np.abs(got[p] - want[p]))) for p in want)
        if self.floor is not None:
            raw = np.frombuffer(self.raw_tcp(), dtype=np.float32)
            flat = np.concatenate([a.reshape(-1) for a in want.values()])
            diff = max(diff, float(np.max(np.abs(raw - flat))))
        return len(body), diff


def server_seconds(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Mean handler time of the activation requests between two /metrics snapshots."""
    s = f"featureviz_http_request_seconds_sum{ROUTE_KEY}"
    n = f"featureviz_http_request_seconds_count{ROUTE_KEY}"
    count = after.get(n, 0.0) - before.get(n, 0.0)
    return (after.get(s, 0.0) - before.get(s, 0.0)) / count if count else None


def run_case(
    title: str,
    case: Case,
    reps_warmup: tuple[int, int],
    *,
    lectures: Callable[[], Any] | None = None,
    target: float | None = TARGET,
    short: str = "",
) -> dict[str, Any]:
    reps, warmup = reps_warmup
    size, diff = case.check()
    # The ratio comes from the two variants alone, alternated; the heavier context variants
    # (the lectures' predict spins TensorFlow's threads for a while) get rounds of their own.
    pair: dict[str, Callable[[], Any]] = {
        "compiled function (in process)": case.compute,
        "HTTP POST npz": case.request,
    }
    if case.floor is not None:
        pair[FLOOR] = case.raw_tcp
    context: dict[str, Callable[[], Any]] = {"compiled function (in process)": case.compute}
    if lectures is not None:
        context["lectures' Model.predict"] = lectures
    context["  part: decode+resize (in process)"] = case.decode
    context["  part: npz encode (in process)"] = case.encode
    for _ in range(warmup):
        for fn in (*pair.values(), *context.values()):
            fn()
    # snapshot the server's histogram around the measured HTTP rounds only
    before = case.api.metrics()
    results = interleaved(pair, reps=reps, warmup=0)
    after = case.api.metrics()
    server = server_seconds(before, after)
    others = interleaved(context, reps=reps, warmup=0)
    for name, samples in others.items():
        if name != "compiled function (in process)":
            results[name] = samples
    base = "compiled function (in process)"
    http = results["HTTP POST npz"]
    ratio = http.median / results[base].median
    extra: dict[str, list[Any]] = {"HTTP POST npz": [verdict(ratio, target) if target else ""]}
    floor = results[FLOOR].median if FLOOR in results else None
    if floor is not None:
        extra[FLOOR] = ["(no HTTP, no framework: see bench/_floor.py)"]
    if lectures is not None:
        extra["lectures' Model.predict"] = ["(the lectures' way)"]
    rows = timing_rows(results, base, extra=extra)
    if server is not None:
        srv = Samples("server", [server])
        rows.append(
            [
                "  part: server handler (mean, /metrics)",
                reps,
                ms(srv.median),
                "",
                f"{server / results[base].median:.2f}",
            ]
        )
        rows.append(
            [
                "  part: transfer + client (HTTP - server)",
                reps,
                ms(http.median - server),
                "",
                f"{(http.median - server) / results[base].median:.2f}",
            ]
        )
    n = case.batch.shape[0]
    print_table(
        f"{title}\n  {n} image(s) {tuple(case.batch.shape[1:])}, {len(case.paths)} layers, "
        f"npz answer {human_bytes(size)}; HTTP vs in-process max |diff| = {diff:.2g}",
        [*TIMING_HEADER, ""],
        rows,
    )
    return {
        "title": title,
        "short": short,
        "ratio": ratio,
        "http": http.median,
        "fn": results[base].median,
        "server": server,
        "bytes": size,
        "floor": floor,
    }


def first_and_second(api: Api, case_factory: Callable[[], Case]) -> None:
    """Case 5: cache metrics and latency of a first and a second identical request."""
    keys = [
        'featureviz_model_cache_events{event="miss"}',
        'featureviz_model_cache_events{event="hit"}',
        'featureviz_function_cache_events{event="miss"}',
        'featureviz_function_cache_events{event="hit"}',
    ]
    case = case_factory()
    snaps = [api.metrics()]
    t1 = time.perf_counter()
    case.request()
    first = time.perf_counter() - t1
    snaps.append(api.metrics())
    t2 = time.perf_counter()
    case.request()
    second = time.perf_counter() - t2
    snaps.append(api.metrics())
    rows = []
    for key in keys:
        v = [int(s.get(key, 0)) for s in snaps]
        rows.append([key, v[0], v[1], v[2], f"{v[2] - v[1]:+d}"])
    print_table(
        "5. A second request on a model loads nothing and traces nothing again\n"
        "  (a model never used before: the convnet with other weights, all conv/pool layers)",
        ["metric", "before", "after 1st", "after 2nd", "2nd request"],
        rows,
    )
    model_miss = snaps[2][keys[0]] - snaps[1][keys[0]]
    fn_miss = snaps[2][keys[2]] - snaps[1][keys[2]]
    model_hit = snaps[2][keys[1]] - snaps[1][keys[1]]
    fn_hit = snaps[2][keys[3]] - snaps[1][keys[3]]
    ok = model_miss == 0 and fn_miss == 0 and model_hit > 0 and fn_hit > 0
    print(
        f"first request {ms(first)} ms (loads the model, traces the function), "
        f"second {ms(second)} ms: {first / second:.1f}x faster"
    )
    print(
        f"second request: model misses +{model_miss:.0f}, function misses +{fn_miss:.0f}, "
        f"model hits +{model_hit:.0f}, function hits +{fn_hit:.0f} -> "
        f"{'OK: nothing loaded, nothing traced' if ok else 'NOT OK'}"
    )


def formats(case: Case, reps_warmup: tuple[int, int]) -> None:
    """Case 4: JSON vs npz vs binary for the same answer."""
    reps, warmup = reps_warmup
    sizes = {fmt: len(case.request(fmt)) for fmt in ("npz", "json", "binary")}
    variants = {
        "npz": lambda: case.request("npz"),
        "json": lambda: case.request("json"),
        "binary": lambda: case.request("binary"),
    }
    results = interleaved(variants, reps=reps, warmup=warmup)
    rows = timing_rows(
        results,
        "npz",
        extra={k: [human_bytes(v), f"{v / sizes['npz']:.2f}"] for k, v in sizes.items()},
    )
    shapes = ", ".join(f"{p}" for p in case.paths)
    print_table(
        f"4. Same answer as npz, OIP JSON, OIP binary (convnet, 1 image, layers {shapes})",
        [*TIMING_HEADER, "bytes", "bytes ratio"],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 2 min)")
    parser.add_argument("--skip-vgg", action="store_true", help="leave out case 3")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="featureviz-bench-models-"))
    try:
        return _run(args, work, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path, started: float) -> int:
    import keras
    import numpy as np

    from featureviz.models import load_model, spatial_layers
    from featureviz.preprocess import preprocess
    from tests.builders import lecture_convnet

    pick = 1 if args.quick else 0
    reps = {k: v[pick] for k, v in REPS.items()}
    convnet_path = lecture_convnet(work / "convnet.keras", seed=0)
    fresh_path = lecture_convnet(work / "convnet_fresh.keras", seed=1)
    vgg_path: Path | None = None
    vgg_preprocess = "caffe"
    if not args.skip_vgg:
        vgg_path = work / "vgg16.keras"
        try:
            from featureviz.demo import write_demo_model

            info = write_demo_model(str(vgg_path))
            vgg_preprocess = info["preprocess"]
            vgg_label = "trained demo VGG16 (featureviz.demo)"
        except ImportError:
            keras.applications.VGG16(
                weights=None, include_top=False, input_shape=(224, 224, 3)
            ).save(vgg_path)
            vgg_label = "VGG16 with random weights"
    keras.backend.clear_session()

    one = pngs_of([_photo150()])
    twenty = pngs_of(crops(20, 150))
    print(
        f"featureviz activations bench ({'quick' if args.quick else 'full'} run), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, python {sys.version.split()[0]}, "
        f"keras {keras.__version__}"
    )
    print(
        "ratio = median / median of the baseline, all variants alternated round by round "
        "in this one run; HTTP latency is until the whole body is read (http.client, keep-alive)"
    )

    summary = []
    with running_api() as api, ExitStack() as floors:
        convnet_rec = api.upload_model(convnet_path, preprocess="rescale")
        fresh_rec = api.upload_model(fresh_path, preprocess="rescale")
        convnet = load_model(str(convnet_path))
        fresh = load_model(str(fresh_path))

        # 5 first, while the fresh model has never been asked for
        first_and_second(api, lambda: Case(api, fresh_rec, fresh, one))

        convnet_floor = floors.enter_context(
            Floor(convnet_path, "rescale", spatial_layers(convnet_rec["layers"]))
        )
        c1 = Case(api, convnet_rec, convnet, one, floor=convnet_floor)
        lect1 = lectures_model(convnet, c1.paths)
        summary.append(
            run_case(
                "1. Lectures' convnet, 1 photo 150x150 PNG, all conv/pool layers",
                c1,
                reps["convnet1"],
                short="convnet, 1 image",
                lectures=lambda: lect1.predict(
                    np.asarray(preprocess(c1.batch, "rescale")), verbose=0
                ),
            )
        )

        c2 = Case(api, convnet_rec, convnet, twenty, floor=convnet_floor)
        summary.append(
            run_case(
                "2. Lectures' convnet, 20 photo crops 150x150 PNG in one request, "
                "all conv/pool layers",
                c2,
                reps["convnet20"],
                short="convnet, 20 images",
                lectures=lambda: lect1.predict(
                    np.asarray(preprocess(c2.batch, "rescale")), verbose=0
                ),
            )
        )

        if vgg_path is not None:
            vgg_rec = api.upload_model(vgg_path, preprocess=vgg_preprocess)
            vgg = load_model(str(vgg_path))
            vgg1 = Case(api, vgg_rec, vgg, pngs_of(crops(1, 224)))
            summary.append(
                run_case(
                    f"3a. {vgg_label} 224x224, {vgg_preprocess}, 1 photo, all conv/pool layers",
                    vgg1,
                    reps["vgg1"],
                    short="VGG16, 1 image",
                )
            )
            vgg8 = Case(api, vgg_rec, vgg, pngs_of(crops(8, 224)))
            summary.append(
                run_case(
                    f"3b. {vgg_label} 224x224, {vgg_preprocess}, 8 photo crops, all conv/pool "
                    "layers",
                    vgg8,
                    reps["vgg8"],
                    short="VGG16, 8 images",
                )
            )

        table = convnet_rec["layers"]
        two = [row["path"] for row in table if row["channels"] is not None][:2]
        formats(Case(api, convnet_rec, convnet, one, layers=two), reps["formats"])

    print_table(
        "Summary: HTTP npz vs in-process compiled function (ratio of medians)",
        [
            "case",
            "HTTP ms",
            "function ms",
            "floor ms",
            "answer",
            "ratio",
            "target",
            "floor / function",
            "HTTP / floor",
        ],
        [
            [
                s["title"].split(" ")[0] + " " + s["short"],
                ms(s["http"]),
                ms(s["fn"]),
                ms(s["floor"]) if s["floor"] else "",
                human_bytes(s["bytes"]),
                f"{s['ratio']:.2f}",
                verdict(s["ratio"], TARGET),
                f"{s['floor'] / s['fn']:.2f}" if s["floor"] else "",
                f"{s['http'] / s['floor']:.2f}" if s["floor"] else "",
            ]
            for s in summary
        ],
    )
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s")
    return 0


def _photo150() -> Any:
    from tests.builders import photo

    return photo((150, 150), name="chelsea")


def lectures_model(model: Any, paths: Sequence[str]) -> Any:
    """``keras.Model(model.inputs, [layer.output ...])`` as in the lectures (top-level layers)."""
    import keras

    return keras.Model(model.inputs, [model.get_layer(p).output for p in paths])


if __name__ == "__main__":
    sys.exit(main())
