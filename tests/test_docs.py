"""Docs stay true: every table and view of a fresh workspace is documented, and the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from sbs_data.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_schema_doc_covers_every_table_and_view(ws):
    doc = (ROOT / "docs" / "schema.md").read_text()
    missing = [t["name"] for t in ws.tables() if f"`{t['name']}" not in doc]
    assert not missing, f"docs/schema.md does not describe: {missing}"


def test_readme_mentions_every_command():
    readme = (ROOT / "README.md").read_text()
    commands = sorted(get_command(app).commands)
    missing = [c for c in commands if not re.search(rf"sbs-data {re.escape(c)}\b", readme)]
    assert not missing, f"README.md does not show: {missing}"
