"""Property-based tests of the committed OpenAPI spec against a running API, over real HTTP.

Schemathesis (4.x) generates requests for every operation in ``openapi/openapi.json``, valid
and invalid (positive and negative generation modes), sends them to a ``featureviz serve``
subprocess and checks each answer:

- ``not_a_server_error``: never a 5xx;
- ``status_code_conformance``: the status is one the spec documents for the operation;
- ``content_type_conformance``: the content type is one the spec documents for that status;
- ``response_schema_conformance``: the body validates against the documented schema
  (problem+json bodies included).

Here each operation gets a bounded number of examples (``MAX_EXAMPLES``) so the module stays
near two minutes. Path parameters are random ids most of the time (404 problem+json); for the
read-only model views a share of cases use the id of a real uploaded model, so the form fields
(``layers``, ``channels``, ``cmap``, ``scale``...) are explored against a real model, not only
against "not found". The multipart uploads are hard to generate meaningfully (random bytes as
a "file"); they are included and must come back 4xx, never 5xx.

The API under test is a private one (its own data dir and Redis database 7): schemathesis posts
jobs and deletes models, and must not touch the models the other API tests share.

The longer nightly run, against ``make run`` (or any deployment)::

    .venv/bin/featureviz serve --host 127.0.0.1 --port 8000 &
    .venv/bin/schemathesis run openapi/openapi.json --url http://127.0.0.1:8000 \\
        --checks all --max-examples 500 --workers 2

(``--checks all`` adds stateful and negative-data checks that need a long run to mean much.)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.embedded import RedisServer
from tests import builders
from tests.conftest import Service

ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_path(ROOT / "openapi" / "openapi.json")

# /readyz answers 503 by design when no worker listens (this API has none) and documents it;
# every other check still applies to it.
READINESS = "health-ready"

# Operations whose path model_id may be swapped for a real model's id: reads only.
REAL_MODEL_OPERATIONS = {"views-activations", "views-feature-maps", "views-filters", "models-get"}


@pytest.fixture(scope="module")
def schema_api(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/7"}
    service = Service(env, tmp_path_factory.mktemp("schemathesis")).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def real_model(schema_api: Service, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = builders.tiny_convnet(tmp_path_factory.mktemp("st") / "tiny.keras", size=32)
    with schema_api.client() as client, path.open("rb") as fh:
        answer = client.post("/v1/models", files={"file": ("tiny.keras", fh)})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_spec(case: Any, schema_api: Service, real_model: dict[str, Any]):
    operation_id = case.operation.definition.raw.get("operationId")
    path = case.path_parameters or {}
    if (
        operation_id in REAL_MODEL_OPERATIONS
        and "model_id" in path
        and random.Random(repr(case.body) + repr(case.query)).random() < 0.5
    ):
        path["model_id"] = real_model["id"]
    checks = [c for c in CHECKS if operation_id != READINESS or c is not not_a_server_error]
    case.call_and_validate(base_url=schema_api.url, checks=checks, timeout=60)
