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


def test_schema_doc_names_every_generation_column(ws):
    """Each column of `sbs_generations` (beyond its key) is named in its row of docs/schema.md."""
    doc = (ROOT / "docs" / "schema.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `sbs_generations` |"))
    cols = [
        r[0]
        for r in ws.all(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'sbs_generations'"
        )
    ]
    key = {"version_id", "example_id", "sample_idx", "split"}
    missing = [c for c in cols if c not in key and not re.search(rf"\b{c}\b", row)]
    assert not missing, f"docs/schema.md's sbs_generations row does not name: {missing}"


def test_readme_mentions_every_command():
    readme = (ROOT / "README.md").read_text()
    commands = sorted(get_command(app).commands)
    missing = [c for c in commands if not re.search(rf"sbs-data {re.escape(c)}\b", readme)]
    assert not missing, f"README.md does not show: {missing}"


def test_readme_python_api_example_runs(server, tmp_path, monkeypatch):
    """The README's Python API example, as printed, against the loopback stand-in."""
    from generate_helpers import cqa_examples

    from sbs_data.workspace import Workspace

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### The Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    with Workspace.open(tmp_path / "sbs.duckdb") as ws:
        cqa_examples(ws, name="cqa", n=12)
    exec(compile(code, "README.md", "exec"), {})
    with Workspace.open(tmp_path / "sbs.duckdb") as ws:
        kinds = {v.kind for v in ws.versions()}
    assert {"examples", "generations"} <= kinds
    assert (tmp_path / "out" / "cqa" / "manifest.json").is_file()
    assert server.count == 24  # 12 examples x 2 samples; rationalize found no wrong rows to ask again
