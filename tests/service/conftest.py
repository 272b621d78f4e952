"""Model files and images shared by the API tests (built once per session)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import builders


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "convnet": builders.lecture_convnet(d / "convnet.keras"),
        "tiny": builders.tiny_convnet(d / "tiny.keras"),
        "keras2": builders.keras2_h5(d / "xray.h5"),
        "nested": builders.nested_conv_base(d / "cats_and_dogs.keras"),
    }


def upload(client: httpx.Client, path: Path, **form: str) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post("/v1/models", files={"file": (path.name, fh)}, data=form)


@pytest.fixture(scope="session")
def uploaded(api: Any, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    with api.client() as client:
        out = {}
        for name, path in files.items():
            answer = upload(client, path)
            assert answer.status_code in (200, 201), answer.text
            out[name] = answer.json()
        return out
