"""Write openapi/openapi.json from the app (``make openapi``); a test fails when it drifts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def spec_text() -> str:
    from service.main import create_app
    from service.settings import Settings

    app = create_app(Settings(redis_url="redis://unused:6379/0"))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    (ROOT / "openapi" / "openapi.json").write_text(spec_text())
