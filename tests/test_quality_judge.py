"""The LLM-judge signal (`score --judge`): through the real SDK and the engine, cached like any call."""

from __future__ import annotations

import json

import pytest
from fakes import FaultPlan
from generate_helpers import fast
from quality_helpers import scores_by_key
from typer.testing import CliRunner
from workspace_helpers import make_examples, make_generations

from sbs_data import SbsError
from sbs_data.cli import app
from sbs_data.quality.filter import filter_version
from sbs_data.quality.judge import Judge, load_judge_prompt, parse_score
from sbs_data.quality.recipes import parse_recipe
from sbs_data.quality.report import report
from sbs_data.quality.signals import score

QUESTIONS = [
    {
        "id": f"q{i}",
        "question": f"Which colour is number {i}?",
        "choices": ["red", "blue", "green"],
        "answer": "red",
    }
    for i in range(4)
]
GENS = [
    {"example_id": "q0", "raw": "Red is the first colour {with braces}. So the answer is (a) red."},
    {"example_id": "q1", "raw": "Blue is calm. So the answer is (b) blue."},
    {"example_id": "q2", "raw": "Green grows. So the answer is (c) green."},
    {"example_id": "q3", "raw": None},  # no completion: nothing to grade
]


def _gens(ws):
    ex = make_examples(ws, "col", "cqa", QUESTIONS, split="train")
    return make_generations(ws, ex, GENS, name="col-gen")


def _judge(**kw) -> Judge:
    return Judge("openai:gpt-4o-mini", settings=fast(), **kw)


def test_parse_score():
    assert parse_score("Reasoning is fine.\nScore: 4") == 4
    assert parse_score("Score: 2 ... on reflection, Score = 5") == 5  # the last one counts
    assert parse_score("**Score:** 3") == 3
    assert parse_score("score: **3**") == 3
    assert parse_score(" 5. ") == 5
    assert (
        parse_score("Score: 7") is None and parse_score("I'd say good") is None and parse_score(None) is None
    )


def test_judge_grades_each_rationale_and_rescore_is_free(ws, server):
    gen = _gens(ws)
    server.keep_bodies = True
    server.set_faults(
        FaultPlan(answers={"Blue is calm": "Not an explanation of anything. Score: 1", "Green grows": "hmm"})
    )
    sv = score(ws, gen.ref, judge=_judge())
    s = scores_by_key(ws, sv)
    assert s[("q1", 0)]["judge_score"] == 1
    assert s[("q2", 0)]["judge_score"] is None  # unparsable reply: stored, not guessed
    assert 1 <= s[("q0", 0)]["judge_score"] <= 5
    assert s[("q3", 0)]["judge_score"] is None  # not sent: no rationale
    calls = server.stats()["count"]
    assert calls == 3
    # the rendered prompt carries the input, the label and the rationale verbatim (braces included)
    q0 = [b["body"]["messages"][-1]["content"] for b in server.bodies if "number 0?" in json.dumps(b["body"])]
    assert len(q0) == 1 and "{with braces}" in q0[0] and "Proposed answer: red\n" in q0[0]
    cfg = sv.config["judge"]
    assert cfg["teacher"]["spec"] == "openai:gpt-4o-mini" and len(cfg["prompt_sha"]) == 64
    # a re-score (also offline) answers from the cache: zero calls
    sv2 = score(ws, gen.ref, judge=_judge(offline=True))
    assert server.stats()["count"] == calls
    assert scores_by_key(ws, sv2) == {k: {**v, "version_id": sv2.scores_id} for k, v in s.items()}
    # the judge's calls belong to the score's run (one run per call), and are cached like generation calls
    assert ws.one("SELECT count(*) FROM sbs_cache") == 3
    runs = ws.all("SELECT command, status, stats FROM sbs_runs ORDER BY started_at")
    assert [(c.split(" --judge ")[0], st) for c, st, _ in runs] == [(f"score {gen.ref}", "ok")] * 2
    assert json.loads(runs[0][2])["judge"]["called"] == 3 and json.loads(runs[1][2])["judge"]["cached"] == 3


def test_judge_score_in_recipes_and_reports(ws, server):
    gen = _gens(ws)
    server.set_faults(
        FaultPlan(
            answers={"Blue is calm": "Score: 1", "Red is the first": "Score: 5", "Green grows": "Score: 3"}
        )
    )
    sv = score(ws, gen.ref, judge=_judge())
    recipe = parse_recipe(
        "name: judged\nsplits: [all]\nsteps:\n  - {name: judge, signal: judge_score, min: 3}\n"
    )
    res = filter_version(ws, sv.ref, recipe)
    kept = ws.all(
        f"SELECT example_id FROM selections WHERE version_id = {res.version.selection_id} AND keep ORDER BY 1"
    )
    assert [r[0] for r in kept] == [
        "q0",
        "q2",
        "q3",
    ]  # q1 graded 1 dropped; ungraded rows kept (missing: keep)
    stats = report(ws, sv.ref)["signals"]["all"]["judge_score"]
    assert (stats["count"], stats["min"], stats["max"]) == (3, 1, 5)


def test_without_judge_the_column_is_null_and_offline_miss_fails(ws, server):
    gen = _gens(ws)
    sv = score(ws, gen.ref)
    assert all(v["judge_score"] is None for v in scores_by_key(ws, sv).values())
    before = ws.one("SELECT count(*) FROM versions")
    with pytest.raises(SbsError, match="--offline: 3 of 3 judge requests are not in the cache"):
        score(ws, gen.ref, judge=_judge(offline=True))
    assert ws.one("SELECT count(*) FROM versions") == before and server.stats()["count"] == 0


def test_judge_prompt_file_errors_name_the_file(tmp_path):
    assert load_judge_prompt().template.count("{rationale}") == 1
    bad = tmp_path / "j.yaml"
    for text, msg in [
        ("template: 'no fields'\n", r"must use \{input\}, \{rationale\}, \{label\}"),
        ("template: '{input} {rationale} {label}'\nsytem: x\n", "unknown field.*sytem"),
        ("template: [unclosed\n", r"j.yaml:\d+: not valid YAML"),
        ("- a list\n", "expected a mapping"),
    ]:
        bad.write_text(text)
        with pytest.raises(SbsError, match=msg) as ei:
            load_judge_prompt(bad)
        assert str(bad) in str(ei.value)
    with pytest.raises(SbsError, match="judge prompt file not found"):
        load_judge_prompt(tmp_path / "nope.yaml")


def test_cli_score_with_judge(tmp_path, server):
    from sbs_data.workspace import Workspace

    ws_path = tmp_path / "cli.duckdb"
    with Workspace.open(ws_path) as ws:
        gen = _gens(ws)
    r = CliRunner().invoke(
        app, ["score", gen.ref, "--judge", "openai:gpt-4o-mini", "--db", str(ws_path), "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    assert "judge: 3 of 3 rows graded (0 cached, 3 called, 0 failed, 0 unparsed)" in r.output
    r = CliRunner().invoke(app, ["score", gen.ref, "--offline", "--db", str(ws_path)])
    assert r.exit_code != 0 and "only apply with --judge" in r.output


def test_judge_prompt_as_sql_is_the_rendered_text(ws):
    p = load_judge_prompt()
    hostile = [
        ("Q {label} é", 'a {input} {rationale}\\n"x" 🙂', "red"),
        ("", "only", None),
        ("{", "}", "{label}"),
    ]
    content, params = p.content_sql({"input": "i", "rationale": "r", "label": "l"})
    for i, r, lab in hostile:
        got = ws.one(
            f"SELECT {content} FROM (SELECT ?::VARCHAR AS i, ?::VARCHAR AS r, ?::VARCHAR AS l)",
            [*params, i, r, lab],
        )
        assert got == p.render(i, r, lab)


def test_judge_reads_in_chunks_and_sends_each_prompt_once(ws, server, monkeypatch, tmp_path):
    import sbs_data.quality.judge as J

    monkeypatch.setattr(J, "CHUNK", 3)  # rows q0/0 q0/1 q1/0 | q1/1 q2/0: a duplicate across chunks
    ex = make_examples(ws, "col", "cqa", QUESTIONS, split="train")
    rows = [
        # two different (rationale, label) pairs that render the very same prompt with this template
        {"example_id": "q0", "sample_idx": 0, "raw": "x", "rationale": "Red. So r", "pred_label": "ed"},
        {"example_id": "q0", "sample_idx": 1, "raw": "x", "rationale": "Red. So re", "pred_label": "d"},
        {"example_id": "q1", "sample_idx": 0, "raw": "Blue is calm. So the answer is (b) blue."},
        {"example_id": "q1", "sample_idx": 1, "raw": "Blue is calm. So the answer is (b) blue."},
        {"example_id": "q2", "raw": "Green grows. So the answer is (c) green."},
        {"example_id": "q3", "raw": None},
    ]
    gen = make_generations(ws, ex, rows, name="col-gen")
    tpl = tmp_path / "judge.yaml"
    tpl.write_text('template: "{input}\\n{rationale}{label}\\nGrade it."\n')
    server.set_faults(
        FaultPlan(answers={"Red. So red": "Score: 2", "Blue is calm": "Score: 4", "Green": "meh"})
    )
    sv = score(ws, gen.ref, judge=_judge(prompt_path=tpl))
    s = scores_by_key(ws, sv)
    assert server.stats()["count"] == 3  # 5 rows to grade, 3 distinct prompts
    got = {k: v["judge_score"] for k, v in s.items()}
    assert got == {("q0", 0): 2, ("q0", 1): 2, ("q1", 0): 4, ("q1", 1): 4, ("q2", 0): None, ("q3", 0): None}
    summary = json.loads(ws.one("SELECT stats FROM sbs_runs"))["judge"]
    assert (
        summary["rows"],
        summary["cached"],
        summary["called"],
        summary["judged"],
        summary["unparsed"],
    ) == (
        5,
        2,
        3,
        4,
        1,
    )
