"""The CLI: same --db/--format everywhere, read-only SQL by default, clean errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
from cli_helpers import run
from ingest_helpers import make_original

from sbs_data.cli import app


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "cli.duckdb")
    run("init", "--db", path)
    run("import-original", str(make_original(tmp_path)), "--task", "svamp", "--db", path)
    return path


def test_versions_in_every_format(db):
    rows = json.loads(run("versions", "--db", db, "--format", "json").stdout)
    assert [r["ref"] for r in rows] == ["mini@1", "mini-palm@1"]
    out = run("versions", "mini", "--db", db, "--format", "csv").stdout
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert parsed[0]["ref"] == "mini@1" and parsed[0]["rows"] == "8"
    lines = run("versions", "--db", db, "-f", "jsonl").stdout.strip().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["kind"] == "generations"
    assert "mini-palm@1" in run("versions", "--db", db).stdout
    r = run("versions", "--db", db, "--format", "xml", ok=False)
    assert r.exit_code == 1 and "--format must be one of" in r.output


def test_log_and_diff(db):
    chain = json.loads(run("log", "mini-palm", "--db", db, "-f", "json").stdout)
    assert [c["ref"] for c in chain] == ["mini-palm@1", "mini@1"]
    assert chain[0]["parents"] == "mini@1"
    d = json.loads(run("diff", "mini-palm@1", "mini-palm@1", "--db", db, "-f", "json").stdout)
    assert d["unchanged"] == 8 and d["added"] == d["removed"] == d["changed"] == 0


def test_sql_is_read_only_unless_write(db):
    out = json.loads(run("sql", "SELECT count(*) AS n FROM generations", "--db", db, "-f", "json").stdout)
    assert out == [{"n": 8}]
    r = run("sql", "DELETE FROM sbs_generations", "--db", db, ok=False)
    assert r.exit_code == 1 and "--write" in r.output
    assert json.loads(
        run("sql", "SELECT count(*) AS n FROM sbs_generations", "--db", db, "-f", "json").stdout
    ) == [{"n": 8}]
    run("sql", "CREATE TABLE scratch AS SELECT 1 AS x", "--write", "--db", db)
    r = run("sql", "SELEC nonsense", "--db", db, ok=False)
    assert "SQL error" in r.output


def test_tables_note_tasks(db):
    tables = {t["name"]: t for t in json.loads(run("tables", "--db", db, "-f", "json").stdout)}
    assert tables["generations"]["type"] == "view" and tables["generations"]["rows"] == 8
    run("note", "mini@1", "first import", "--db", db)
    assert json.loads(run("versions", "mini", "--db", db, "-f", "json").stdout)[0]["note"] == "first import"
    names = [t["task"] for t in json.loads(run("tasks", "-f", "json").stdout)]
    assert names == ["esnli", "anli", "cqa", "svamp"]


def test_errors_are_one_clean_line(db, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x"\n')
    r = run("ingest", str(bad), "--task", "svamp", "--split", "train", "--db", db, ok=False)
    assert r.exit_code == 1 and "bad.jsonl:1: malformed JSON" in r.output and "Traceback" not in r.output
    r = run("log", "nope@3", "--db", db, ok=False)
    assert r.exit_code == 1 and "no such version" in r.output


def test_db_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SBS_DB", str(tmp_path / "env.duckdb"))
    run("init")
    assert (tmp_path / "env.duckdb").exists()


def test_db_before_the_command_and_after_wins(db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./sbs.duckdb to fall back on
    monkeypatch.delenv("SBS_DB", raising=False)
    rows = json.loads(run("--db", db, "versions", "-f", "json").stdout)
    assert [r["ref"] for r in rows] == ["mini@1", "mini-palm@1"]
    other = str(tmp_path / "other.duckdb")
    run("--db", other, "init")
    assert json.loads(run("--db", other, "versions", "--db", db, "-f", "json").stdout)[0]["ref"] == "mini@1"
    r = run("--db", db, "versions", "--db", other, "-f", "json")
    assert json.loads(r.stdout) == []
    assert "openai" not in run("--db", db, "cache", "stats", "-f", "json").stdout  # sub-apps see it too
    r = run("--db", str(tmp_path / "missing.duckdb"), "tables", ok=False)
    assert r.exit_code == 1 and "missing.duckdb: no workspace here" in r.output


def test_option_groups_are_declared_once():
    """export/push share ExportOptions, generate/cache explain share PlanOptions: the same flags, once."""
    import typer.main

    cmd = typer.main.get_command(app)

    def flags(*path: str) -> set[str]:
        c = cmd
        for p in path:
            c = c.commands[p]
        return {o for p in c.params if p.param_type_name == "option" for o in p.opts}

    export_flags = {"--shard-format", "--max-rows-per-shard", "--splits", "--validation-fraction", "--seed"}
    export_flags |= {"--label-source", "--drop-contaminated", "--license", "--format", "--db"}
    assert export_flags <= flags("export") and export_flags <= flags("push")
    assert "--report" not in flags("export") | flags("push")
    plan = {"--teacher", "--base-url", "--split", "--limit", "--samples", "--prompt", "--json"}
    plan |= {"--temperature", "--top-p", "--max-tokens", "--seed", "--stop"}
    assert plan <= flags("generate") and plan <= flags("cache", "explain")
    assert "--concurrency" in flags("generate") and "--concurrency" not in flags("cache", "explain")


def test_export_format_is_the_output_format(db, tmp_path):
    out = tmp_path / "exp"
    r = run("export", "mini-palm", "--out", str(out), "--db", db, "--shard-format", "jsonl", "-f", "json")
    summary = json.loads(r.stdout[r.stdout.index("[") :])
    assert {s["split"] for s in summary} == {"train", "test"}
    assert sorted(p.suffix for p in out.rglob("part-*")) == [".jsonl", ".jsonl"]


@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT 1) TO '{tmp}/x.csv'",
        "COPY sbs_runs TO '{tmp}/x.csv'",
        "EXPORT DATABASE '{tmp}/dump'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "ATTACH '{tmp}/other.duckdb' AS o",
        "SET threads = 1",
        "PRAGMA enable_profiling",
        "CALL pragma_version()",
        "IMPORT DATABASE '{tmp}/dump'",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp}/x.csv'",
        "/* hi */ explain (analyze, format json) COPY (SELECT 1) TO '{tmp}/x.csv'",
        "-- hi\n explain analyze (format json) COPY (SELECT 1) TO '{tmp}/x.csv'",
        "SELECT 1; COPY (SELECT 1) TO '{tmp}/x.csv'",
        "CREATE TEMP TABLE t AS SELECT 1",
        "UPDATE EXTENSIONS",
    ],
)
def test_read_only_sql_refuses_every_statement_that_writes(db, tmp_path, query):
    q = query.format(tmp=tmp_path)
    r = run("sql", "--db", db, "--", q, ok=False)
    assert r.exit_code == 1 and "--write" in r.output and "Traceback" not in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.duckdb", "mini"]


def test_read_only_sql_still_reads_and_write_allows_files(db, tmp_path):
    data = tmp_path / "local.csv"
    data.write_text("a,b\n1,2\n")
    out = run("sql", f"SELECT a + b AS s FROM read_csv('{data}')", "--db", db, "-f", "json").stdout
    assert json.loads(out) == [{"s": 3}]
    reads = ("DESCRIBE sbs_runs", "SHOW TABLES", "EXPLAIN ANALYZE (FORMAT json) SELECT 1", "FROM versions")
    for q in reads:
        run("sql", q, "--db", db)
    # no extension is fetched behind a query's back
    r = run("sql", "SELECT * FROM read_csv('https://example.invalid/x.csv')", "--db", db, ok=False)
    assert "httpfs" in r.output and "Failed to download" not in r.output
    run("sql", f"COPY (SELECT 1 AS x) TO '{tmp_path / 'x.csv'}'", "--write", "--db", db)
    assert (tmp_path / "x.csv").read_text().split() == ["x", "1"]


def test_a_workspace_in_use_gives_a_clear_message(tmp_path):
    """The README: while one command writes a workspace, another sbs-data process fails with "in use"."""
    import subprocess
    import sys

    from sbs_data.workspace import Workspace

    db = tmp_path / "busy.duckdb"
    with Workspace.open(db):  # this process holds the workspace, as a running generate would
        r = subprocess.run(
            [sys.executable, "-m", "sbs_data.cli", "init", "--db", str(db)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "the workspace is in use by another sbs-data process" in r.stderr and "Traceback" not in r.stderr
