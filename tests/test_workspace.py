"""Workspace: migrations, versions, lineage, diff, time travel, and all-or-nothing writes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import duckdb
import pytest
from workspace_helpers import make_examples, make_generations

from sbs_data import SbsError
from sbs_data import workspace as wsmod
from sbs_data.workspace import Workspace, parse_ref

SV = [
    {"input": "Ann has 3 apples and gets 4 more. How many?", "label": "( 3.0 + 4.0 )"},
    {"input": "Bo has 10 pens and loses 2. How many?", "label": "( 10.0 - 2.0 )"},
    {"input": "5 boxes hold 6 eggs each. How many eggs?", "label": "( 5.0 * 6.0 )"},
]


def snapshot(ws: Workspace) -> dict:
    return {
        t["name"]: t["rows"]
        for t in ws.tables()
        if t["name"].startswith("sbs_") and t["name"] not in ("sbs_runs",)
    }


def test_fresh_workspace_is_fully_migrated(ws):
    known = [n for n, _, _ in wsmod._migrations()]
    assert ws.schema_version() == max(known)
    applied = [r[0] for r in ws.all("SELECT version FROM sbs_migrations ORDER BY 1")]
    assert applied == known
    names = {t["name"] for t in ws.tables()}
    assert {"versions", "examples", "generations", "selections", "sbs_versions"} <= names


def test_older_workspace_is_migrated_on_open(tmp_path, monkeypatch):
    allm = wsmod._migrations()
    monkeypatch.setattr(wsmod, "_migrations", lambda: allm[:1])
    Workspace.open(tmp_path / "old.duckdb").close()
    monkeypatch.setattr(wsmod, "_migrations", lambda: allm)
    with Workspace.open(tmp_path / "old.duckdb", read_only=True) as ws:  # read-only open migrates first
        assert ws.schema_version() == allm[-1][0]


def _cache_view_columns(ws: Workspace) -> set[str]:
    return {
        r[0] for r in ws.all("SELECT column_name FROM information_schema.columns WHERE table_name = 'cache'")
    }


def test_workspace_at_009_gets_010_and_a_cache_view_with_every_column(tmp_path, monkeypatch):
    """A workspace migrated to 009 (usage_estimated) gets 010 (the Responses API) and the later migrations
    next, and the cache view the last migration defines keeps the columns of all of them."""
    allm = wsmod._migrations()
    assert [(n, name) for n, name, _ in allm[8:10]] == [(9, "usage_estimated"), (10, "responses")]
    monkeypatch.setattr(wsmod, "_migrations", lambda: allm[:9])
    Workspace.open(tmp_path / "at9.duckdb").close()
    monkeypatch.setattr(wsmod, "_migrations", lambda: allm)
    with Workspace.open(tmp_path / "at9.duckdb") as ws:
        assert ws.schema_version() == allm[-1][0]
        cols = _cache_view_columns(ws)
    assert {
        "usage_estimated",
        "teacher_reasoning",
        "service_tier",
        "served_model",
        "repaired",
        "text",
    } <= cols


def test_workspace_migrated_by_main_at_010_gets_011_and_012(tmp_path, monkeypatch):
    """A workspace main's code migrated to 010 (the Responses API: teacher_reasoning, service_tier), with an
    answer in its cache, gets the branch's migrations renumbered after it: 011 (served_model) and 012 (push
    intents). The answer keeps its columns and reads served_model NULL; the cache view has every column."""
    allm = wsmod._migrations()
    assert [(n, name) for n, name, _ in allm[9:12]] == [
        (10, "responses"),
        (11, "served_model"),
        (12, "push_intents"),
    ]
    db = tmp_path / "at10.duckdb"
    monkeypatch.setattr(wsmod, "_migrations", lambda: allm[:10])
    with Workspace.open(db) as ws:
        assert ws.schema_version() == 10
        assert "served_model" not in _cache_view_columns(ws)
        ws.con.execute(
            "INSERT INTO sbs_cache (cache_key, provider, endpoint, model, text, teacher_reasoning, service_tier) "
            "VALUES ('k1', 'openai', 'responses', 'o4-mini', 'an answer', 'a summary', 'flex')"
        )
    monkeypatch.setattr(wsmod, "_migrations", lambda: allm)
    with Workspace.open(db) as ws:
        assert ws.schema_version() == allm[-1][0]  # later migrations (013 verdicts, ...) follow
        applied = ws.all(
            "SELECT version, name FROM sbs_migrations WHERE version BETWEEN 10 AND 12 ORDER BY 1"
        )
        assert [tuple(r) for r in applied] == [(10, "responses"), (11, "served_model"), (12, "push_intents")]
        assert {
            "usage_estimated",
            "teacher_reasoning",
            "service_tier",
            "served_model",
        } <= _cache_view_columns(ws)
        row = ws.all(
            "SELECT text, teacher_reasoning, service_tier, served_model FROM cache WHERE cache_key = 'k1'"
        )
        assert [tuple(r) for r in row] == [("an answer", "a summary", "flex", None)]
        gen_cols = {
            r[0]
            for r in ws.all(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'sbs_generations'"
            )
        }
        assert {"teacher_reasoning", "service_tier", "served_model"} <= gen_cols
        assert ws.all("SELECT count(*) FROM sbs_push_intents")[0][0] == 0


def test_newer_workspace_fails_clearly(tmp_path):
    with Workspace.open(tmp_path / "new.duckdb") as ws:
        ws.con.execute("INSERT INTO sbs_migrations (version, name) VALUES (9999, 'future')")
    with pytest.raises(SbsError, match="newer than this sbs-data"):
        Workspace.open(tmp_path / "new.duckdb")


def test_versions_lineage_and_refs(ws):
    e1 = make_examples(ws, "sv", "svamp", SV)
    e2 = make_examples(ws, "sv", "svamp", SV[:2])
    assert (e1.ref, e2.ref) == ("sv@1", "sv@2")
    assert ws.get("sv").ref == "sv@2"
    assert ws.get("sv@1").row_count == 3
    g = make_generations(
        ws, e1, [{"example_id": "train-0", "raw": "3 + 4 = 7. The answer is (3 + 4)."}], name="sv-t"
    )
    assert g.examples_id == e1.version_id and g.base_id == g.version_id
    chain = [v.ref for v in ws.lineage("sv-t@1")]
    assert chain == ["sv-t@1", "sv@1"]
    assert parse_ref("a-b.c@12") == ("a-b.c", 12)
    for bad in ("x@0", "x@y", "@1", "a b"):
        with pytest.raises(SbsError):
            parse_ref(bad)
    with pytest.raises(SbsError, match="no such version"):
        ws.get("sv@7")
    with pytest.raises(SbsError, match="expected examples"):
        ws.get("sv-t", kinds=("examples",))


def test_failed_write_leaves_nothing(ws):
    make_examples(ws, "sv", "svamp", SV)
    before = snapshot(ws)
    versions_before = ws.versions(include_pending=True)
    with pytest.raises(RuntimeError):
        with ws.new_version("sv", "examples", {"x": 1}, task="svamp") as v:
            ws.con.execute(
                "INSERT INTO sbs_examples (version_id, example_id, split, row_idx, task, input_text, fields) "
                "VALUES (?, 'z', 'train', 0, 'svamp', 'x', '{}')",
                [v.version_id],
            )
            raise RuntimeError("crash mid-write")
    assert snapshot(ws) == before
    assert ws.versions(include_pending=True) == versions_before
    assert ws.next_num("sv") == 2


def _kill_mid_write(db, rows: str, streamed: bool = False) -> None:
    """A workspace at `db`; then, in a fresh interpreter, version `big` of it begun, `rows` run inside its
    `with` block (`ws`, `v`, `pl` at hand) and the process SIGKILLed before the block ends."""
    Workspace.open(db).close()
    script = (
        "import time\nimport polars as pl\nfrom sbs_data.workspace import Workspace\n"
        f"ws = Workspace.open({str(db)!r})\n"
        f'with ws.new_version("big", "examples", {{"x": 1}}, task="svamp", streamed={streamed}) as v:\n'
        + textwrap.indent(textwrap.dedent(rows).strip("\n"), "    ")
        + '\n    print("writing", flush=True)\n    time.sleep(60)\n'
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.1)


def test_killed_process_never_leaves_a_half_version(tmp_path):
    db = tmp_path / "k.duckdb"
    _kill_mid_write(
        db,
        """
        for i in range(200):
            ws.con.execute(
                "INSERT INTO sbs_examples (version_id, example_id, split, row_idx, task, input_text, fields) "
                "VALUES (?, ?, 'train', ?, 'svamp', 'x', '{}')", [v.version_id, f"e{i}", i])
        """,
    )
    with Workspace.open(db, read_only=True) as ws:
        assert ws.versions(include_pending=True) == []
        assert ws.one("SELECT count(*) FROM sbs_examples") == 0
        assert ws.one("SELECT count(*) FROM versions") == 0


def test_time_travel_views_and_macros(ws):
    make_examples(ws, "sv", "svamp", SV)
    make_examples(ws, "sv", "svamp", SV[:1])
    assert ws.one("SELECT count(*) FROM examples WHERE dataset = 'sv'") == 1
    assert ws.one("SELECT count(*) FROM examples_at('sv@1')") == 3
    assert ws.one("SELECT count(*) FROM examples_at('sv@2')") == 1
    assert ws.one("SELECT count(*) FROM examples_at('sv')") == 1
    refs = [r[0] for r in ws.all("SELECT ref FROM versions ORDER BY ref")]
    assert refs == ["sv@1", "sv@2"]


def test_selection_view_hides_dropped_rows(ws):
    e = make_examples(ws, "sv", "svamp", SV)
    g = make_generations(
        ws, e, [{"example_id": f"train-{i}", "raw": f"The answer is {i}."} for i in range(3)], name="gen"
    )
    import polars as pl

    with ws.new_version("gen", "selection", {"recipe": "keep-first"}, parents=[g]) as s:
        ws.append(
            "sbs_selections",
            s,
            pl.DataFrame(
                {
                    "example_id": ["train-0", "train-1", "train-2"],
                    "sample_idx": [0, 0, 0],
                    "keep": [True, False, False],
                    "reason": [None, "r", "r"],
                }
            ),
        )
    s = ws.by_id(s.version_id)
    assert s.row_count == 1 and s.base_id == g.version_id and s.selection_id == s.version_id
    assert ws.one("SELECT count(*) FROM generations WHERE dataset = 'gen'") == 1
    assert ws.one("SELECT count(*) FROM generations_at('gen@1')") == 3
    assert ws.one("SELECT count(*) FROM generations_at('gen@2')") == 1
    assert ws.one("SELECT gold_label FROM generations_at('gen@2')") == "( 3.0 + 4.0 )"
    d = ws.diff("gen@1", "gen@2")
    assert (d["added"], d["removed"], d["changed"], d["unchanged"]) == (0, 2, 0, 1)


def test_diff_reports_added_removed_changed(ws):
    make_examples(ws, "sv", "svamp", SV)
    changed = [dict(SV[0], label="( 3.0 + 5.0 )"), SV[1], {"input": "New one: 2 + 2?", "label": "4"}]
    make_examples(ws, "sv", "svamp", changed)
    d = ws.diff("sv@1", "sv@2")
    # example ids are positional in the builder: train-0 changed label, train-1 same, train-2 changed input
    assert d["added"] == 0 and d["removed"] == 0
    assert d["changed"] == 2 and d["unchanged"] == 1
    make_examples(ws, "sv", "svamp", SV[:2])
    d = ws.diff("sv@1", "sv@3")
    assert (d["added"], d["removed"], d["unchanged"]) == (0, 1, 2)
    d = ws.diff("sv@3", "sv@1")
    assert d["added"] == 1


def test_read_only_connection_refuses_writes(ws, tmp_path):
    make_examples(ws, "sv", "svamp", SV)
    ws.close()
    ro = Workspace.open(tmp_path / "ws.duckdb", read_only=True)
    with pytest.raises(Exception, match="(?i)read.only"):
        ro.con.execute("DELETE FROM sbs_examples")
    with pytest.raises(SbsError, match="read-only"):
        with ro.transaction():
            pass
    ro.close()


def test_missing_workspace_read_only_is_clear(tmp_path):
    with pytest.raises(SbsError, match="no workspace here"):
        Workspace.open(tmp_path / "nope.duckdb", read_only=True)


def test_db_path_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("SBS_DB", raising=False)
    assert str(wsmod.resolve_db_path(None)) == "sbs.duckdb"
    monkeypatch.setenv("SBS_DB", str(tmp_path / "env.duckdb"))
    assert wsmod.resolve_db_path(None) == tmp_path / "env.duckdb"
    assert str(wsmod.resolve_db_path("x.duckdb")) == "x.duckdb"


def test_merge_two_teachers(ws):
    from sbs_data.merge import merge

    e = make_examples(ws, "sv", "svamp", SV)
    a = make_generations(
        ws,
        e,
        [{"example_id": f"train-{i}", "raw": "The answer is 1."} for i in range(3)],
        name="a",
        teacher="t:a",
    )
    b = make_generations(
        ws, e, [{"example_id": "train-0", "raw": "The answer is 2."}], name="b", teacher="t:b"
    )
    m = merge(ws, ["a", "b@1"], "both")
    assert m.kind == "merge" and m.row_count == 4 and m.parents == (a.version_id, b.version_id)
    assert m.examples_id == e.version_id and m.scores_id is None and m.selection_id is None
    rows = ws.all(
        "SELECT example_id, sample_idx, teacher FROM generations WHERE dataset = 'both' ORDER BY 1, 2"
    )
    assert rows[:2] == [("train-0", 0, "t:a"), ("train-0", 1, "t:b")]
    other = make_examples(ws, "other", "svamp", SV[:1])
    c = make_generations(ws, other, [{"example_id": "train-0", "raw": "x"}], name="c")
    with pytest.raises(SbsError, match="different examples versions"):
        merge(ws, ["a", c.ref], "bad")


# -- the SQL idioms the workspace owns ----------------------------------------------------------------


def test_registered_frame_is_always_unregistered(ws):
    import polars as pl

    frame = pl.DataFrame({"x": [1, 2, 3]})
    with ws.registered("_t_frame", frame) as name:
        assert ws.one(f"SELECT sum(x) FROM {name}") == 6
    with pytest.raises(RuntimeError, match="boom"):
        with ws.registered("_t_frame", frame):
            raise RuntimeError("boom")
    with pytest.raises(Exception, match="_t_frame"):
        ws.all("SELECT * FROM _t_frame")


def test_insert_frame_matches_columns_by_name_and_fills_fixed_ones(ws):
    import pyarrow as pa

    ws.execute("CREATE TEMP TABLE _t_ins (a INTEGER, b VARCHAR, c INTEGER)")
    n = ws.insert_frame("_t_ins", pa.table({"b": ["x", "y"], "a": [1, 2]}), {"c": 9})
    assert n == 2
    assert ws.all("SELECT a, b, c FROM _t_ins ORDER BY a") == [(1, "x", 9), (2, "y", 9)]
    cols, rows = ws.query("SELECT a FROM _t_ins ORDER BY a")
    assert cols == ["a"] and rows == [(1,), (2,)]


def test_run_records_ok_failed_interrupted_and_joins_nested_runs(ws):
    with ws.run("cmd ok") as run:
        run.stats["rows"] = 3
        with ws.run("inner") as inner:  # a library call inside another joins its run
            assert inner is run
            inner.stats["inner"] = True
    with pytest.raises(SbsError):
        with ws.run("cmd failed") as run:
            run.stats["partial"] = 1
            raise SbsError("bad thing happened")
    with pytest.raises(KeyboardInterrupt):
        with ws.run("cmd interrupted"):
            raise KeyboardInterrupt
    with ws.run("cmd stopped") as run:
        run.status = "stopped"
    rows = {
        c: (s, json.loads(st), fin is not None)
        for c, s, st, fin in ws.all("SELECT command, status, stats, finished_at FROM sbs_runs")
    }
    assert rows["cmd ok"] == ("ok", {"rows": 3, "inner": True}, True)
    assert rows["cmd failed"] == ("failed", {"partial": 1, "error": "bad thing happened"}, True)
    assert rows["cmd interrupted"][0] == "interrupted" and rows["cmd interrupted"][1]["error"]
    assert rows["cmd stopped"][0] == "stopped"
    assert "inner" not in rows


def test_visible_rows_are_defined_once(ws):
    import polars as pl

    e = make_examples(ws, "sv", "svamp", SV)
    g = make_generations(
        ws, e, [{"example_id": f"train-{i}", "raw": f"The answer is {i}."} for i in range(3)], name="gen"
    )
    with ws.new_version("gen", "selection", {"r": 1}, parents=[g]) as s:
        ws.append(
            "sbs_selections",
            s,
            pl.DataFrame(
                {"example_id": ["train-0", "train-1", "train-2"], "sample_idx": [0, 0, 0]}
            ).with_columns(keep=pl.Series([True, False, True]), reason=pl.Series([None, "r", None])),
        )
    s = ws.by_id(s.version_id)
    src, params = ws.visible(s, alias="g")
    assert [r[0] for r in ws.all(f"SELECT g.example_id FROM {src} ORDER BY 1", params)] == [
        "train-0",
        "train-2",
    ]
    sql, params = ws.rows_query(s, "example_id, split")
    assert ws.all(sql + " ORDER BY 1", params) == [("train-0", "train"), ("train-2", "train")]
    assert len(ws.all(*ws.rows_query(g))) == 3
    assert ws.all(*ws.rows_query(e, "example_id"))[0][0].startswith("train-")
    with pytest.raises(SbsError, match="has no scores"):
        ws.visible(s, "scores")
    batches = list(ws.batches(sql + " ORDER BY 1", params, batch_rows=1))
    assert sum(b.num_rows for b in batches) == 2 and max(b.num_rows for b in batches) == 1


def test_no_module_uses_the_raw_connection_outside_the_workspace():
    """Statements go through Workspace helpers, which never leave a result half-read."""
    import re
    from pathlib import Path

    root = Path(wsmod.__file__).parent
    offenders = []
    for p in sorted(root.rglob("*.py")):
        if p.name == "workspace.py" and p.parent == root:
            continue
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\.con(\.|\)|\s*$|,)", line):
                offenders.append(f"{p.relative_to(root.parent)}:{n}: {line.strip()}")
    assert not offenders, "use the Workspace helpers instead of ws.con:\n" + "\n".join(offenders)


# Table ownership: besides workspace.py and the migrations, a table family is named (as a word anywhere in
# the source, SQL or prose) only by its owning module; everyone else asks that module. Paths are relative
# to sbs_data/. Give a family here when a module takes it over.
TABLE_OWNERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cache": ("generate/cache.py", ("sbs_cache",)),
    "batches": ("generate/batches/store.py", ("sbs_batch_runs", "sbs_batches", "sbs_batch_requests")),
    "verdicts": ("review/store.py", ("sbs_verdicts",)),
}


def _naming(text: str, tables: tuple[str, ...]) -> list[tuple[int, str]]:
    import re

    word = re.compile(r"\b(" + "|".join(re.escape(t) for t in tables) + r")\b")
    return [(n, m.group(1)) for n, line in enumerate(text.splitlines(), 1) for m in word.finditer(line)]


def _trespassers(sources: dict[str, str], owners: dict = TABLE_OWNERS) -> list[str]:
    """`path:line: table (owner)` for each table named outside its owner, workspace.py and migrations/."""
    out = []
    for owner, tables in owners.values():
        for path, text in sorted(sources.items()):
            if path in (owner, "workspace.py") or path.startswith("migrations/"):
                continue
            out += [f"{path}:{n}: {t} (owned by {owner})" for n, t in _naming(text, tables)]
    return out


def test_table_ownership_checker_catches_a_trespasser():
    sources = {
        "generate/cache.py": "SELECT * FROM sbs_cache",
        "generate/batches/store.py": "FROM sbs_batches JOIN sbs_batch_requests; sbs_batch_runs",
        "workspace.py": "sbs_cache sbs_batches",
        "migrations/__init__.py": "sbs_batch_runs",
        "generate/plan.py": "sbs_cache_stats _sbs_batch_stage sbs_batchesx ws.batches()",  # other words
        "quality/report.py": "x = 1\nq = 'SELECT count(*) FROM sbs_batches b'",
        "generate/build.py": "# reads sbs_cache directly",
    }
    assert _trespassers(sources) == [
        "generate/build.py:1: sbs_cache (owned by generate/cache.py)",
        "quality/report.py:2: sbs_batches (owned by generate/batches/store.py)",
    ]


def test_each_table_family_is_named_only_by_its_owner():
    """The store of each table family is one module (plus workspace.py and the migrations)."""
    import re
    from pathlib import Path

    root = Path(wsmod.__file__).parent
    created = {
        m.group(1)
        for f in (root / "migrations").glob("*.sql")
        for m in re.finditer(r"CREATE TABLE (\w+)", f.read_text(encoding="utf-8"))
    }
    sources = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in root.rglob("*.py")}
    for family, (owner, tables) in TABLE_OWNERS.items():
        assert set(tables) <= created, f"{family}: not tables of the migrations: {set(tables) - created}"
        assert owner in sources, f"{family}: no module {owner}"
        # the owner does name every table it owns (so the word match cannot pass by matching nothing)
        assert {t for _, t in _naming(sources[owner], tables)} == set(tables), family
    offenders = _trespassers(sources)
    assert not offenders, "ask the owning module instead of naming its tables:\n" + "\n".join(offenders)


def test_streamed_version_is_invisible_until_done_and_removed_on_failure(ws):
    import polars as pl

    frame = pl.DataFrame(
        {
            "example_id": ["a"],
            "split": ["train"],
            "row_idx": [0],
            "task": ["svamp"],
            "input_text": ["x"],
            "fields": ["{}"],
        }
    )
    with ws.new_version("s", "examples", {"x": 1}, task="svamp", streamed=True) as v:
        ws.append("sbs_examples", v, frame)
        # each write is committed, yet the version is pending: views and `get` do not show it
        assert ws.one("SELECT count(*) FROM examples") == 0 and ws.versions("s") == []
        assert ws.versions("s", include_pending=True)[0].status == "pending"
    assert ws.get("s").row_count == 1 and ws.one("SELECT count(*) FROM examples") == 1
    with pytest.raises(RuntimeError, match="late failure"):
        with ws.new_version("s", "examples", {"x": 2}, task="svamp", streamed=True) as v2:
            ws.append("sbs_examples", v2, frame.with_columns(example_id=pl.lit("b")))
            raise RuntimeError("late failure")
    assert [v.ref for v in ws.versions(include_pending=True)] == ["s@1"]
    assert ws.one("SELECT count(*) FROM sbs_examples") == 1
    with pytest.raises(RuntimeError, match="outside a transaction"):
        with ws.transaction(), ws.new_version("s", "examples", {}, task="svamp", streamed=True):
            pass


def test_killed_streamed_write_is_swept_on_the_next_writable_open(tmp_path):
    db = tmp_path / "k.duckdb"
    _kill_mid_write(
        db,
        """
        for i in range(3):
            ws.append("sbs_examples", v, pl.DataFrame({"example_id": [f"e{i}"], "split": ["train"],
                "row_idx": [i], "task": ["svamp"], "input_text": ["x"], "fields": ["{}"]}))
        """,
        streamed=True,
    )
    with Workspace.open(db, read_only=True) as ro:  # committed chunks of a dead pending version: invisible
        assert ro.one("SELECT count(*) FROM examples") == 0 and ro.versions() == []
    with Workspace.open(db) as ws:  # a writable open removes them
        assert ws.versions(include_pending=True) == []
        assert ws.one("SELECT count(*) FROM sbs_examples") == 0
        # ...but never a streamed version this process is still writing
        with ws.new_version("live", "examples", {}, task="svamp", streamed=True):
            with Workspace.open(db) as again:
                assert [v.ref for v in again.versions(include_pending=True)] == ["live@1"]


def test_close_folds_the_log_in_under_the_cap_and_twice_is_harmless(tmp_path):
    db = tmp_path / "w.duckdb"
    ws = Workspace.open(db)
    ws.execute("SET checkpoint_threshold = '1GiB'")  # keep the rows in the write-ahead log until close
    ws.execute("CREATE TABLE t AS SELECT range AS i, repeat('x', 100) AS s FROM range(20000)")
    assert (tmp_path / "w.duckdb.wal").exists()
    seen = []
    real = ws.execute

    def execute(sql, params=None):
        seen.append((sql, ws.one("SELECT current_setting('memory_limit')")))
        real(sql, params)

    ws.execute = execute
    ws.close()
    assert [lim for sql, lim in seen if sql == "CHECKPOINT"] == ["256.0 MiB"]
    assert not (tmp_path / "w.duckdb.wal").exists()
    ws.close()  # a second close is a no-op
    with Workspace.open(db, read_only=True) as ro:
        assert ro.one("SELECT count(*) FROM t") == 20000
        ro.close()


def test_a_version_never_lands_in_a_dataset_of_another_kind_or_task(ws):
    ex = make_examples(ws, "toy", "anli", [{"premise": "a", "hypothesis": "b", "label": 0}])
    with pytest.raises(SbsError, match=r"dataset 'toy' holds examples \(toy@1\), not teacher rows"):
        make_generations(ws, ex, [{"example_id": "train-0", "raw": "So the answer is neutral."}], name="toy")
    gen = make_generations(ws, ex, [{"example_id": "train-0", "raw": "So the answer is neutral."}])
    with pytest.raises(SbsError, match=r"dataset 'toy-gen' holds generations \(toy-gen@1\), not examples"):
        make_examples(ws, "toy-gen", "anli", [{"premise": "a", "hypothesis": "b", "label": 0}])
    with pytest.raises(SbsError, match=r"dataset 'toy-gen' is task 'anli' \(toy-gen@1\), not 'svamp'"):
        sv = make_examples(ws, "sv", "svamp", [{"input": "1 and 2?", "label": "1 + 2"}])
        make_generations(ws, sv, [{"example_id": "train-0", "raw": "The answer is 3."}], name="toy-gen")
    assert [v.ref for v in ws.versions()] == ["sv@1", "toy@1", gen.ref]


def test_a_truncated_or_foreign_workspace_file_is_one_clear_error(tmp_path):
    from typer.testing import CliRunner

    from sbs_data.cli import app

    db = tmp_path / "ws.duckdb"
    with Workspace.open(db) as w:
        make_examples(
            w, "toy", "anli", [{"premise": f"p{i} " * 40, "hypothesis": "h", "label": 0} for i in range(3000)]
        )
    whole = db.read_bytes()
    damaged = 0
    for cut in sorted({len(whole) * k // 16 // 4096 * 4096 for k in range(1, 16)}):
        bad = tmp_path / f"cut{cut}.duckdb"
        bad.write_bytes(whole[:cut])
        for read_only in (True, False):
            try:
                with Workspace.open(bad, read_only=read_only) as w:
                    assert w.one("SELECT count(*) FROM examples") == 3000  # the cut spared every page read
            except SbsError as e:
                damaged += 1
                assert str(e).startswith(f"{bad}: not a DuckDB workspace or corrupt (")
                assert "restore it from a backup" in str(e)
        r = CliRunner().invoke(app, ["versions", "--db", str(bad)])
        assert r.exit_code == 0 or (r.exit_code == 1 and "not a DuckDB workspace or corrupt" in r.output)
        assert not isinstance(r.exception, duckdb.Error), r.output  # never a traceback
    assert damaged >= 4
    foreign = tmp_path / "notes.duckdb"
    foreign.write_text("hello")
    with pytest.raises(SbsError, match=rf"^{re.escape(str(foreign))}: not a DuckDB workspace or corrupt"):
        Workspace.open(foreign)
