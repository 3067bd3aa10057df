"""Docs stay true: every table and view of a fresh workspace is documented, and the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from sbs_data.cli import app
from sbs_data.workspace import Workspace

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


def _readme_commands(after: str) -> list[list[str]]:
    """The `sbs-data ...` lines of the first bash block after the line `after`, as argv lists (comments and
    the program name dropped)."""
    import shlex

    section = (ROOT / "README.md").read_text().split(after, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [
        shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("sbs-data ")
    ]


def test_readme_own_task_in_five_commands_runs_as_written(server, tmp_path, monkeypatch):
    """The README block "Your own task in five commands", as printed, on a topic task's rows with a `part` column."""
    import json

    from cli_helpers import run as cli

    monkeypatch.chdir(tmp_path)
    topics = ["sports", "politics", "tech"]
    (tmp_path / "topics.yaml").write_text(
        f'name: topics\ninput_fields: [headline]\ntemplate: "Headline: {{headline}}"\nlabel_space: fixed\n'
        f"labels: [{', '.join(topics)}]\n"
    )
    rows = [
        {"headline": f"Headline {i}", "label": topics[i % 3], "part": "train" if i < 12 else "test"}
        for i in range(15)
    ]
    (tmp_path / "news.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    commands = _readme_commands("Your own task in five commands:")
    assert [c[0] for c in commands] == ["ingest", "prompt", "generate", "generate", "rationalize"]
    for argv in commands:
        cli(*argv, "--db", tmp_path / "ws.duckdb")
    with Workspace.open(tmp_path / "ws.duckdb") as ws:
        assert ws.get("news").stats["rows_by_split"] == {"test": 3, "train": 12}
        assert ws.get("news-gpt-4o-mini-rationalized").kind == "generations"


def test_readme_scoring_and_filtering_commands_run_as_written(server, tmp_path, monkeypatch):
    """The "Scoring and filtering" block, as printed (judge included), on a cqa generation."""
    from cli_helpers import run as cli
    from generate_helpers import cqa_examples

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "ws.duckdb"
    with Workspace.open(db) as ws:
        cqa_examples(ws, name="cqa", n=8)
    cli("generate", "cqa", "--teacher", "openai:gpt-4o-mini", "--db", db)
    commands = _readme_commands("### Scoring and filtering")
    assert [c[0] for c in commands] == ["score", "score", "filter", "report", "show"]
    for argv in commands:
        r = cli(*argv, "--db", db)
    assert (tmp_path / "report.html").is_file()
    assert "rows" in r.output  # show's footer: "N of M rows"
