"""Review verdicts: the store (upsert, validation), `review apply` (a selection with rule `review`) and
`review status`, through the library and the CLI."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from review_helpers import build_reviewable
from typer.testing import CliRunner

from sbs_data import SbsError
from sbs_data.cli import app
from sbs_data.export.options import ExportOptions
from sbs_data.export.shards import export
from sbs_data.review import store
from sbs_data.workspace import Workspace

runner = CliRunner()


def _export_keys(ws, ref, out):
    export(ws, ref, out, ExportOptions(validation_fraction=None))
    m = json.loads((out / "manifest.json").read_text())
    keys = set()
    for info in m["splits"].values():
        for shard in info["shards"]:
            keys |= {
                (r["example_id"], r["sample_idx"]) for r in pq.read_table(out / shard["path"]).to_pylist()
            }
    return keys


def test_last_verdict_wins_and_sample_none_means_every_sample(ws):
    _, _, sel = build_reviewable(ws)
    store.record(ws, sel.ref, "tr001", "drop", sample=0, reason="wrong step")
    store.record(ws, sel.ref, "tr001", "keep", sample=0)
    out = store.verdicts(ws, sel.ref)
    assert [(r["example_id"], r["sample"], r["verdict"], r["reason"]) for r in out] == [
        ("tr001", 0, "keep", None)
    ]
    stored = store.record(ws, sel.ref, "tr002", "drop", reason="  x" * 600)
    assert [(r["sample"], r["verdict"]) for r in stored] == [(0, "drop"), (1, "drop")]
    assert len(stored[0]["reason"]) == store.REASON_MAX_CHARS
    # the verdicts view names the version
    assert ws.all("SELECT ref, count(*) FROM verdicts GROUP BY ref") == [(sel.ref, 3)]


@pytest.mark.parametrize(
    "args, message",
    [
        (("rv-sel@9", "tr001", "drop"), "no such version"),
        (("rv@1", "tr001", "drop"), "holds examples"),
        (("rv-sel@1", "nope", "drop"), "no example 'nope'"),
        (("rv-sel@1", "tr001", "maybe"), "keep or drop"),
        (("rv-sel@1", "", "drop"), "example_id"),
    ],
)
def test_bad_verdicts_are_refused_and_nothing_is_stored(ws, args, message):
    build_reviewable(ws)
    with pytest.raises(SbsError, match=message):
        store.record(ws, *args)
    with pytest.raises(SbsError, match="has no sample 7"):
        store.record(ws, "rv-sel@1", "tr001", "keep", sample=7)
    with pytest.raises(SbsError, match="sample must be an integer"):
        store.record(ws, "rv-sel@1", "tr001", "keep", sample="0")  # type: ignore[arg-type]
    assert store.verdicts(ws, "rv-sel@1") == []


def test_apply_drops_judged_rows_with_rule_review_and_keeps_earlier_drops(ws, tmp_path):
    gen, scored, sel = build_reviewable(ws)
    # tr000 sample 1 was dropped by the recipe (rule gold); a keep verdict does not bring it back
    store.record(ws, sel.ref, "tr000", "keep", sample=1)
    store.record(ws, sel.ref, "tr001", "drop", sample=0, reason="restates the question")
    store.record(ws, sel.ref, "tr002", "keep", sample=0)
    res = store.apply(ws, sel.ref, "rv-reviewed")
    v = res.version
    assert v.kind == "selection" and v.parents == (sel.version_id,)
    assert v.base_id == gen.version_id and v.scores_id == scored.version_id
    assert res.counts == {
        "rows": 26,
        "kept_before": 21,
        "reviewed": 3,
        "keep": 2,
        "drop": 1,
        "dropped_by_review": 1,
        "kept": 20,
    }
    assert v.row_count == 20
    assert v.config["op"] == "review" and v.config["source"] == sel.ref
    assert v.config["review"]["counts"] == res.counts and len(v.config["review"]["verdicts_hash"]) == 16
    reasons = dict(
        ((e, s), r)
        for e, s, r in ws.all(
            "SELECT example_id, sample_idx, reason FROM sbs_selections WHERE version_id = ? AND NOT keep",
            [v.version_id],
        )
    )
    assert reasons[("tr001", 0)] == "review"
    assert reasons[("tr000", 1)] == "gold"  # the earlier rule stays
    assert len(reasons) == 6
    # lineage: the reviewed version, then its ancestors
    assert [x.ref for x in ws.lineage(v.ref)][:2] == ["rv-reviewed@1", sel.ref]
    # export writes the selection without the rejected row
    keys = _export_keys(ws, v.ref, tmp_path / "out")
    assert ("tr001", 0) not in keys and ("tr001", 1) in keys and ("tr000", 1) not in keys
    assert len(keys) == 20
    # the report's funnel: the earlier selection's drops, then the review's, with the rows it dropped
    from sbs_data.quality.report import report

    rep = report(ws, v.ref)
    stages = {f["step"]: (f["in"], f["dropped"], f["out"]) for f in rep["funnel"]}
    assert stages["review"] == (21, 1, 20) and list(stages)[-1] == "review"
    by_step = {d["step"]: d for d in rep["drop_examples"]}
    assert by_step["review"]["dropped"] == 1 and [r["example_id"] for r in by_step["review"]["rows"]] == [
        "tr001"
    ]
    # the same review applied again has the same config hash
    again = store.apply(ws, sel.ref, "rv-reviewed")
    assert again.version.ref == "rv-reviewed@2" and again.version.config_hash == v.config_hash


def test_apply_on_a_version_without_selection_and_bad_names(ws):
    gen, _, _ = build_reviewable(ws)
    store.record(ws, gen.ref, "te000", "drop", sample=0)
    res = store.apply(ws, gen.ref, "rv-gen-reviewed")
    assert res.counts["kept_before"] == 26 and res.counts["kept"] == 25
    # test rows are judged like any other (a person's verdict is not a recipe's split scope)
    assert ws.all(
        "SELECT example_id, sample_idx, reason FROM sbs_selections WHERE version_id = ? AND NOT keep",
        [res.version.version_id],
    ) == [("te000", 0, "review")]
    with pytest.raises(SbsError, match="bad dataset name"):
        store.apply(ws, gen.ref, "bad name")
    with pytest.raises(SbsError, match="holds examples"):
        store.apply(ws, gen.ref, "rv")  # the examples dataset


def test_apply_refuses_a_version_without_verdicts_and_names_the_judged_one(ws):
    """Verdicts belong to the version judged: applying another version of the same rows would silently copy it."""
    gen, scored, sel = build_reviewable(ws)
    with pytest.raises(SbsError, match=f"no verdicts on {re.escape(sel.ref)}: nothing to apply"):
        store.apply(ws, sel.ref, "rv-none")
    store.record(ws, scored.ref, "tr001", "drop", sample=0)
    with pytest.raises(
        SbsError, match=f"no verdicts on {re.escape(gen.ref)}.*judged on {re.escape(scored.ref)}"
    ):
        store.apply(ws, gen.ref, "rv-none")
    assert not ws.versions("rv-none")
    assert store.apply(ws, scored.ref, "rv-none").version.ref == "rv-none@1"


def test_export_card_names_the_review_stage(ws, tmp_path):
    """The dataset card's funnel says a person dropped rows in review (not a recipe step named `review`)."""
    _, _, sel = build_reviewable(ws)
    store.record(ws, sel.ref, "tr001", "drop", sample=0)
    res = store.apply(ws, sel.ref, "rv-reviewed")
    out = tmp_path / "out"
    export(ws, res.version.ref, out, ExportOptions(validation_fraction=None))
    card = (out / "README.md").read_text()
    assert "| dropped in review (`sbs-data browse`, `review apply`) | -1 | 20 |" in card
    assert "| recipe step `gold` | -5 | 21 |" in card and "recipe step `review`" not in card


def test_review_cli_status_and_apply(tmp_path):
    db = str(tmp_path / "w.duckdb")
    with Workspace.open(db) as ws:
        _, _, sel = build_reviewable(ws)
    r = runner.invoke(app, ["review", "status", "--db", db])
    assert r.exit_code == 0 and "no verdicts yet" in r.output
    with Workspace.open(db) as ws:
        store.record(ws, sel.ref, "tr004", "drop", sample=1)
        store.record(ws, sel.ref, "tr005", "keep")
    r = runner.invoke(app, ["review", "status", "rv-sel", "--db", db, "-f", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["ref"], x["rows"], x["generated"], x["reviewed"], x["keep"], x["drop"]) for x in rows] == [
        (sel.ref, 21, 26, 3, 2, 1)
    ]
    r = runner.invoke(app, ["review", "apply", sel.ref, "--name", "rv-final", "--db", db, "-f", "json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out[0]["version"] == "rv-final@1" and out[0]["dropped_by_review"] == 1 and out[0]["kept"] == 20
    assert "1 row(s) dropped by review" in r.stderr
    r = runner.invoke(app, ["review", "apply", "rv-sel@5", "--name", "x", "--db", db])
    assert r.exit_code == 1 and "no such version 'rv-sel@5'" in r.output
    r = runner.invoke(app, ["review", "apply", sel.ref, "--db", db])
    assert r.exit_code != 0 and "--name" in r.output
