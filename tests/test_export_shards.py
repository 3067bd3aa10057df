"""Export: shard contract, determinism, splits, labels, quality, funnel, contamination, dataset card, loading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from export_helpers import add_scores, add_selection, build, question
from typer.testing import CliRunner

from sbs_data import SbsError
from sbs_data.export.options import ExportOptions
from sbs_data.export.shards import carve_validation, export
from sbs_data.export.validate import validate_table
from sbs_data.schemas import validate, validator


def _rows(out: Path) -> list[dict]:
    m = json.loads((out / "manifest.json").read_text())
    rows = []
    for info in m["splits"].values():
        for shard in info["shards"]:
            p = out / shard["path"]
            if p.suffix == ".parquet":
                rows += pq.read_table(p).to_pylist()
            else:
                rows += [json.loads(x) for x in p.read_text().splitlines()]
    return rows


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_export_writes_contract_rows_manifest_and_card(ws, tmp_path):
    _, gen = build(ws)
    res = export(
        ws, gen.ref, tmp_path / "out", ExportOptions(validation_fraction=0.25, seed=7, max_rows_per_shard=5)
    )
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    validate(m, "manifest")
    assert m["source"] == gen.ref and m["task"] == "svamp" and m["label_source"] == "gold"
    assert set(m["splits"]) == {"train", "validation", "test"}
    # shards: layout, row counts, hashes
    for split, info in m["splits"].items():
        assert sum(s["rows"] for s in info["shards"]) == info["rows"]
        for s in info["shards"]:
            assert s["path"].startswith(f"{split}/part-") and s["path"].endswith(".parquet")
            assert hashlib.sha256((out / s["path"]).read_bytes()).hexdigest() == s["sha256"]
            assert s["rows"] <= 5
    assert len(m["splits"]["train"]["shards"]) >= 2
    rows = _rows(out)
    assert len(rows) == 32 == m["totals"]["rows"]
    v = validator("shard")
    for r in rows:  # an independent per-row check with jsonschema itself
        assert not list(v.iter_errors(r)), r
        assert r["label"] == r["gold_label"] and r["teacher"] == "fake:teacher-1"
        assert r["rationale"].startswith("We add the two amounts")
    # validation is carved by example: 3 of 12 train examples, both samples together
    by_ex: dict[str, set] = {}
    for r in rows:
        by_ex.setdefault(r["example_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_ex.values())
    val = sorted(e for e, s in by_ex.items() if s == {"validation"})
    assert len(val) == 3 and all(e.startswith("tr") for e in val)
    assert sorted(carve_validation([f"tr{i:03d}" for i in range(12)], 0.25, 7)) == val
    assert m["splits"]["test"]["rows"] == 8
    # sorted within each shard
    keys = [
        (r["example_id"], r["sample_idx"])
        for r in pq.read_table(out / m["splits"]["train"]["shards"][0]["path"]).to_pylist()
    ]
    assert keys == sorted(keys)
    # lineage and totals
    assert [e["ref"] for e in m["lineage"]] == [gen.ref, "sv@1"]
    assert m["lineage"][0]["teachers"] == ["fake:teacher-1"] and m["lineage"][0]["kind"] == "generations"
    assert m["totals"]["generated"] == {
        "generations": 32,
        "prompt_tokens": 3200,
        "completion_tokens": 1600,
        "cost_usd": 0.032,
    }
    assert m["totals"]["exported"]["prompt_tokens"] == 3200
    # the card
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "\nlicense: mit\n" in card
    for needle in ('"predict: "', '"explain: "', "2305.02301", "Filtering funnel", "## Licensing", "hsieh2023distilling",
                   "path: train/part-*.parquet", "num_examples: 8", "fake:teacher-1", "Quality statistics"):  # fmt: skip
        assert needle in card, needle
    assert res.summary_rows()[0]["split"] == "train"


def test_export_is_byte_identical_for_same_version_and_options(ws, tmp_path):
    _, gen = build(ws)
    opts = {"validation_fraction": 0.3, "seed": 3, "max_rows_per_shard": 7}
    export(ws, gen.ref, tmp_path / "a", ExportOptions(**opts))
    export(ws, gen.ref, tmp_path / "b", ExportOptions(**opts))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b and len(a) >= 6
    export(ws, gen.ref, tmp_path / "a", ExportOptions(**opts))  # re-export in place replaces cleanly
    assert _files(tmp_path / "a") == b
    export(ws, gen.ref, tmp_path / "c", ExportOptions(validation_fraction=0.3, seed=4, max_rows_per_shard=7))
    assert _files(tmp_path / "c") != b  # the seed matters
    export(ws, gen.ref, tmp_path / "j1", ExportOptions(file_format="jsonl"))
    export(ws, gen.ref, tmp_path / "j2", ExportOptions(file_format="jsonl"))
    assert _files(tmp_path / "j1") == _files(tmp_path / "j2")
    assert ws.one("SELECT count(*) FROM sbs_exports") == 6


def test_label_source_teacher_and_examples_only(ws, tmp_path):
    ex, gen = build(ws, n_train=4, n_test=0, samples=1)
    ws.con.execute(
        "UPDATE sbs_generations SET pred_label = '99' WHERE version_id = ? AND example_id = 'tr000'",
        [gen.version_id],
    )
    export(ws, gen.ref, tmp_path / "t", ExportOptions(label_source="teacher"))
    rows = {r["example_id"]: r for r in _rows(tmp_path / "t")}
    assert rows["tr000"]["label"] == "99" and rows["tr000"]["gold_label"] == "3 + 1"
    assert rows["tr001"]["label"] == rows["tr001"]["teacher_label"]
    assert "teacher labels agree with gold on 75.0% of 4" in (tmp_path / "t" / "README.md").read_text()
    # an examples-only version exports too: no rationale, sample 0
    export(ws, ex.ref, tmp_path / "e")
    erows = _rows(tmp_path / "e")
    assert len(erows) == 4
    assert all(r["rationale"] is None and r["teacher"] is None and r["sample_idx"] == 0 for r in erows)
    assert all(r["label"] == r["gold_label"] for r in erows)
    with pytest.raises(SbsError, match="examples only"):
        export(ws, ex.ref, tmp_path / "e2", ExportOptions(label_source="teacher"))


def test_quality_signals_from_scores_version(ws, tmp_path):
    _, gen = build(ws, n_train=3, n_test=0, samples=1)
    sc = add_scores(
        ws,
        gen,
        {
            ("tr000", 0): {"parse_ok": True, "words": 12, "vote_share": 0.5},
            ("tr001", 0): {"parse_ok": False, "words": 3, "vote_share": float("nan")},
        },
    )
    export(ws, sc.ref, tmp_path / "q")
    rows = {r["example_id"]: r for r in _rows(tmp_path / "q")}
    q0 = rows["tr000"]["quality"]
    assert q0["parse_ok"] is True and q0["words"] == 12 and q0["vote_share"] == 0.5
    assert q0["gold_match"] is None  # a signal column of the table that this row has no value for
    assert "teacher" not in q0 and "split" not in q0
    assert rows["tr001"]["quality"]["vote_share"] is None  # NaN is not JSON: exported as null
    assert rows["tr002"]["quality"] is None  # not scored
    card = (tmp_path / "q" / "README.md").read_text()
    assert "`parse_ok`" in card and "true for 50.0%" in card


def test_selection_rows_and_funnel(ws, tmp_path):
    _, gen = build(ws, n_train=6, n_test=2, samples=2)
    sel = add_selection(
        ws, gen, {("tr000", 0): "parse_failed", ("tr001", 1): "gold_mismatch", ("tr002", 1): "gold_mismatch"}
    )
    export(ws, sel.ref, tmp_path / "s")
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    keys = {(r["example_id"], r["sample_idx"]) for r in _rows(tmp_path / "s")}
    assert len(keys) == 13 and ("tr000", 0) not in keys and ("tr000", 1) in keys
    assert m["funnel"]["selection"] == [
        {"step": "gold_mismatch", "dropped": 2},
        {"step": "parse_failed", "dropped": 1},
    ]
    assert [e["kind"] for e in m["lineage"]] == ["selection", "generations", "examples"]
    assert "recipe_hash" in m["lineage"][0]
    card = (tmp_path / "s" / "README.md").read_text()
    assert "recipe step `gold_mismatch` | -2 | 14" in card and "| **exported** |  | 13 |" in card


def test_contamination_report_and_drop(ws, tmp_path):
    ex, gen = build(ws, n_train=6, n_test=2, samples=1)
    # tr001 has the same input as a test example; tr003's rationale quotes another test input
    ws.con.execute(
        "UPDATE sbs_examples SET input_text = ? WHERE example_id = 'tr001'", [question(100).upper()]
    )
    ws.con.execute(
        "UPDATE sbs_generations SET rationale = ? WHERE example_id = 'tr003'",
        ["Recall the similar problem: " + question(101) + " There we added; here we add too."],
    )
    export(ws, gen.ref, tmp_path / "c")
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    c = m["contamination"]
    assert c["flagged_rows"] == 2 and c["dropped_rows"] == 0 and c["by_field"] == {"input": 1, "rationale": 1}
    s = {x["example_id"]: x for x in c["samples"]}
    assert s["tr001"]["matched_example_id"] == "te000" and s["tr001"]["overlap"] == 1.0
    assert s["tr003"]["matched_example_id"] == "te001" and s["tr003"]["matched_split"] == "test"
    assert len(_rows(tmp_path / "c")) == 8
    export(ws, gen.ref, tmp_path / "d", ExportOptions(drop_contaminated=True))
    m2 = json.loads((tmp_path / "d" / "manifest.json").read_text())
    ids = {r["example_id"] for r in _rows(tmp_path / "d")}
    assert "tr001" not in ids and "tr003" not in ids and "te000" in ids and len(ids) == 6
    assert m2["contamination"]["dropped_rows"] == 2 and m2["funnel"]["contaminated_dropped"] == 2
    # the similar-but-different questions of the template are not flagged
    assert not {"tr000", "tr002", "tr004", "tr005"} & set(s)


def test_split_aliases_filters_and_errors(ws, tmp_path):
    from workspace_helpers import make_examples

    rows = [
        {"id": f"x{i}", "input": f"What is {i} plus {i}?", "label": f"{i} + {i}", "split": sp}
        for i, sp in enumerate(["train", "dev", "test", "unlabeled"])
    ]
    ex = make_examples(ws, "mix", "svamp", rows)
    with pytest.raises(SbsError, match="unlabeled"):
        export(ws, ex.ref, tmp_path / "a")
    export(ws, ex.ref, tmp_path / "a", ExportOptions(splits=["train", "valid"]))
    rows_out = _rows(tmp_path / "a")
    assert sorted(r["split"] for r in rows_out) == ["train", "validation"]
    assert not (tmp_path / "a" / "test").exists()
    with pytest.raises(SbsError, match="already has a validation split"):
        export(
            ws, ex.ref, tmp_path / "b", ExportOptions(splits=["train", "validation"], validation_fraction=0.5)
        )
    with pytest.raises(SbsError, match="unknown split"):
        export(ws, ex.ref, tmp_path / "b", ExportOptions(splits=["training"]))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(SbsError, match="not part of an sbs-data export"):
        export(ws, ex.ref, tmp_path / "foreign", ExportOptions(splits=["train"]))
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


def test_columnar_validation_rejects_bad_rows():
    good = {
        "example_id": ["a", "b"], "task": ["svamp", "svamp"], "split": ["train", "test"], "input": ["x", "y"],
        "label": ["1", None], "gold_label": ["1", None], "teacher_label": [None, None], "rationale": [None, "r"],
        "teacher": [None, "t"], "sample_idx": pa.array([0, 1], pa.int64()),
        "choices": pa.array([None, ["p", "q"]], pa.list_(pa.string())),
        "quality": pa.array([{"s": 1.0, "ok": True}, None], pa.struct([("s", pa.float64()), ("ok", pa.bool_())])),
        "hinted": [False, True],
    }  # fmt: skip
    assert validate_table(pa.table(good)) == 2
    for col, val, msg in [
        ("example_id", ["a", ""], "example_id"),
        ("split", ["train", "dev"], "split"),
        ("sample_idx", pa.array([0, -1], pa.int64()), "sample_idx"),
        ("input", ["x", None], "input"),
        ("choices", pa.array([None, ["p", None]], pa.list_(pa.string())), "choices"),
    ]:
        with pytest.raises(SbsError, match=msg) as e:
            validate_table(pa.table({**good, col: val}), key_columns=("example_id", "sample_idx"))
        assert "example_id=" in str(e.value)
    with pytest.raises(SbsError, match="does not match schema type"):
        validate_table(pa.table({**good, "sample_idx": ["0", "1"]}))
    with pytest.raises(SbsError, match="does not allow: extra"):
        validate_table(pa.table({**good, "extra": [1, 2]}))


def test_load_dataset_reads_the_folder_both_ways(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    _, gen = build(ws, n_train=8, n_test=2, samples=2)
    sc = add_scores(ws, gen, {("tr000", 0): {"parse_ok": True, "words": 9}})
    export(ws, sc.ref, tmp_path / "pq", ExportOptions(validation_fraction=0.25, max_rows_per_shard=6))
    export(ws, sc.ref, tmp_path / "js", ExportOptions(file_format="jsonl", validation_fraction=0.25))
    expect = {"train": 12, "validation": 4, "test": 4}
    a = datasets.load_dataset("parquet", data_dir=str(tmp_path / "pq"), cache_dir=str(tmp_path / "c1"))
    b = datasets.load_dataset(str(tmp_path / "pq"), cache_dir=str(tmp_path / "c2"))
    c = datasets.load_dataset(str(tmp_path / "js"), cache_dir=str(tmp_path / "c3"))
    d = datasets.load_dataset("json", data_dir=str(tmp_path / "js"), cache_dir=str(tmp_path / "c4"))
    for ds in (a, b, c, d):
        assert {k: len(v) for k, v in ds.items()} == expect
    assert list(b["train"].features) == json.loads((tmp_path / "pq" / "manifest.json").read_text())["columns"]
    row = next(r for r in b["train"] if r["example_id"] == "tr000" and r["sample_idx"] == 0)
    assert row["quality"]["parse_ok"] is True and row["quality"]["words"] == 9
    assert sorted(b["test"]["example_id"]) == sorted(c["test"]["example_id"])
    assert b["train"].features["choices"] == c["train"].features["choices"]


def test_cli_export(tmp_path):
    from sbs_data.cli import app
    from sbs_data.workspace import Workspace

    db = tmp_path / "ws.duckdb"
    with Workspace.open(db) as w:
        _, gen = build(w, n_train=4, n_test=2, samples=1)
    r = CliRunner().invoke(
        app,
        [
            "export",
            gen.ref,
            "--out",
            str(tmp_path / "o"),
            "--db",
            str(db),
            "--format",
            "json",
            "--validation-fraction",
            "0.25",
        ],
    )
    assert r.exit_code == 0, r.output
    start = r.stdout.index("[")
    summary = json.loads(r.stdout[start : r.stdout.rindex("]") + 1])
    assert {s["split"]: s["rows"] for s in summary} == {"train": 3, "validation": 1, "test": 2}
    r = CliRunner().invoke(
        app, ["export", gen.ref, "--out", str(tmp_path / "o"), "--db", str(db), "--shard-format", "csv"]
    )
    assert r.exit_code == 1 and "--shard-format must be one of parquet, jsonl" in r.output


def test_many_rows_stream_into_identical_bytes_whatever_the_batching(ws, tmp_path, monkeypatch):
    """20k rows: shards are written a row group at a time from DuckDB's stream, and the bytes do not depend
    on how DuckDB batches it (speed and memory at 1M rows are benchmarks/scale_chain.py's)."""
    import polars as pl
    from workspace_helpers import make_examples

    from sbs_data.export import shards

    n = 10_000
    ex = make_examples(
        ws,
        "big",
        "svamp",
        [
            {
                "id": f"e{i:06d}",
                "input": question(i),
                "label": "1 + 1",
                "split": "test" if i % 10 == 0 else "train",
            }
            for i in range(n)
        ],
    )
    rows = pl.DataFrame(
        {
            "example_id": [f"e{i:06d}" for i in range(n) for _ in range(2)],
            "sample_idx": [s for _ in range(n) for s in range(2)],
            "split": ["test" if i % 10 == 0 else "train" for i in range(n) for _ in range(2)],
            "teacher": "fake:t",
            "rationale": [
                f"Add the numbers of problem {i} step by step, sample {s}."
                for i in range(n)
                for s in range(2)
            ],
            "pred_label": "1 + 1",
            "parse_status": "ok",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost_usd": 0.0,
        }
    )
    with ws.new_version("big-gen", "generations", {"teacher": "fake:t"}, parents=[ex]) as g:
        ws.append("sbs_generations", g, rows)
    res = export(
        ws, "big-gen@1", tmp_path / "big", ExportOptions(validation_fraction=0.1, max_rows_per_shard=12_000)
    )
    m = res.manifest
    assert m["totals"]["rows"] == 2 * n and m["splits"]["test"]["rows"] == 2_000
    assert m["splits"]["validation"]["examples"] == 900 and m["splits"]["train"]["rows"] == 16_200
    first = pq.ParquetFile(tmp_path / "big" / "train" / "part-00000.parquet")
    assert first.metadata.num_rows == 12_000 and first.metadata.num_row_groups == 1
    keys = [
        (r["example_id"], r["sample_idx"])
        for r in first.read(columns=["example_id", "sample_idx"]).to_pylist()
    ]
    assert keys == sorted(keys)
    stream = ws.stream
    monkeypatch.setattr(ws, "stream", lambda sql, params=None, batch_rows=0: stream(sql, params, 999))
    monkeypatch.setattr(shards, "_ROW_GROUP", 5_000)
    export(
        ws, "big-gen@1", tmp_path / "odd", ExportOptions(validation_fraction=0.1, max_rows_per_shard=12_000)
    )
    assert pq.ParquetFile(tmp_path / "odd" / "train" / "part-00000.parquet").metadata.num_row_groups == 3
    monkeypatch.setattr(shards, "_ROW_GROUP", 16_384)
    export(
        ws, "big-gen@1", tmp_path / "again", ExportOptions(validation_fraction=0.1, max_rows_per_shard=12_000)
    )
    a, b = _files(tmp_path / "big"), _files(tmp_path / "again")
    assert a == b and len(a) == 6


def test_validation_carving_in_sql_matches_the_reference(ws, tmp_path):
    from workspace_helpers import make_examples

    ids = [f"ex-{i}" for i in range(40)] + ["é", "日本", "a'b", "x\u00a0y", "", "🙂"]
    make_examples(
        ws,
        "cv",
        "svamp",
        [
            {"id": e or "empty", "input": question(i), "label": "1", "split": "train"}
            for i, e in enumerate(ids)
        ],
    )
    ids = [e or "empty" for e in ids]
    for fraction, seed in ((0.25, 0), (0.5, 17), (0.01, 3), (0.99, 5)):
        res = export(
            ws, "cv@1", tmp_path / f"o{seed}", ExportOptions(validation_fraction=fraction, seed=seed)
        )
        got = {r["example_id"] for r in _rows(tmp_path / f"o{seed}") if r["split"] == "validation"}
        assert got == carve_validation(ids, fraction, seed), (fraction, seed)
        assert res.manifest["splits"]["validation"]["examples"] == len(got) >= 1


# -- edges of the output folder ----------------------------------------------------------------------


def test_out_refuses_current_folder_root_and_parents(ws, tmp_path, monkeypatch):
    _, gen = build(ws, n_train=2, n_test=1, samples=1)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out, msg in ((".", "current folder"), ("..", "current folder"), ("/", "root folder")):
        with pytest.raises(SbsError, match=msg):
            export(ws, gen.ref, out)
    assert list(work.iterdir()) == []
    r = CliRunner().invoke(app_for_tests(), ["export", gen.ref, "--out", ".", "--db", str(ws.path)])
    assert r.exit_code == 1 and "current folder" in r.output and "Traceback" not in r.output


def test_out_through_a_symlink_exports_into_its_target_and_leaves_no_stray_entries(ws, tmp_path):
    _, gen = build(ws, n_train=2, n_test=1, samples=1)
    target, link = tmp_path / "real", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    export(ws, gen.ref, link)
    again = export(ws, gen.ref, link)  # replaces the previous export: the swap happens in the target
    stray = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("ws.duckdb"))
    assert stray == ["link", "real"]
    assert link.is_symlink() and (target / "manifest.json").is_file() and again.out == target
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "later")
    export(ws, gen.ref, dangling)
    assert dangling.is_symlink() and (tmp_path / "later" / "manifest.json").is_file()
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(SbsError, match="--out .*loop"):
        export(ws, gen.ref, loop)


def app_for_tests():
    from sbs_data.cli import app

    return app


def test_out_check_looks_two_levels_deep_only(ws, tmp_path):
    _, gen = build(ws, n_train=2, n_test=1, samples=1)
    out = tmp_path / "o"
    deep = out / "junk"
    for i in range(30):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (out / "train").mkdir()
    (out / "train" / "notes.txt").write_text("x")
    with pytest.raises(SbsError) as e:
        export(ws, gen.ref, out)
    assert "(junk/, train/notes.txt)" in str(e.value)  # named, not walked into


def test_stale_staging_of_a_killed_export_is_removed_but_a_live_one_kept(ws, tmp_path):
    from filelock import FileLock

    _, gen = build(ws, n_train=2, n_test=1, samples=1)
    out = tmp_path / "o"
    stale = [tmp_path / ".o.tmp-0123abcd", tmp_path / ".o.old-4567ef01", tmp_path / ".o.tmp-a1b2c3_x"]
    for d in stale:
        (d / "train").mkdir(parents=True)
        (d / "train" / "part-00000.parquet").write_bytes(b"half")
    (tmp_path / ".o.export-99999999.lock").write_text("")  # an orphan lock
    live = tmp_path / ".o.tmp-feedface"
    live.mkdir()
    other = tmp_path / ".other.tmp-0123abcd"  # another export folder's: not ours to touch
    other.mkdir()
    with FileLock(tmp_path / ".o.export-feedface.lock"):
        export(ws, gen.ref, out)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == [".o.export-feedface.lock", ".o.tmp-feedface", ".other.tmp-0123abcd"]
    export(ws, gen.ref, out)  # the lock is free now: that staging folder was a killed export's
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".other.tmp-0123abcd"]


def test_export_folder_follows_the_umask(ws, tmp_path):
    import os

    _, gen = build(ws, n_train=2, n_test=1, samples=1)
    old = os.umask(0o022)
    try:
        export(ws, gen.ref, tmp_path / "o")
    finally:
        os.umask(old)
    assert (tmp_path / "o").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "o" / "train").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "o" / "manifest.json").stat().st_mode & 0o777 == 0o644


def test_full_disk_is_a_clear_error_and_leaves_nothing(ws, tmp_path, monkeypatch):
    import errno

    from sbs_data.export import shards

    _, gen = build(ws, n_train=2, n_test=1, samples=1)
    export(ws, gen.ref, tmp_path / "o")
    before = _files(tmp_path / "o")

    def full(self, table):
        raise OSError(errno.ENOSPC, "No space left on device", "train/part-00000.parquet")

    monkeypatch.setattr(shards._ShardWriter, "write", full)
    with pytest.raises(SbsError, match="cannot write the export: No space left on device"):
        export(ws, gen.ref, tmp_path / "o", ExportOptions(max_rows_per_shard=1))
    assert _files(tmp_path / "o") == before  # the previous export is intact
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("ws.")) == ["o"]


def test_read_only_workspace_exports_with_carving_and_contamination(tmp_path):
    """The export's temp tables live in the connection, so a read-only workspace exports too; they are
    gone afterwards."""
    from sbs_data.workspace import Workspace

    db = tmp_path / "w.duckdb"
    with Workspace.open(db) as w:
        _, gen = build(w, n_train=6, n_test=2, samples=1)
        w.execute(
            "UPDATE sbs_examples SET input_text = ? WHERE example_id = 'tr001'", [question(100).upper()]
        )
    with Workspace.open(db, read_only=True) as ro:
        res = export(
            ro, gen.ref, tmp_path / "o", ExportOptions(validation_fraction=0.2, drop_contaminated=True)
        )
        assert res.manifest["funnel"]["contaminated_dropped"] == 1
        assert res.manifest["splits"]["validation"]["rows"] == 1
        assert ro.all("SELECT table_name FROM duckdb_tables() WHERE temporary") == []
