"""`sbs-data show` (rows to read, through the CLI) and `sbs-data tables` (the views people use)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import DEMO_NLI, run

from sbs_data.show import show
from sbs_data.workspace import Workspace


@pytest.fixture
def db(tmp_path, monkeypatch):
    """The demo's NLI data in the paper's layout (gold + the recorded teacher), scored and filtered."""
    monkeypatch.setenv("COLUMNS", "80")
    path = str(tmp_path / "show.duckdb")
    run("import-original", str(DEMO_NLI), "--task", "anli", "--db", path)
    run("filter", "demo-nli-palm", "--recipe", "strict", "--db", path)
    return path


def test_show_prints_one_wrapped_block_per_row(db):
    out = run("show", "demo-nli-palm@1", "--limit", "2", "--db", db).stdout
    blocks = [b for b in out.split("── ") if b.strip()]
    assert len(blocks) == 2 and blocks[0].startswith("demo-nli-palm@1 · ")
    for name in ("example_id", "gold_label", "pred_label", "input_text", "rationale"):
        assert f"\n{name} " in blocks[0]
    lines = out.splitlines()
    assert max(len(x) for x in lines) <= 80  # wrapped to the terminal, not cut or overflowing
    # the rationale (and the two-line input) take several lines, continued under the value column
    assert any(x.startswith(" " * 14) and x.strip() for x in lines)
    # the examples version shows examples
    ex = run("show", "demo-nli", "-n", "1", "--db", db).stdout
    assert "\nlabel " in ex and "\nrationale" not in ex
    # ...with the row's own fields (columns the task does not read are kept there), and no empty `choices`
    # line for a task with fixed labels
    assert "\nfields " in ex and '"premise"' in ex and "\nchoices" not in ex


def test_show_formats_limit_and_columns(db):
    rows = json.loads(run("show", "demo-nli-palm@1", "-n", "3", "-f", "json", "--db", db).stdout)
    assert len(rows) == 3 and list(rows[0])[:3] == ["example_id", "sample_idx", "split"]
    assert rows == sorted(rows, key=lambda r: (r["example_id"], r["sample_idx"]))
    lines = run("show", "demo-nli-palm@1", "-n", "0", "-f", "jsonl", "-c", "example_id", "--db", db).stdout
    with Workspace.open(db, read_only=True) as ws:
        n = ws.one("SELECT count(*) FROM generations_at('demo-nli-palm@1')")
    assert len(lines.strip().splitlines()) == n
    csv = run("show", "demo-nli", "-n", "1", "-f", "csv", "-c", "example_id,label", "-c", "split", "--db", db)
    assert csv.stdout.splitlines()[0] == "example_id,label,split"
    r = run("show", "demo-nli", "-c", "labl", "--db", db, ok=False)
    assert r.exit_code == 1 and "unknown column(s) 'labl'" in r.output and "label" in r.output


def test_blocks_are_named_by_their_row_when_columns_leave_the_key_out(db):
    """`--columns pred_label` titled every block "demo-nli-palm@1 · " (no example id, no sample): rows of one
    example's samples could not be told apart."""
    out = run("show", "demo-nli-palm@1", "-n", "2", "-c", "pred_label", "--db", db).stdout
    with Workspace.open(db, read_only=True) as ws:
        keys = ws.all(
            "SELECT example_id, sample_idx FROM generations_at('demo-nli-palm@1') ORDER BY ALL LIMIT 2"
        )
    titles = [x for x in out.splitlines() if x.startswith("── ")]
    assert [t.split(" ─")[0] for t in titles] == [f"── demo-nli-palm@1 · {e} #{i}" for e, i in keys]
    assert "\nexample_id" not in out and "\npred_label " in out  # the key is in the title, not a column
    rows = json.loads(
        run("show", "demo-nli-palm@1", "-n", "1", "-c", "pred_label", "-f", "json", "--db", db).stdout
    )
    assert list(rows[0]) == ["pred_label"]


def test_show_selection_rows_with_keep_drop_and_rule(db):
    sel = "demo-nli-palm@3"  # @2 = scores, @3 = the strict selection
    dropped = json.loads(
        run(
            "show", sel, "--where", "NOT keep", "-n", "0", "-f", "json", "-c", "keep,reason,rule", "--db", db
        ).stdout
    )
    with Workspace.open(db, read_only=True) as ws:
        n_dropped = ws.one("SELECT count(*) FROM selections_at(?) WHERE NOT keep", [sel])
    assert len(dropped) == n_dropped > 0
    assert all(r["keep"] is False and r["reason"] for r in dropped)
    by_reason = {r["reason"]: r["rule"] for r in dropped}
    if "gold_agrees" in by_reason:
        assert by_reason["gold_agrees"] == "gold_match = true"
    # scored rows carry their signals, as columns and as one line to read
    block = run("show", sel, "-n", "1", "--where", "reason = 'gold_agrees'", "--db", db).stdout
    assert "\nrule " in block and "gold_match=False" in block and "rationale_hash" not in block


def test_where_is_read_only_one_condition_and_names_unknown_columns(db):
    r = run("show", "demo-nli-palm", "--where", "gold_lable = 'neutral'", "--db", db, ok=False)
    assert r.exit_code == 1 and "unknown column 'gold_lable'" in r.output and "gold_label" in r.output
    for bad in (
        "true); DELETE FROM sbs_versions; SELECT (1",
        "true); CREATE TABLE x AS SELECT (1",
        "true); COPY sbs_versions TO 'leak.csv'; SELECT (1",
    ):
        r = run("show", "demo-nli-palm", "--where", bad, "--db", db, ok=False)
        assert r.exit_code == 1 and "Traceback" not in r.output, bad
    with Workspace.open(db, read_only=True) as ws:
        assert ws.one("SELECT count(*) FROM sbs_versions") == 4
    assert not Path("leak.csv").exists()
    r = run("show", "demo-nli-palm", "--where", "(SELECT count(*) FROM read_csv('http://127.0.0.1:9/x')) > 0",
            "--db", db, ok=False)  # fmt: skip
    assert r.exit_code == 1  # no extension autoload (no network) under the sandbox


def test_show_text_cannot_drive_the_terminal(db):
    with Workspace.open(db) as ws:
        ws.execute(
            "UPDATE sbs_generations SET rationale = ? WHERE example_id = (SELECT min(example_id) FROM sbs_generations)",
            ["red \x1b[31malert\x1b[0m \u202eevil" + " word" * 1000],
        )
    out = run("show", "demo-nli-palm@1", "-n", "1", "--db", db).stdout
    assert "\x1b" not in out and "\u202e" not in out and "\\x1b[31malert" in out and "\\u202e" in out
    assert "more characters; --format json shows all" in out  # capped for reading
    full = json.loads(run("show", "demo-nli-palm@1", "-n", "1", "-f", "json", "--db", db).stdout)
    assert full[0]["rationale"].startswith("red \x1b[31m")  # machine formats keep the text as stored


def test_show_python_api(db):
    with Workspace.open(db, read_only=True) as ws:
        s = show(ws, "demo-nli-palm@3", where="NOT keep", limit=1, columns=["example_id", "reason"])
        assert s.kind == "selection" and s.columns == ["example_id", "reason"] and len(s.rows) == 1
        assert s.total == ws.one("SELECT count(*) FROM selections_at('demo-nli-palm@3') WHERE NOT keep")
        assert "keep" in s.available and "gold_match" in s.available


def test_tables_lists_views_and_hides_internals_unless_all(db):
    names = [t["name"] for t in json.loads(run("tables", "-f", "json", "--db", db).stdout)]
    assert {"examples", "generations", "scores", "selections", "versions"} <= set(names)
    assert not [n for n in names if n.startswith("sbs_")]
    r = run("tables", "--db", db)
    assert "--all lists them" in r.output
    every = {t["name"]: t for t in json.loads(run("tables", "--all", "-f", "json", "--db", db).stdout)}
    assert {"sbs_versions", "sbs_generations", "sbs_latest"} <= set(every) and set(names) < set(every)
    assert every["sbs_versions"]["rows"] == 4
