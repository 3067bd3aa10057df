"""filter: lineage, keep/drop + first reason per base row, filtering twice, auto-scoring, the CLI."""

from __future__ import annotations

import json

import pytest
from quality_helpers import cqa_scored, svamp_scored
from typer.testing import CliRunner

from sbs_data import SbsError
from sbs_data.cli import app
from sbs_data.quality.filter import filter_version
from sbs_data.quality.recipes import load_recipe, parse_recipe
from sbs_data.workspace import Workspace


def _sel(ws, v):
    return {
        (r[0], r[1]): (r[2], r[3])
        for r in ws.all(
            "SELECT example_id, sample_idx, keep, reason FROM sbs_selections WHERE version_id = ?",
            [v.selection_id],
        )
    }


def test_filter_stores_first_reason_and_recipe_lineage(ws):
    gen, sv = svamp_scored(ws)
    res = filter_version(ws, sv.ref, "strict")
    v = res.version
    assert (v.kind, v.dataset, v.parents, v.scores_id, v.base_id) == (
        "selection",
        "sv-gen",
        (sv.version_id,),
        sv.version_id,
        gen.version_id,
    )
    rec = load_recipe("strict")
    assert v.config["recipe_hash"] == rec.hash and v.config["recipe"] == rec.content
    assert v.config["scores"] == sv.ref and res.scored is None
    assert _sel(ws, v) == {
        ("train-0", 0): (True, None),
        ("train-0", 1): (False, "gold_agrees"),
        ("train-0", 2): (False, "consistent"),  # also leaks, but consistency comes first
        ("train-1", 0): (False, "parsable"),
    }
    assert v.row_count == 1
    # no text copies: the selection table holds keys, keep, reason only
    cols = [
        r[0]
        for r in ws.all(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'sbs_selections'"
        )
    ]
    assert cols == ["version_id", "example_id", "sample_idx", "keep", "reason"]
    # the funnel adds up
    f = res.funnel
    assert f[0]["in"] == 4 and f[-1]["out"] == 1
    assert all(a["out"] == b["in"] for a, b in zip(f, f[1:]))
    assert sum(s["dropped"] for s in f) == 3
    # views see only kept rows
    assert ws.one("SELECT count(*) FROM generations WHERE dataset = 'sv-gen'") == 1
    assert ws.one("SELECT count(*) FROM scores WHERE dataset = 'sv-gen'") == 1


def test_filter_twice_keeps_earlier_drops_and_reasons(ws):
    _, sv = cqa_scored(ws)
    first = filter_version(
        ws, sv.ref, parse_recipe("steps:\n  - {name: no_refusal, signal: refusal, equals: false}\n")
    ).version
    second = filter_version(
        ws, first.ref, parse_recipe("steps:\n  - {name: gold, signal: gold_match, equals: true}\n")
    ).version
    s1, s2 = _sel(ws, first), _sel(ws, second)
    assert s1[("q2", 1)] == (False, "no_refusal") and s2[("q2", 1)] == (False, "no_refusal")
    assert s2[("q1", 2)] == (False, "gold")
    assert len(s2) == 5 and second.row_count == 3
    assert second.config["earlier_selection"] == first.ref
    # a permissive recipe cannot resurrect rows
    third = filter_version(
        ws, second.ref, parse_recipe("steps:\n  - {name: any, signal: words, min: 0}\n")
    ).version
    assert third.row_count == 3 and _sel(ws, third)[("q1", 2)] == (False, "gold")


def test_selection_steps(ws):
    _, sv = cqa_scored(ws)
    rec = parse_recipe(
        "steps:\n"
        "  - {name: maj, select: majority}\n"
        "  - {name: dd, select: dedup, kind: exact, scope: example}\n"
    )
    s = _sel(ws, filter_version(ws, sv.ref, rec).version)
    assert s[("q1", 0)] == (True, None) and s[("q1", 1)] == (False, "dd") and s[("q1", 2)] == (False, "maj")
    # q2: one vote each -> the first sample is the majority
    assert s[("q2", 0)] == (True, None) and s[("q2", 1)] == (False, "maj")
    best = parse_recipe(
        "steps:\n  - {name: best, select: best_per_example, by: [label_in_space, words asc]}\n"
    )
    s = _sel(ws, filter_version(ws, sv.ref, best).version)
    assert [k for k, (keep, _) in s.items() if keep] == [
        ("q1", 2),
        ("q2", 0),
    ]  # shortest valid rationale each
    near = parse_recipe("steps:\n  - {name: nd, select: dedup, kind: near}\n")
    s = _sel(ws, filter_version(ws, sv.ref, near).version)
    assert s[("q1", 1)] == (False, "nd") and sum(k for k, _ in s.values()) == 4


def test_filter_scores_first_when_needed(ws):
    gen, _ = svamp_scored(ws)
    with pytest.raises(SbsError, match="run `sbs-data score sv-gen@1` first"):
        filter_version(ws, gen.ref, "default", auto_score=False)
    res = filter_version(ws, gen.ref, "default")
    assert res.scored is not None and res.scored.kind == "scores" and res.scored.parents == (gen.version_id,)
    assert res.version.parents == (res.scored.version_id,) and res.version.row_count == 3


def test_bad_recipe_touches_nothing(ws, tmp_path):
    svamp_scored(ws)
    before = ws.one("SELECT count(*) FROM sbs_versions")
    bad = tmp_path / "x.yaml"
    bad.write_text("steps:\n  - name: a\n    signal: wordz\n    max: 3\n")
    with pytest.raises(SbsError, match=r"x.yaml: steps\[0\].signal: unknown signal 'wordz'"):
        filter_version(ws, "sv-gen@1", bad)
    assert ws.one("SELECT count(*) FROM sbs_versions") == before


def test_cli_score_filter_report(tmp_path):
    db = tmp_path / "w.duckdb"
    with Workspace.open(db) as ws:
        svamp_scored(ws)  # sv-gen@1 generations, sv-gen@2 scores
    r = CliRunner()
    out = r.invoke(app, ["score", "sv-gen@1", "--name", "sv2", "--db", str(db), "-f", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["ref"] == "sv2@1"
    out = r.invoke(app, ["filter", "sv-gen", "--recipe", "strict", "--db", str(db), "-f", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["version"] == "sv-gen@3" and data["funnel"][-1]["out"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {name: a, signal: words, max_words: 3}\n")
    out = r.invoke(app, ["filter", "sv-gen", "--recipe", str(bad), "--db", str(db)])
    assert out.exit_code == 1 and "steps[0].max_words: unknown key (did you mean 'max'?)" in out.output
    assert "Traceback" not in out.output
    out = r.invoke(app, ["report", "sv-gen", "--db", str(db)], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    for text in ("funnel", "gold_agrees", "arith_correct_frac", "per teacher", "fake:model"):
        assert text in out.stdout, text
    out = r.invoke(app, ["report", "sv-gen", "--db", str(db), "-f", "csv"])
    assert out.exit_code == 0 and out.stdout.startswith("split,signal,count,mean/rate")
    html = tmp_path / "r.html"
    out = r.invoke(app, ["report", "sv-gen", "--db", str(db), "-f", "json", "--html", str(html)])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.stdout)
    assert rep["recipe"]["name"] == "strict" and rep["signals"]["train"]["gold_match"]["rate"] == 1.0
    assert html.exists() and "<svg" in html.read_text()
    out = r.invoke(app, ["filter", "sv", "--recipe", "default", "--db", str(db)])
    assert out.exit_code == 1 and "holds examples" in out.output


def test_recipes_filter_train_only_unless_told(ws):
    """Dropping test rows on teacher quality (e.g. gold agreement) would bias evaluation."""
    from workspace_helpers import make_examples, make_generations

    rows = [{"input": f"Ann has {i} apples and gets 2 more.", "label": f"( {i}.0 + 2.0 )"} for i in range(4)]
    ex = make_examples(
        ws, "mix", "svamp", [dict(r, split="train" if i < 2 else "test") for i, r in enumerate(rows)]
    )
    wrong = [
        {"example_id": f"train-{i}", "raw": f"{i} + 3 = {i + 3}. The answer is ({i} + 3)."} for i in range(4)
    ]
    gen = make_generations(ws, ex, wrong, name="mix-gen")
    res = filter_version(ws, gen.ref, "strict")
    sel = _sel(ws, res.version)
    assert [sel[(f"train-{i}", 0)] for i in range(4)] == [(False, "gold_agrees")] * 2 + [(True, None)] * 2
    everything = parse_recipe(
        "name: all\nsplits: [all]\nsteps:\n  - {name: gold, signal: gold_match, equals: true}\n"
    )
    res2 = filter_version(ws, gen.ref, everything, name="mix-all")
    assert res2.version.row_count == 0 and res2.version.config["filtered_splits"] == ["all"]


def test_score_and_filter_record_one_run_per_call_from_python(ws):
    from quality_helpers import SVAMP_EXAMPLES, SVAMP_GENS
    from workspace_helpers import make_examples, make_generations

    from sbs_data.quality.signals import score

    ex = make_examples(ws, "sv", "svamp", SVAMP_EXAMPLES, split="train")
    gen = make_generations(ws, ex, SVAMP_GENS, name="sv-gen")
    sv = score(ws, gen.ref)
    res = filter_version(ws, gen.ref, "strict", name="auto")  # scores on the way: still one run
    with pytest.raises(SbsError, match="holds examples"):
        filter_version(ws, ex.ref, "strict")
    runs = ws.all("SELECT run_id, command, status, stats FROM sbs_runs ORDER BY started_at, command")
    assert [(c, st) for _, c, st, _ in runs] == [
        (f"score {gen.ref}", "ok"),
        (f"filter {gen.ref} --recipe {load_recipe('strict').source}", "ok"),
        (f"filter {ex.ref} --recipe {load_recipe('strict').source}", "failed"),
    ]
    stats = [json.loads(s) for *_, s in runs]
    assert stats[0] == {"version": sv.ref, "rows": sv.row_count}
    assert stats[1]["version"] == res.version.ref and stats[1]["scored"]["version"] == res.scored.ref
    assert stats[1]["funnel"] == res.funnel and "holds examples" in stats[2]["error"]
    made_by = dict(ws.all("SELECT version_id, run_id FROM sbs_versions WHERE run_id IS NOT NULL"))
    assert made_by[sv.version_id] == runs[0][0]
    assert made_by[res.scored.version_id] == made_by[res.version.version_id] == runs[1][0]
