"""The README documents every setting and the commands a newcomer needs."""

from __future__ import annotations

from pathlib import Path

from scripts.settings_table import table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_settings_table_is_current():
    readme = (ROOT / "README.md").read_text()
    assert table() in readme, "regenerate with: .venv/bin/python scripts/settings_table.py"


def test_readme_opens_with_run_and_test():
    head = (ROOT / "README.md").read_text()[:1200]
    assert "make run" in head and "make test" in head
