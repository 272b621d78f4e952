"""Model records: files content-addressed on disk, metadata in Redis, scoped by owner.

A file lives once at ``<data_dir>/models/<sha256>.<format>`` however many owners upload it;
each owner sees their own record (id derived from owner and sha256), so one key's models are
invisible to another. The inspection made by the sandbox is kept per sha256, so the same bytes
are never loaded in a child twice.

Redis keys::

    fv:model:<id>          JSON record
    fv:models:<owner>      sorted set of ids by creation time
    fv:blob:<sha256>       JSON inspection (layer table, format, ...)
    fv:blobrefs:<sha256>   set of record ids using that file

A record never changes once written, only disappears, so each API process keeps the records it
has read for ``record_ttl`` seconds: the hot path (activations, feature maps) then costs no
Redis round trip. A delete through this process forgets the record at once; one made through
another process is seen here within ``record_ttl``. Misses are never kept, so a model
uploaded anywhere is usable everywhere at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, cast

import redis


def model_id(owner: str, sha256: str) -> str:
    return hashlib.sha256(f"{owner}:{sha256}".encode()).hexdigest()[:24]


class RecordCache:
    """Records read recently, each kept ``ttl`` seconds; at most ``maxsize`` of them."""

    def __init__(self, ttl: float, maxsize: int = 4096) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._items: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ident: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(ident)
            if item is None:
                return None
            if item[0] <= time.monotonic():
                del self._items[ident]
                return None
            return item[1]

    def put(self, ident: str, record: dict[str, Any]) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._items[ident] = (time.monotonic() + self.ttl, record)
            self._items.move_to_end(ident)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def forget(self, ident: str) -> None:
        with self._lock:
            self._items.pop(ident, None)


class ModelStore:
    def __init__(self, client: redis.Redis, directory: Path, *, record_ttl: float = 0.0) -> None:
        self.redis = client
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "incoming").mkdir(exist_ok=True)
        self.records = RecordCache(record_ttl)

    def incoming_path(self) -> Path:
        """A fresh temporary path inside the store's file system (so the final move is atomic)."""
        return self.dir / "incoming" / f"{os.getpid()}-{time.monotonic_ns()}.part"

    def file_path(self, sha256: str, fmt: str) -> Path:
        return self.dir / f"{sha256}.{fmt}"

    def get(self, owner: str, ident: str) -> dict[str, Any] | None:
        """The record if it exists and ``owner`` owns it; callers must not change it."""
        record = self.records.get(ident)
        if record is None:
            raw = self.redis.get(f"fv:model:{ident}")
            if raw is None:
                return None
            record = json.loads(raw)
            self.records.put(ident, record)
        return record if record["owner"] == owner else None

    def find(self, owner: str, sha256: str) -> dict[str, Any] | None:
        return self.get(owner, model_id(owner, sha256))

    def inspection(self, sha256: str) -> dict[str, Any] | None:
        raw = self.redis.get(f"fv:blob:{sha256}")
        return json.loads(raw) if raw else None

    def add(
        self,
        *,
        owner: str,
        sha256: str,
        size: int,
        name: str,
        preprocess: str,
        inspection: dict[str, Any],
        source: Path | None,
    ) -> dict[str, Any]:
        """Store the file (moving ``source`` into place) and the record; return the record."""
        path = self.file_path(sha256, inspection["format"])
        if source is not None and not path.exists():
            os.replace(source, path)
        ident = model_id(owner, sha256)
        record = {
            "id": ident,
            "name": name,
            "owner": owner,
            "sha256": sha256,
            "size": size,
            "format": inspection["format"],
            "preprocess": preprocess,
            "created_at": time.time(),
            "input_shape": inspection["input_shape"],
            "output_shape": inspection.get("output_shape"),
            "params": inspection["params"],
            "keras_version": inspection.get("keras_version"),
            "layers": inspection["layers"],
        }
        pipe = self.redis.pipeline()
        pipe.set(f"fv:blob:{sha256}", json.dumps(inspection))
        pipe.set(f"fv:model:{ident}", json.dumps(record))
        pipe.zadd(f"fv:models:{owner}", {ident: record["created_at"]})
        pipe.sadd(f"fv:blobrefs:{sha256}", ident)
        pipe.execute()
        return record

    def list(self, owner: str) -> list[dict[str, Any]]:
        ids = cast(list[bytes], self.redis.zrange(f"fv:models:{owner}", 0, -1))
        raws = self.redis.mget([f"fv:model:{i.decode()}" for i in ids]) if ids else []
        return [json.loads(r) for r in raws if r]

    def delete(self, record: dict[str, Any]) -> None:
        """Remove the record; the file goes too when no other record uses it."""
        sha = record["sha256"]
        self.records.forget(record["id"])
        pipe = self.redis.pipeline()
        pipe.delete(f"fv:model:{record['id']}")
        pipe.zrem(f"fv:models:{record['owner']}", record["id"])
        pipe.srem(f"fv:blobrefs:{sha}", record["id"])
        pipe.scard(f"fv:blobrefs:{sha}")
        remaining = pipe.execute()[-1]
        if remaining == 0:
            self.redis.delete(f"fv:blob:{sha}")
            self.file_path(sha, record["format"]).unlink(missing_ok=True)
