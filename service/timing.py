"""``Server-Timing`` for the request's phases, so a client sees where its milliseconds went."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Phases:
    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - start

    def header(self) -> str:
        """``decode;dur=1.1, compute;dur=3.9`` (milliseconds, RFC Server-Timing syntax)."""
        return ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in self.spent.items())
