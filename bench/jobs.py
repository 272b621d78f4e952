"""Gradient-ascent jobs through the service vs the bare compiled loop vs other libraries.

Run: ``.venv/bin/python bench/jobs.py [--quick] [--skip-compare]`` (see bench/README.md).
Build ``bench/.venv-compare`` first with ``bash bench/compare_env.sh`` for the comparisons.

One case, all variants in ONE run, alternated round by round after a warm-up: the trained demo
VGG16 (``featureviz.demo.write_demo_model``, caffe preprocessing), layer ``block3_conv1``,
channels 0-7 as one batch, 50 steps, 128x128, default job parameters otherwise.

- **featureviz service**: ``POST /v1/jobs`` (``no_cache: true``, a new seed each time) until
  ``GET /v1/jobs/{id}/result.npz`` answers 200, long-polled (``?wait=``), through a private Redis,
  ``featureviz serve`` and a real prefork Celery worker (``service.embedded.worker_command``).
- **floor: bare compiled loop**: in this process, the model cut at the layer
  (``feature_model(..., any_size=True)``), an (8, 128, 128, 3) ``tf.Variable`` of 0-255
  pixels, one ``tf.function`` step: caffe preprocessing, mean of channel i for image i,
  gradient, RMS-normalized, ``assign_add`` (the lectures' plain ascent: no parameterization,
  no transforms, no Adam).
- **featureviz engine in process**: ``featureviz.ascent.visualize`` with the job's config (FFT
  image, decorrelation, standard transforms, Adam): the engine without the service.
- **xplique**, **tf-keras-vis**: ``bench/compare_libs.py`` in ``bench/.venv-compare``, driven
  over a pipe (they are never dependencies of the service).

Quality: ``evaluate_channels(model, layer, channels, images, preprocess="caffe")`` on every
method's final images in [0, 1] RGB, channel c of image c, divided by the strongest value any
natural 128x128 tile (scikit-image photos, stride 64) reaches for that channel; median over
the channels. Above 1: the visualization beats every natural patch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _common import (
    ROOT,
    Api,
    Samples,
    percentile,
    print_table,
    verdict,
    wait_healthy,
)

from service.embedded import RedisServer, free_port, stop_process, worker_command

TARGET = 1.15  # featureviz service / floor
LAYER = "block3_conv1"
CHANNELS = list(range(8))
STEPS = 50
SIZE = 128
OUT = Path("/tmp/fvbench")
COMPARE_PY = ROOT / "bench" / ".venv-compare" / "bin" / "python"
PHOTOS = (
    "chelsea",
    "astronaut",
    "coffee",
    "rocket",
    "camera",
    "immunohistochemistry",
    "coins",
    "horse",
    "hubble_deep_field",
    "brick",
    "grass",
    "gravel",
    "page",
    "text",
    "moon",
    "clock",
)
SERVICE = "featureviz service (HTTP + worker)"
ENGINE = "featureviz engine in process"
FLOOR = "floor: bare compiled loop"
LIBS = ("xplique", "tf-keras-vis")


# ------------------------------------------------------------------------------ the stack
@dataclass
class Stack:
    api: Api
    redis_url: str
    worker: subprocess.Popen[bytes]
    worker_log: Path


@contextmanager
def running_stack(startup_timeout: float = 240.0) -> Iterator[Stack]:
    """Private Redis (no persistence, free port), ``featureviz serve`` and a prefork worker.

    ``_common.running_api`` does not expose its Redis URL, which the worker needs, so this
    starts the same two processes the same way, plus the worker as ``start_worker`` does
    (``worker_command()``, own session) with its log in a file. Everything stops in ``finally``.
    """
    tmp = Path(tempfile.mkdtemp(prefix="featureviz-bench-jobs-"))
    redis_server = RedisServer(tmp / "redis", persist=False)
    procs: list[subprocess.Popen[bytes]] = []
    client: httpx.Client | None = None
    try:
        redis_server.start()
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "FEATUREVIZ_DATA_DIR": str(tmp / "data"),
            "FEATUREVIZ_LOG_LEVEL": "WARNING",
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api_log, worker_log = tmp / "api.log", tmp / "worker.log"
        with api_log.open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=str(ROOT),
                )
            )
        with worker_log.open("ab") as out:
            worker = subprocess.Popen(
                worker_command(name=f"bench{os.getpid()}"),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                start_new_session=True,
            )
            procs.append(worker)
        wait_healthy(url, procs[0], api_log, startup_timeout)
        client = httpx.Client(base_url=url, timeout=600)
        deadline = time.monotonic() + startup_timeout
        while client.get("/readyz").status_code != 200:  # Redis and a live worker
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready: {worker_log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Stack(Api(url, tmp, api_log, client), redis_server.url, worker, worker_log)
    finally:
        if client is not None:
            client.close()
        for proc in reversed(procs):
            stop_process(proc)  # the worker: a warm shutdown of its main process
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class JobRun:
    seconds: float
    record: dict[str, Any]
    posted_at: float  # wall clock, before POST
    done_at: float  # wall clock, when result.npz was read
    npz: bytes
    polls: int


def run_service_job(client: httpx.Client, model_id: str, seed: int) -> JobRun:
    body = {
        "model_id": model_id,
        "layer": LAYER,
        "channels": CHANNELS,
        "steps": STEPS,
        "size": SIZE,
        "seed": seed,
        "no_cache": True,
    }
    posted_at = time.time()
    start = time.perf_counter()
    answer = client.post("/v1/jobs", json=body)
    if answer.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs: {answer.status_code} {answer.text[:500]}")
    job_id = answer.json()["id"]
    polls = 0
    while True:  # long polling: the API holds the answer until the job ends
        polls += 1
        status = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            break
    got = client.get(f"/v1/jobs/{job_id}/result.npz")
    if got.status_code != 200:
        raise RuntimeError(f"job {job_id}: {got.status_code} {got.text[:500]}")
    seconds = time.perf_counter() - start
    done_at = time.time()
    record = client.get(f"/v1/jobs/{job_id}").json()
    return JobRun(seconds, record, posted_at, done_at, got.content, polls)


# --------------------------------------------------------------------------- in process
class Floor:
    """The bare compiled loop: cut model, one variable, plain normalized gradient ascent."""

    def __init__(self, model: Any, lr: float = 1.0) -> None:
        import tensorflow as tf

        from featureviz.models import feature_model
        from featureviz.preprocess import preprocess

        self.tf = tf
        cut = feature_model(model, [LAYER], any_size=True)
        n_channels = int(cut.outputs[0].shape[-1])
        mask = tf.one_hot(CHANNELS, n_channels)  # (8, C): channel i for image i
        self.x = tf.Variable(tf.zeros((len(CHANNELS), SIZE, SIZE, 3)))

        def step() -> Any:
            with tf.GradientTape() as tape:
                acts = cut(preprocess(self.x, "caffe"), training=False)
                target = tf.reduce_sum(tf.reduce_mean(acts, axis=[1, 2]) * mask, axis=1)
                total = tf.reduce_sum(target)
            g = tape.gradient(total, self.x)
            g = g / (tf.sqrt(tf.reduce_mean(tf.square(g), axis=[1, 2, 3], keepdims=True)) + 1e-5)
            self.x.assign_add(lr * g)
            return target

        self.step = tf.function(step, autograph=False)

    def __call__(self, seed: int, steps: int | None = None) -> Any:
        tf = self.tf
        noise = tf.random.stateless_uniform(self.x.shape, [seed, 0], -20.0, 20.0)
        self.x.assign(128.0 + noise)  # the lectures' grey start with a little noise
        for _ in range(steps or STEPS):
            self.step()
        return (self.x.numpy() / 255.0).clip(0, 1)


def engine_run(model: Any, seed: int, steps: int | None = None) -> Any:
    from featureviz.ascent import AscentConfig, visualize

    config = AscentConfig(steps=steps or STEPS, size=SIZE, seed=seed)
    return visualize(model, LAYER, CHANNELS, config, preprocess="caffe").images


# --------------------------------------------------------------------- other libraries
class Compare:
    """``bench/compare_libs.py --serve`` in the comparison venv, one JSON line per request."""

    def __init__(self, model_path: Path, log: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                str(COMPARE_PY),
                str(ROOT / "bench" / "compare_libs.py"),
                "--serve",
                "--model",
                str(model_path),
                "--layer",
                LAYER,
                "--channels",
                f"{CHANNELS[0]}-{CHANNELS[-1]}",
                "--steps",
                str(STEPS),
                "--size",
                str(SIZE),
                "--out",
                str(OUT),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=str(ROOT),
        )
        self.hello: dict[str, Any] | None = None

    def ready(self) -> dict[str, Any]:
        if self.hello is None:
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            if not line:
                raise RuntimeError(
                    f"compare_libs.py exited with {self.proc.wait()}; see {self.log.name}"
                )
            self.hello = json.loads(line)
        return self.hello

    def run(self, method: str, seed: int, steps: int | None = None) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        request = {"method": method, "seed": seed, "steps": steps or STEPS}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"compare_libs.py exited with {self.proc.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------------------- quality
def natural_tiles(size: int = SIZE, stride: int = 64) -> tuple[Any, list[str]]:
    """Every ``size`` tile (stride ``stride``) of the bundled scikit-image photos, in [0, 1]."""
    import numpy as np
    from skimage import data

    tiles, used = [], []
    for name in PHOTOS:
        try:
            img = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001, S112 - a photo that needs a download is left out
            continue
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        img = img[..., :3].astype("float32")
        img = img / 255.0 if img.max() > 1.0 else img
        h, w = img.shape[:2]
        n = 0
        for y in range(0, h - size + 1, stride):
            for x in range(0, w - size + 1, stride):
                tiles.append(img[y : y + size, x : x + size])
                n += 1
        if n:
            used.append(f"{name} ({n})")
    return np.stack(tiles), used


def diagonal_activations(model: Any, images: Any) -> Any:
    import numpy as np

    from featureviz.ascent.optimize import evaluate_channels

    acts = evaluate_channels(model, LAYER, CHANNELS, images, preprocess="caffe")
    return np.diagonal(acts)  # image c, channel c


def quality(model: Any, images: Any, natural_max: Any) -> tuple[float, list[float]]:
    import numpy as np

    reached = diagonal_activations(model, np.asarray(images, "float32"))
    pairs = zip(reached, natural_max, strict=True)
    ratios = [float(r / m) if m > 0 else float("nan") for r, m in pairs]
    return float(np.nanmedian(ratios)), ratios


def save_grid(name: str, images: Any) -> Path:
    from featureviz.ascent.export import grid_png

    slug = name.split(" (")[0].split(":")[0].replace(" ", "_").replace("/", "_")
    path = OUT / f"{slug}.png"
    path.write_bytes(grid_png(images, cols=8, scale=1))
    return path


# ------------------------------------------------------------------------------------ main
def fmt_s(seconds: float) -> str:
    return f"{seconds:,.2f}"


def main() -> None:
    global STEPS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 for the libraries")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5)")
    ap.add_argument("--lib-rounds", type=int, default=None, help="rounds with the libraries (3)")
    ap.add_argument("--skip-compare", action="store_true", help="leave out xplique, tf-keras-vis")
    ap.add_argument("--steps", type=int, default=STEPS, help="smoke tests only (default 50)")
    args = ap.parse_args()
    STEPS = args.steps
    rounds = args.rounds or (2 if args.quick else 5)
    lib_rounds = min(rounds, args.lib_rounds or (1 if args.quick else 3))
    began = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)

    import keras
    import numpy as np
    import tensorflow as tf

    from featureviz.ascent.export import images_from_npz
    from featureviz.demo import write_demo_model
    from featureviz.models import load_model

    print(
        f"featureviz jobs bench ({'quick' if args.quick else 'full'} run, {rounds} rounds), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, python {sys.version.split()[0]}, "
        f"tensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} cores"
    )
    print(
        f"trained demo VGG16 (caffe), layer {LAYER}, channels {CHANNELS[0]}-{CHANNELS[-1]} "
        f"as one batch, {STEPS} steps, {SIZE}x{SIZE}; {rounds} timed rounds "
        f"({lib_rounds} with the libraries) after a warm-up, variants alternated round by round"
    )
    work = Path(tempfile.mkdtemp(prefix="featureviz-bench-jobs-model-"))
    model_path = work / "vgg16_demo.keras"
    write_demo_model(str(model_path))
    model = load_model(str(model_path))

    compare: Compare | None = None
    lib_notes: dict[str, str] = {}
    libs: list[str] = []
    if args.skip_compare:
        lib_notes = dict.fromkeys(LIBS, "skipped (--skip-compare)")
    elif not COMPARE_PY.exists():
        lib_notes = dict.fromkeys(LIBS, "not run: bench/.venv-compare missing (compare_env.sh)")
    else:
        compare = Compare(model_path, OUT / "compare_libs.log")

    runs: dict[str, Samples] = {}
    images: dict[str, Any] = {}
    job_runs: list[JobRun] = []
    versions: dict[str, str] = {}
    try:
        with running_stack() as stack:
            client = stack.api.client
            record = stack.api.upload_model(model_path, preprocess="caffe", name="vgg16-demo")
            floor = Floor(model)
            if compare is not None:
                hello = compare.ready()
                versions = hello.get("versions", {})
                for lib in LIBS:
                    if lib in hello.get("errors", {}):
                        lib_notes[lib] = f"cannot run: {hello['errors'][lib]}"
                    else:
                        libs.append(lib)

            def lib_variant(lib: str) -> Callable[[int], float]:
                def run(seed: int) -> float:
                    assert compare is not None
                    answer = compare.run(lib, seed)
                    if "error" in answer:
                        raise LibError(answer["error"])
                    images[lib] = np.load(answer["npy"])
                    return float(answer["seconds"])

                return run

            def service(seed: int) -> float:
                job = run_service_job(client, record["id"], seed)
                images[SERVICE] = images_from_npz(job.npz)
                job_runs.append(job)
                return job.seconds

            def timed(fn: Callable[[int], Any]) -> Callable[[int], float]:
                def run(seed: int) -> float:
                    start = time.perf_counter()
                    out = fn(seed)
                    seconds = time.perf_counter() - start
                    return out if isinstance(out, float) else seconds

                return run

            def keep(name: str, fn: Callable[[int], Any]) -> Callable[[int], Any]:
                def run(seed: int) -> Any:
                    images[name] = fn(seed)
                    return images[name]

                return run

            variants: dict[str, Callable[[int], float]] = {
                SERVICE: service,
                FLOOR: timed(keep(FLOOR, floor)),
                ENGINE: timed(keep(ENGINE, lambda s: engine_run(model, s))),
            }
            for lib in libs:
                variants[lib] = lib_variant(lib)

            # warm-up: the worker loads the model and traces its step on the same key; the
            # in-process loops trace theirs (few steps suffice: the step count is a Python loop);
            # the libraries run once in full (xplique builds a new tf.function on every call).
            warm: dict[str, float] = {}
            start = time.perf_counter()
            first = run_service_job(client, record["id"], 1000)
            warm[SERVICE] = time.perf_counter() - start
            warm[FLOOR] = timed(lambda s: floor(s, 5))(1000)
            warm[ENGINE] = timed(lambda s: engine_run(model, s, 5))(1000)
            for lib in list(libs):
                assert compare is not None
                answer = compare.run(lib, 1000)
                if "error" in answer:
                    lib_notes[lib] = f"cannot run: {answer['error']}"
                    libs.remove(lib)
                    variants.pop(lib)
                else:
                    warm[lib] = float(answer["seconds"])
            print(
                "warm-up: "
                + ", ".join(f"{k.split(' (')[0]} {v:.1f} s" for k, v in warm.items())
                + f" (first job: load_s {first.record['timings'].get('load_s', 0):.2f})"
            )

            names = list(variants)
            runs = {name: Samples(name) for name in names}
            for r in range(rounds):
                active = [n for n in names if n not in libs or r < lib_rounds]
                k = r % len(active)
                for name in active[k:] + active[:k]:
                    try:
                        runs[name].seconds.append(variants[name](r + 1))
                    except LibError as exc:
                        lib_notes[name] = f"failed: {exc}"
                        libs.remove(name)
                        names.remove(name)
                        break
                print(
                    f"  round {r + 1}/{rounds} done ({time.perf_counter() - began:.0f} s)",
                    flush=True,
                )
    finally:
        if compare is not None:
            compare.close()

    runs = {k: v for k, v in runs.items() if v.seconds}
    report(model, runs, images, job_runs, lib_notes, versions)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nwhole run: {time.perf_counter() - began:.0f} s; grids and .npy in {OUT}")


class LibError(RuntimeError):
    pass


def report(
    model: Any,
    runs: dict[str, Samples],
    images: dict[str, Any],
    job_runs: list[JobRun],
    lib_notes: dict[str, str],
    versions: dict[str, str],
) -> None:
    # --- quality
    tiles, used = natural_tiles()
    natural = diagonal_free_max(model, tiles)
    best_tiles = tiles[natural[1]]
    save_grid("natural best tiles", best_tiles)
    qual: dict[str, tuple[float, list[float]]] = {}
    for name, imgs in images.items():
        qual[name] = quality(model, imgs, natural[0])
        save_grid(name, imgs)

    fv = runs[SERVICE].median
    floor = runs[FLOOR].median
    rows = []
    for name, s in runs.items():
        q = qual.get(name)
        rows.append(
            [
                name,
                len(s.seconds),
                fmt_s(s.median),
                fmt_s(s.p90),
                "1.00" if name == SERVICE else f"{s.median / fv:.2f}",
                f"{s.median / floor:.2f}",
                f"{q[0]:.2f}" if q else "",
                verdict(fv / floor, TARGET) if name == SERVICE else "",
            ]
        )
    for lib, note in lib_notes.items():
        if lib not in runs:
            rows.append([lib, 0, "", "", "", "", "", note[:160]])
    print_table(
        "1. Time to a finished job (median s over the timed rounds) and the quality it reaches",
        [
            "method",
            "n",
            "median s",
            "p90 s",
            "/ featureviz",
            "/ floor",
            "quality",
            "service / floor",
        ],
        rows,
    )
    print(
        "quality = median over the 8 channels of (channel c's mean activation on image c) / "
        f"(the highest any natural {SIZE}x{SIZE} tile reaches); tiles: {len(tiles)} from "
        + ", ".join(used)
    )
    if versions:
        print("comparison venv: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    prow = []
    for name, (_, ratios) in qual.items():
        prow.append([name, *(f"{r:.2f}" for r in ratios)])
    prow.append(["natural max (activation)", *(f"{v:.1f}" for v in natural[0])])
    print_table(
        "2. Quality per channel (reached / best natural tile)",
        ["method", *(f"c{c}" for c in CHANNELS)],
        prow,
    )

    # --- where the service's time goes
    parts = overheads(job_runs)
    med = {k: statistics.median(v) for k, v in parts.items()}
    p90 = {k: percentile(v, 90) for k, v in parts.items()}
    orows = [[k, fmt_ms(med[k]), fmt_ms(p90[k]), note] for k, note in PART_NOTES.items()]
    print_table(
        f"3. Queue overhead of a service job, from its record (median of {len(job_runs)} jobs)",
        ["part", "median ms", "p90 ms", "what"],
        orows,
    )
    for key in ("submit -> first step", "last step -> result read"):
        print(f"{key}: {fmt_ms(med[key])} ms -> {'PASS' if med[key] < 1.0 else 'MISS'} (< 1 s)")

    engine = runs[ENGINE].median
    gap = [
        ["featureviz service", fmt_s(fv), ""],
        ["  - engine in process", fmt_s(engine), f"service overhead {fmt_s(fv - engine)} s"],
        ["  - floor (bare loop)", fmt_s(floor), f"engine extra {fmt_s(engine - floor)} s"],
        [
            "  steady step: service / engine / floor",
            f"{fmt_ms(med['steady step'])} / {fmt_ms(engine / STEPS)} / {fmt_ms(floor / STEPS)}",
            "ms per step (engine, floor: whole run / steps)",
        ],
    ]
    print_table("4. Where the service loses time against the floor", ["", "s", "note"], gap)


def diagonal_free_max(model: Any, tiles: Any) -> tuple[Any, Any]:
    """(highest activation per channel over all tiles, index of that tile)."""
    import numpy as np

    from featureviz.ascent.optimize import evaluate_channels

    acts = evaluate_channels(model, LAYER, CHANNELS, tiles, preprocess="caffe")
    return acts.max(axis=0), np.argmax(acts, axis=0)


PART_NOTES = {
    "POST -> created_at": "client sends POST until the API writes the record",
    "created_at -> started_at": "enqueue, broker, prefork child picks it up",
    "load_s": "model from the worker's cache",
    "first steps' extra": "first progress report minus k steady steps (engine lookup, reset)",
    "submit -> first step": "sum of the three above + POST",
    "steady step": "(optimize_s - first chunk) / (steps - k)",
    "optimize_s": "the whole loop in the worker (incl. progress writes, final evaluation)",
    "export_s": "the PNG grid and the npz (the rest is drawn on request)",
    "store + finish": "results into Redis, status succeeded",
    "poll + read": "finished_at until the client has read result.npz (long polling)",
    "last step -> result read": "export + store + poll",
    "total (client)": "POST until result.npz read",
}


def overheads(job_runs: list[JobRun]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in PART_NOTES}
    for job in job_runs:
        rec, t = job.record, job.record["timings"]
        k = t["first_progress_step"]
        opt_start = rec["started_at"] + t["load_s"]  # run_job starts optimize right after load
        first_chunk = t["first_progress_at"] - opt_start
        rest = STEPS - k
        steady = (t["optimize_s"] - first_chunk) / rest if rest > 0 else first_chunk / k
        opt_end = opt_start + t["optimize_s"]
        extra = first_chunk - k * steady
        values = {
            "POST -> created_at": rec["created_at"] - job.posted_at,
            "created_at -> started_at": rec["started_at"] - rec["created_at"],
            "load_s": t["load_s"],
            "first steps' extra": extra,
            "submit -> first step": rec["started_at"] - job.posted_at + t["load_s"] + extra,
            "steady step": steady,
            "optimize_s": t["optimize_s"],
            "export_s": t["export_s"],
            "store + finish": rec["finished_at"] - opt_end - t["export_s"],
            "poll + read": job.done_at - rec["finished_at"],
            "last step -> result read": job.done_at - opt_end,
            "total (client)": job.seconds,
        }
        for key, v in values.items():
            out[key].append(v)
    return out


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


if __name__ == "__main__":
    main()
