"""Model records: read once per ``model_record_ttl`` per API process, never kept when missing.

Store-level tests use the real test Redis; the last one runs a second API process on the same
Redis and model store, as a second replica would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.model_store import ModelStore
from tests import builders
from tests.conftest import Service, upload

INSPECTION = {
    "format": "keras",
    "input_shape": [None, 8, 8, 3],
    "output_shape": [None, 2],
    "params": 10,
    "keras_version": "3",
    "layers": [],
}


@pytest.fixture()
def client(redis_server: Any) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_server.url)
    yield conn
    conn.close()


def add(store: ModelStore, owner: str = "alice", sha: str = "a" * 64) -> dict[str, Any]:
    return store.add(
        owner=owner,
        sha256=sha,
        size=1,
        name="m",
        preprocess="none",
        inspection=INSPECTION,
        source=None,
    )


def test_a_read_record_is_reused_until_its_ttl(client: redis.Redis, tmp_path: Path) -> None:
    store = ModelStore(client, tmp_path, record_ttl=0.5)
    record = add(store, sha="1" * 64)
    assert store.get("alice", record["id"]) == record
    # another process deletes it: this one still has it for the rest of the ttl ...
    client.delete(f"fv:model:{record['id']}")
    assert store.get("alice", record["id"]) == record
    # ... and not after
    time.sleep(0.6)
    assert store.get("alice", record["id"]) is None


def test_misses_are_not_kept(client: redis.Redis, tmp_path: Path) -> None:
    store = ModelStore(client, tmp_path, record_ttl=60)
    other = ModelStore(client, tmp_path, record_ttl=60)  # another API process
    ident = "0" * 24
    assert store.get("alice", ident) is None
    record = add(other, sha="2" * 64)
    assert store.get("alice", record["id"]) == record


def test_a_delete_here_is_seen_here_at_once(client: redis.Redis, tmp_path: Path) -> None:
    store = ModelStore(client, tmp_path, record_ttl=60)
    record = add(store, sha="3" * 64)
    assert store.get("alice", record["id"]) == record
    store.delete(record)
    assert store.get("alice", record["id"]) is None


def test_a_kept_record_is_still_invisible_to_other_owners(
    client: redis.Redis, tmp_path: Path
) -> None:
    store = ModelStore(client, tmp_path, record_ttl=60)
    record = add(store, sha="4" * 64)
    assert store.get("alice", record["id"]) == record
    assert store.get("mallory", record["id"]) is None


def test_ttl_zero_reads_redis_every_time(client: redis.Redis, tmp_path: Path) -> None:
    store = ModelStore(client, tmp_path, record_ttl=0)
    record = add(store, sha="5" * 64)
    assert store.get("alice", record["id"]) == record
    client.delete(f"fv:model:{record['id']}")
    assert store.get("alice", record["id"]) is None


def test_second_replica_answers_404_once_the_file_is_gone(
    api: Service, redis_server: Any, tmp_path: Path
) -> None:
    """Replica B read the record, A deleted the model: B never answers 5xx for it."""
    env = {"REDIS_URL": redis_server.url, "FEATUREVIZ_MODEL_RECORD_TTL": "60"}
    replica = Service(env, api.data_dir).start()
    try:
        path = builders.tiny_convnet(tmp_path / "replicated.keras", size=24, seed=11)
        png = builders.png_bytes(builders.photo((24, 24)))
        with api.client() as a, replica.client() as b:
            record = upload(a, path).json()
            assert b.get(f"/v1/models/{record['id']}").status_code == 200  # B keeps the record
            assert a.delete(f"/v1/models/{record['id']}").status_code == 204
            assert a.get(f"/v1/models/{record['id']}").status_code == 404
            stale = b.get(f"/v1/models/{record['id']}")  # within B's ttl: the documented window
            assert stale.status_code == 200
            gone = b.post(
                f"/v1/models/{record['id']}/activations",
                files={"image": ("x.png", png, "image/png")},
            )
            assert gone.status_code == 404, gone.text
            assert gone.headers["content-type"] == "application/problem+json"
            assert b.get(f"/v1/models/{record['id']}").status_code == 404  # B forgot it
            assert httpx.get(replica.url + "/healthz").status_code == 200
    finally:
        replica.stop()
