"""Ingest from every format, bad input (workspace unchanged), and the paper's released layout."""

from __future__ import annotations

import csv
import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_helpers import make_original, write_jsonl
from workspace_helpers import SHARED

from sbs_data import SbsError
from sbs_data.ingest import import_original, ingest
from sbs_data.workspace import Workspace

NLI = [
    {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0},
    {"premise": "A dog runs.", "hypothesis": "The dog is brown.", "label": 1},
    {"premise": "A dog runs.", "hypothesis": "The dog sleeps.", "label": "contradiction"},
]
CQA = [
    {
        "id": "q1",
        "question": "Where is milk kept?",
        "choices": ["fridge", "oven", "bed", "car", "sea"],
        "answer": "fridge",
    },
    {"id": "q2", "question": "What writes?", "choices": ["pen", "cup", "hat", "dog", "sun"], "answer": "pen"},
]


def state(ws: Workspace) -> tuple:
    return (
        ws.all("SELECT dataset, num, kind, status, row_count FROM sbs_versions ORDER BY 1, 2"),
        ws.one("SELECT count(*) FROM sbs_examples"),
        ws.one("SELECT count(*) FROM sbs_generations"),
    )


def test_ingest_jsonl_with_content_ids(ws, tmp_path):
    v = ingest(ws, str(write_jsonl(tmp_path / "nli.jsonl", NLI)), task="anli", split="train")
    assert v.ref == "nli@1" and v.row_count == 3 and v.kind == "examples"
    labels = [r[0] for r in ws.all("SELECT label FROM examples ORDER BY row_idx")]
    assert labels == ["entailment", "neutral", "contradiction"]
    ids1 = ws.all("SELECT example_id FROM sbs_examples WHERE version_id = ? ORDER BY row_idx", [v.version_id])
    # a second split is added beside the first
    test_rows = [dict(r, premise="A cat sits.") for r in NLI[:2]]
    v2 = ingest(ws, str(write_jsonl(tmp_path / "t.jsonl", test_rows)), task="anli", split="test", name="nli")
    assert v2.ref == "nli@2" and v2.row_count == 5 and v2.parents == (v.version_id,)
    assert v2.stats["rows_by_split"] == {"test": 2, "train": 3}
    # same content -> same ids
    ids_train = ws.all(
        "SELECT example_id FROM sbs_examples WHERE version_id = ? AND split = 'train' ORDER BY row_idx",
        [v2.version_id],
    )
    assert ids_train == ids1
    # the same input in two splits is refused (it would leak), and nothing changes
    with pytest.raises(SbsError, match="already in split 'train'"):
        ingest(ws, str(write_jsonl(tmp_path / "leak.jsonl", NLI[:1])), task="anli", split="test", name="nli")
    # re-ingesting a split replaces it
    v3 = ingest(
        ws, str(write_jsonl(tmp_path / "t2.jsonl", test_rows[:1])), task="anli", split="test", name="nli"
    )
    assert v3.stats["rows_by_split"] == {"test": 1, "train": 3}
    assert ws.diff("nli@2", "nli@3")["removed"] == 1


def test_ingest_csv_with_map_and_id_field(ws, tmp_path):
    f = tmp_path / "q.csv"
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["qid", "q", "options", "gold"])
        for r in CQA:
            w.writerow([r["id"], r["question"], json.dumps(r["choices"]), r["answer"]])
    v = ingest(
        ws,
        str(f),
        task="cqa",
        split="train",
        name="mini",
        mapping={"q": "question", "options": "choices", "gold": "answer"},
        id_field="qid",
    )
    rows = ws.all("SELECT example_id, label, choices FROM examples ORDER BY example_id")
    assert rows[0] == ("q1", "fridge", ["fridge", "oven", "bed", "car", "sea"])
    assert v.config["mapping"] == {"q": "question", "options": "choices", "gold": "answer"}


def test_ingest_parquet(ws, tmp_path):
    f = tmp_path / "cqa.parquet"
    pq.write_table(pa.Table.from_pylist(CQA), f)
    v = ingest(ws, str(f), task="cqa", split="validation")
    assert v.row_count == 2
    assert ws.one("SELECT split FROM examples LIMIT 1") == "validation"


def test_ingest_hf_save_to_disk(ws, tmp_path):
    import datasets

    d = tmp_path / "hfds"
    datasets.Dataset.from_list(NLI[:2] + [dict(NLI[2], label=2)]).save_to_disk(str(d))
    v = ingest(ws, str(d), task="esnli", split="train", name="hfnli")
    assert v.row_count == 3
    dd = tmp_path / "hfdd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(NLI[:1])}).save_to_disk(str(dd))
    with pytest.raises(SbsError, match="--hf-split"):
        ingest(ws, str(dd), task="esnli", split="train", name="hfnli")
    assert ingest(ws, str(dd), task="esnli", split="train", name="hfnli", hf_split="train").row_count == 1


def test_svamp_original_fields_and_split_alias(ws, tmp_path):
    rows = [
        {
            "ID": "chal-1",
            "Body": "Jack had 8 pens.",
            "Question": "He lost 3. How many now?",
            "Equation": "( 8.0 - 3.0 )",
            "Answer": 5.0,
        }
    ]
    v = ingest(
        ws, str(write_jsonl(tmp_path / "svamp.json", rows)), task="svamp", split="valid", id_field="ID"
    )
    assert ws.all("SELECT example_id, split, label FROM examples") == [
        ("chal-1", "validation", "( 8.0 - 3.0 )")
    ]
    assert v.row_count == 1


BAD_CASES = {
    "malformed line": (
        "bad.jsonl",
        '{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": "a", oops}\n',
        r"bad\.jsonl:2: malformed JSON",
    ),
    "missing field": (
        "miss.jsonl",
        '{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": "a", "label": 0}\n',
        r"miss\.jsonl:2: field 'hypothesis'",
    ),
    "unknown label": (
        "lab.jsonl",
        '{"premise": "a", "hypothesis": "b", "label": "maybe-ish"}\n',
        r"lab\.jsonl:1: field 'label': unknown label",
    ),
    "duplicate id": (
        "dup.jsonl",
        '{"uid": "x", "premise": "a", "hypothesis": "b", "label": 0}\n{"uid": "x", "premise": "c", "hypothesis": "d", "label": 1}\n',
        r"dup\.jsonl:2: duplicate example id 'x' \(first seen at .*dup\.jsonl:1\)",
    ),
    "not parquet": ("fake.parquet", "premise,hypothesis\n", r"fake\.parquet: not a parquet file"),
    "binary as jsonl": (
        "bin.jsonl",
        b"\x89PNG\r\n\x1a\n\xff\xfe\x00",
        r"bin\.jsonl:1: not UTF-8 text \(byte 0x89 at column 1\)",
    ),
    "csv too many cells": ("x.csv", "premise,hypothesis,label\na,b,0,extra\n", r"x\.csv:2: more cells"),
    "empty": ("empty.jsonl", "", r"no rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_fails_cleanly_and_changes_nothing(ws, tmp_path, case):
    ingest(ws, str(write_jsonl(tmp_path / "good.jsonl", NLI)), task="anli", split="train", name="nli")
    before = state(ws)
    fname, content, pattern = BAD_CASES[case]
    f = tmp_path / fname
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SbsError, match=pattern):
        ingest(ws, str(f), task="anli", split="train", name="nli")
    assert state(ws) == before


def test_bad_map_and_task_mismatch(ws, tmp_path):
    f = write_jsonl(tmp_path / "nli.jsonl", NLI)
    with pytest.raises(SbsError, match="--map nope=premise: no column 'nope'"):
        ingest(ws, str(f), task="anli", split="train", mapping={"nope": "premise"})
    ingest(ws, str(f), task="anli", split="train", name="d")
    with pytest.raises(SbsError, match="is task 'anli', not 'esnli'"):
        ingest(ws, str(f), task="esnli", split="test", name="d")


# ---------------------------------------------------------------------------------------------
# import-original


def test_import_original_layout(ws, tmp_path, caplog):
    made = import_original(ws, make_original(tmp_path), task="svamp")
    warnings = caplog.messages
    assert [v.ref for v in made] == ["mini@1", "mini-palm@1"]
    ex, gen = made
    assert ex.stats["rows_by_split"] == {"test": 3, "train": 5}
    assert gen.parents == (ex.version_id,) and gen.config["teacher"] == "palm-540b"
    assert any("skipping split validation" in w and "mini_valid.json is missing" in w for w in warnings)
    rows = ws.all(
        "SELECT example_id, rationale, pred_label, parse_status, raw FROM generations WHERE split = 'train' ORDER BY example_id"
    )
    assert rows[1][1:4] == ("1 + 2 = 3.", "1 + 2", "ok")
    assert rows[3][3] == "no_answer" and rows[3][4].startswith("I do not know.")  # kept, flagged
    assert ws.one("SELECT count(*) FROM generations WHERE teacher = 'palm-540b'") == 8


def test_import_original_misaligned_changes_nothing(ws, tmp_path):
    folder = make_original(tmp_path)
    (folder / "llm" / "train_CoT_1.json").write_text(json.dumps(["only one"]))
    before = state(ws)
    with pytest.raises(SbsError, match="4 completions for 5 gold rows"):
        import_original(ws, folder, task="svamp")
    assert state(ws) == before


@pytest.mark.skipif(not (SHARED / "cqa").exists(), reason="shared paper data not present")
def test_import_real_cqa_and_svamp(ws):
    cqa = import_original(ws, SHARED / "cqa", task="cqa")
    assert cqa[0].stats["rows_by_split"] == {"test": 1221, "train": 9741}
    assert cqa[1].row_count == 9741 + 1221
    sv = import_original(ws, SHARED / "svamp", task="svamp")
    assert sv[0].stats["rows_by_split"] == {"test": 200, "train": 800}
    assert sv[1].row_count == 1000
    # a few percent of PaLM completions cannot be parsed; they are kept and flagged, not dropped
    bad = ws.one("SELECT count(*) FROM generations WHERE dataset = 'svamp-palm' AND parse_status <> 'ok'")
    assert 0 < bad < 50


# ---------------------------------------------------------------------------------------------
# Small real-world cases: Excel BOMs, stray bytes, odd ids, unstorable text, chunked writes


def test_utf8_bom_csv_and_jsonl(ws, tmp_path):
    f = tmp_path / "excel.csv"
    f.write_bytes("\ufeffid,premise,hypothesis,label\nb1,A dog runs.,An animal moves.,0\n".encode())
    v = ingest(ws, str(f), task="anli", split="train")
    assert v.row_count == 1 and ws.one("SELECT example_id FROM examples") == "b1"
    j = tmp_path / "bom.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + json.dumps(NLI[0]).encode() + b"\n")
    assert ingest(ws, str(j), task="anli", split="train").row_count == 1


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_non_utf8_byte_is_reported_with_its_line(ws, tmp_path, ext):
    f = tmp_path / f"latin1.{ext}"
    if ext == "jsonl":
        good = json.dumps(NLI[0]).encode() + b"\n"
        f.write_bytes(good + good + b'{"premise": "caf\xe9", "hypothesis": "b", "label": 0}\n')
    else:
        f.write_bytes(b"premise,hypothesis,label\na,b,0\nc,d,1\ncaf\xe9,x,0\n")
    before = state(ws)
    with pytest.raises(SbsError, match=rf"latin1\.{ext}:\d: not UTF-8 text \(byte 0xe9 at column \d+\)") as e:
        ingest(ws, str(f), task="anli", split="train")
    assert (":3:" if ext == "jsonl" else ":4:") in str(e.value)
    assert state(ws) == before


def test_nan_and_object_ids_are_refused_with_their_line(ws, tmp_path):
    f = tmp_path / "ids.jsonl"
    f.write_text(
        '{"id": "ok", "premise": "a", "hypothesis": "b", "label": 0}\n'
        '{"id": NaN, "premise": "c", "hypothesis": "d", "label": 0}\n'
        '{"id": {"x": 1}, "premise": "e", "hypothesis": "f", "label": 0}\n'
        '{"qid": true, "premise": "g", "hypothesis": "h", "label": 0}\n'
    )
    with pytest.raises(SbsError) as e:
        ingest(ws, str(f), task="anli", split="train")
    msg = str(e.value)
    assert "ids.jsonl:2: field 'id': an id must be text or a number, not nan" in msg
    assert "ids.jsonl:3: field 'id': an id must be text or a number, not dict" in msg
    with pytest.raises(
        SbsError, match=r"ids\.jsonl:4: field 'qid': an id must be text or a number, not bool"
    ):
        ingest(ws, str(f), task="anli", split="train", id_field="qid", mapping={})
    p = tmp_path / "ids.parquet"
    pq.write_table(
        pa.table(
            {"uid": [1.0, float("nan")], "premise": ["a", "b"], "hypothesis": ["c", "d"], "label": [0, 1]}
        ),
        p,
    )
    with pytest.raises(SbsError, match=r"ids\.parquet:row 1: field 'uid': .* not nan"):
        ingest(ws, str(p), task="anli", split="train")
    assert state(ws) == ([], 0, 0)


def test_a_nan_or_infinite_input_is_refused_with_file_line_and_field(ws, tmp_path):
    f = tmp_path / "nan.jsonl"
    f.write_text(
        '{"premise": "a", "hypothesis": "b", "label": 0}\n'
        '{"premise": NaN, "hypothesis": "d", "label": 0}\n'
        '{"premise": "e", "hypothesis": -Infinity, "label": 0}\n'
    )
    with pytest.raises(SbsError) as e:
        ingest(ws, str(f), task="anli", split="train")
    msg = str(e.value)
    assert "nan.jsonl:2: field 'premise': expected text, got nan" in msg
    assert "nan.jsonl:3: field 'hypothesis': expected text, got -inf" in msg
    p = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"input": [1.5, float("nan")], "label": ["1", "2"]}), p)
    with pytest.raises(SbsError, match=r"nan\.parquet:row 1: field 'input': expected text, got nan"):
        ingest(ws, str(p), task="svamp", split="train")
    assert state(ws) == ([], 0, 0)


def test_unstorable_text_is_repaired_counted_and_warned(ws, tmp_path, caplog):
    f = tmp_path / "sur.jsonl"
    f.write_text(
        '{"premise": "lone \\ud800 half", "hypothesis": "nul\\u0000here", "label": 0}\n'
        + json.dumps(NLI[1])
        + "\n"
        + '{"premise": "pair \\ud83d\\ude00", "hypothesis": "\\udfff", "label": 2}\n'
    )
    v = ingest(ws, str(f), task="anli", split="train")
    warnings = caplog.messages
    assert v.row_count == 3 and len(warnings) == 1 and "2 row(s)" in warnings[0]
    texts = [r[0] for r in ws.all("SELECT input_text FROM examples ORDER BY row_idx")]
    assert "lone \ufffd half" in texts[0] and "nulhere" in texts[0] and "\ufffd" in texts[2]
    assert "pair 😀" in texts[2]
    stats = json.loads(ws.one("SELECT stats FROM sbs_runs WHERE command LIKE 'ingest%'"))
    assert stats["repaired_rows"] == 2 and stats["repaired_row_idx"] == [0, 2] and stats["rows"] == 3


def test_chunked_ingest_is_all_or_nothing_and_finds_duplicates_across_chunks(ws, tmp_path):
    rows = [{"uid": f"u{i}", "premise": f"p{i}", "hypothesis": "h", "label": i % 3} for i in range(9)]
    v = ingest(ws, str(write_jsonl(tmp_path / "a.jsonl", rows)), task="anli", split="train", chunk_rows=2)
    assert v.row_count == 9 and ws.one("SELECT max(row_idx) FROM examples") == 8
    before = state(ws)
    for file, last, match in [
        (
            "b.jsonl",
            dict(rows[1], premise="other"),
            r"b\.jsonl:8: duplicate example id 'u1' \(first seen at .*b\.jsonl:2\)",
        ),
        ("c.jsonl", {"uid": "z", "premise": "p"}, r"c\.jsonl:8: field 'hypothesis'"),
    ]:  # seven good rows, then a bad one in the fourth chunk
        path = write_jsonl(tmp_path / file, [*rows[:7], last])
        with pytest.raises(SbsError, match=match):
            ingest(ws, str(path), task="anli", split="train", name="a", chunk_rows=2)
    assert state(ws) == before
    leak = [dict(rows[5], label=0)]
    with pytest.raises(
        SbsError, match=r"leak\.jsonl:1: duplicate example id 'u5': already in split 'train' of a@1"
    ):
        ingest(ws, str(write_jsonl(tmp_path / "leak.jsonl", leak)), task="anli", split="test", name="a")
    assert state(ws) == before


def test_an_overlong_line_is_refused_by_file_and_line_after_reading_at_most_the_cap(
    ws, tmp_path, monkeypatch
):
    import io

    import sbs_data.ingest as ingest_mod

    monkeypatch.setattr(ingest_mod, "MAX_LINE_BYTES", 1000)
    ok = {"premise": "p" * 900, "hypothesis": "h", "label": 0}  # a line just under the cap
    for ext in ("jsonl", "csv"):
        f = tmp_path / f"long.{ext}"
        if ext == "jsonl":
            f.write_text(json.dumps(ok) + "\n" + json.dumps({**ok, "premise": "p" * 5000}) + "\n")
        else:
            f.write_text("premise,hypothesis,label\n" + "p" * 900 + ",h,0\n" + "p" * 5000 + ",h,0\n")
        with pytest.raises(SbsError, match=rf"long\.{ext}:\d: line longer than 1,000 bytes"):
            ingest(ws, str(f), task="anli", split="train")
    assert state(ws) == ([], 0, 0)
    # bounded memory: a line with no end is read only up to the cap
    fh = io.BytesIO(b"x" * 10_000_000)
    with pytest.raises(SbsError, match="<big>:1: line longer"):
        list(ingest_mod._lines("<big>", fh))
    assert fh.tell() == 1001


def test_chunks_are_bounded_by_bytes_as_well_as_rows(tmp_path, monkeypatch):
    import sbs_data.ingest as ingest_mod
    from sbs_data.tasks import get_task

    monkeypatch.setattr(ingest_mod, "CHUNK_BYTES", 10_000)
    rows = [{"premise": f"{i} " + "p" * 2000, "hypothesis": "h", "label": 0} for i in range(20)]
    f = write_jsonl(tmp_path / "big.jsonl", rows)
    checked = ingest_mod._Checked(get_task("anli"), "train", None, None, positional_ids=False)
    sizes = [len(c) for c in checked.chunks(ingest_mod.read_rows(str(f)))]
    assert sum(sizes) == 20 and max(sizes) <= 3  # each row holds ~6 KB of text (input, fields, source)


def test_a_large_json_array_file_is_refused_with_the_way_out(ws, tmp_path, monkeypatch):
    import sbs_data.ingest as ingest_mod

    monkeypatch.setattr(ingest_mod, "MAX_JSON_ARRAY_BYTES", 500)
    f = tmp_path / "arr.json"
    f.write_text(json.dumps(NLI * 10))
    with pytest.raises(
        SbsError, match=r"arr\.json: a JSON array file of [\d,]+ bytes .* write it as JSON Lines"
    ):
        ingest(ws, str(f), task="anli", split="train")
    assert state(ws) == ([], 0, 0)


class _FullDisk:
    """The workspace's connection, but the n-th insert into sbs_examples finds the disk full, as DuckDB says it."""

    def __init__(self, con, path, after: int):
        self._con, self._path, self._left = con, path, after

    def execute(self, sql, *args, **kw):
        if sql.startswith("INSERT INTO sbs_examples"):
            if self._left == 0:
                raise duckdb.IOException(
                    f'IO Error: Could not write file "{self._path}.wal": No space left on device'
                )
            self._left -= 1
        return self._con.execute(sql, *args, **kw)

    def __getattr__(self, name):
        return getattr(self._con, name)


def test_a_full_disk_during_ingest_is_a_clear_error_and_stores_nothing(ws, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sbs_data.cli import app

    write_jsonl(tmp_path / "old.jsonl", NLI[:2])
    ingest(ws, str(tmp_path / "old.jsonl"), task="anli", split="test", name="nli")
    before = state(ws)
    f = write_jsonl(tmp_path / "nli.jsonl", [{**NLI[0], "premise": f"p{i}"} for i in range(50)])
    real = ws.con
    ws.con = _FullDisk(real, ws.path, after=2)  # two chunks land, the third finds the disk full
    try:
        with pytest.raises(SbsError) as e:
            ingest(ws, str(f), task="anli", split="train", name="nli", chunk_rows=10)
    finally:
        ws.con = real
    msg = str(e.value)
    assert (
        msg.startswith(f"{ws.path}: the disk is full (IO Error: Could not write file")
        and "run it again" in msg
    )
    assert state(ws) == before  # the streamed chunks already written are gone again
    assert ws.one("SELECT status FROM sbs_runs ORDER BY started_at DESC LIMIT 1") == "failed"
    # the CLI: one line, exit 1 (an OSError ENOSPC from anywhere, here the reader)
    monkeypatch.setattr(
        "sbs_data.ingest.read_rows",
        lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device", str(tmp_path / "x"))),
    )
    ws.close()  # the CLI opens the workspace itself (closing twice is harmless)
    r = CliRunner().invoke(
        app, ["ingest", str(f), "--task", "anli", "--split", "train", "--db", str(ws.path)]
    )
    assert r.exit_code == 1 and "the disk is full" in r.output and not isinstance(r.exception, OSError), (
        r.output
    )
