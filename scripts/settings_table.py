"""Print the README's settings table from ``service.settings.Settings`` (one source of truth)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def table() -> str:
    from service.settings import Settings

    rows = ["| variable | default | what it sets |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias.choices[0] if alias is not None else f"FEATUREVIZ_{name.upper()}"
        default = field.default_factory() if field.default_factory else field.default
        shown = "(unset)" if default in (None, [], "") else f"`{default}`"
        rows.append(f"| `{env}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
