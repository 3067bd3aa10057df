"""Each signal on hand-made rows with known answers, and SQL semantics against the task's own Python."""

from __future__ import annotations

import pytest
from quality_helpers import cqa_scored, scores_by_key, svamp_scored
from workspace_helpers import make_examples, make_generations

from sbs_data import SbsError
from sbs_data.quality.signals import SIGNALS, ScoreParams, score
from sbs_data.tasks import get_task, mathexpr


def test_score_creates_scores_version_with_lineage(ws):
    gen, sv = svamp_scored(ws)
    assert (sv.dataset, sv.kind, sv.parents, sv.base_id, sv.scores_id) == (
        "sv-gen",
        "scores",
        (gen.version_id,),
        gen.base_id,
        sv.version_id,
    )
    assert sv.row_count == 4 and sv.config["source"] == gen.ref
    n, distinct = ws.all(
        "SELECT count(*), count(DISTINCT (example_id, sample_idx)) FROM sbs_scores WHERE version_id = ?",
        [sv.version_id],
    )[0]
    assert n == distinct == 4
    # the views: latest scores, and scores_at(ref)
    assert ws.one("SELECT count(*) FROM scores WHERE dataset = 'sv-gen'") == 4
    assert ws.one("SELECT count(*) FROM scores_at('sv-gen@2')") == 4
    named = score(ws, gen.ref, name="sv-scored")
    assert named.dataset == "sv-scored" and named.num == 1


def test_migration_has_one_column_per_signal(ws):
    cols = {
        r[0]
        for r in ws.all("SELECT column_name FROM information_schema.columns WHERE table_name = 'sbs_scores'")
    }
    assert {s.name for s in SIGNALS} <= cols


def test_svamp_signals(ws):
    _, sv = svamp_scored(ws)
    s = scores_by_key(ws, sv)
    a, b, c, d = s[("train-0", 0)], s[("train-0", 1)], s[("train-0", 2)], s[("train-1", 0)]
    assert [x["parse_ok"] for x in (a, b, c, d)] == [True, True, True, False]
    assert [x["gold_match"] for x in (a, b, c, d)] == [True, False, True, False]
    assert [x["label_in_space"] for x in (a, b, c, d)] == [True, True, True, False]
    # arithmetic: 10 * 45 is 450 (right), 10 * 45 = 460 (wrong), no steps
    assert (a["arith_steps"], a["arith_correct_frac"]) == (1, 1.0)
    assert (b["arith_steps"], b["arith_correct_frac"]) == (1, 0.0)
    assert (c["arith_steps"], c["arith_correct_frac"]) == (0, None)
    # conclusion: ends on 450 = (10 * 45); ends on 460 = its (wrong) label; ends on "each" after 10
    assert (a["conclusion_match"], b["conclusion_match"], c["conclusion_match"]) == (True, True, False)
    assert (a["final_number_match"], b["final_number_match"]) == (True, False)
    # leakage: sample 2 opens with the answer
    assert (a["starts_with_answer"], c["starts_with_answer"]) == (False, True)
    assert c["answer_first_pos"] == 0.0 and 0.5 < a["answer_first_pos"] < 1
    # self-consistency: 450 twice (values, not strings: "(10 * 45)" and "450"), 460 once
    assert (
        a["majority_label"] == "450"
        and a["majority_agree"]
        and c["majority_agree"]
        and not b["majority_agree"]
    )
    assert a["vote_share"] == pytest.approx(2 / 3) and b["vote_share"] == pytest.approx(1 / 3)
    assert a["vote_entropy"] == pytest.approx(0.9183, abs=1e-3)
    assert (d["n_samples"], d["vote_share"], d["majority_label"], d["vote_entropy"]) == (1, 0.0, None, 0.0)
    assert (a["words"], a["sentences"]) == (13, 2)  # letter/digit runs: "*" is not a word
    assert a["truncated"] is False and a["refusal"] is False


def test_cqa_signals(ws):
    _, sv = cqa_scored(ws)
    s = scores_by_key(ws, sv)
    q0, q1, q2 = s[("q1", 0)], s[("q1", 1)], s[("q1", 2)]
    r0, r1 = s[("q2", 0)], s[("q2", 1)]
    assert q0["gold_match"] and not q2["gold_match"] and q2["label_in_space"]  # park is a choice, but wrong
    assert r1["refusal"] and not r1["label_in_space"] and r1["conclusion_match"] is None
    assert q0["conclusion_match"] is True and q2["conclusion_match"] is False  # argues desert, answers park
    assert r0["starts_with_answer"] and r0["answer_first_pos"] == 0.0 and not q0["starts_with_answer"]
    # exact duplicates within an example: the second copy is the duplicate
    assert (q0["exact_dup"], q1["exact_dup"], q0["exact_dup_count"]) == (False, True, 2)
    assert (q0["near_dup"], q1["near_dup"], q1["near_dup_size"]) == (False, True, 2)
    assert q0["near_dup_cluster"] == q1["near_dup_cluster"] and q2["near_dup_size"] == 1
    assert q0["majority_label"] == "wooded area" and q0["vote_share"] == pytest.approx(2 / 3)
    assert 0.5 < q0["input_overlap"] <= 1 and r1["input_overlap"] == 0.0


def test_nli_signals_and_repetition(ws):
    ex = make_examples(
        ws,
        "nl",
        "anli",
        [
            {
                "uid": "a",
                "premise": "A man is sleeping on a couch.",
                "hypothesis": "The man is running.",
                "label": 2,
            }
        ],
    )
    rows = [
        {
            "example_id": "a",
            "sample_idx": 0,
            "raw": "A sleeping man is not running, so the premise contradicts the hypothesis. So the answer is contradiction.",
        },
        {
            "example_id": "a",
            "sample_idx": 1,
            "raw": "The man could be running later. It is neutral. So the answer is entailment.",
        },
        {
            "example_id": "a",
            "sample_idx": 2,
            "raw": "He sleeps. He sleeps. He sleeps on a couch. So the answer is maybe.",
            "finish_reason": "length",
        },
    ]
    gen = make_generations(ws, ex, rows, name="nl-gen")
    s = scores_by_key(ws, score(ws, gen.ref))
    a, b, c = s[("a", 0)], s[("a", 1)], s[("a", 2)]
    assert (a["gold_match"], b["gold_match"]) == (True, False)
    assert (
        a["conclusion_match"] is True and b["conclusion_match"] is False
    )  # says neutral, answers entailment
    assert c["label_in_space"] is True  # "maybe" is an alias of neutral
    assert (a["truncated"], c["truncated"]) == (False, True)
    assert (c["sentences"], c["repeated_sentences"]) == (3, 1)
    assert c["ngram_repetition"] > 0.2 and a["ngram_repetition"] == 0.0


def test_sql_labels_agree_with_task_semantics(ws):
    """gold_match / label_in_space computed in SQL equal Task.same_label / in_label_space per row."""
    task = get_task("svamp")
    ex = make_examples(
        ws,
        "m",
        "svamp",
        [
            {"input": f"p{i}", "label": lab}
            for i, lab in enumerate(["( 1.0 + 2.0 )", "10", "( 7.0 / 2.0 )", "0.5"])
        ],
    )
    preds = ["3", "(1 + 2)", "3.0000001", "ten", "10.0", "1e1", "7 / 2", "3.5", "1/2", "0.50", "$0.5", None]
    rows = [
        {
            "example_id": f"train-{i % 4}",
            "sample_idx": i,
            "raw": "x",
            "pred_label": p,
            "parse_status": "ok" if p else "no_answer",
        }
        for i, p in enumerate(preds)
    ]
    gen = make_generations(ws, ex, rows)
    s = scores_by_key(ws, score(ws, gen.ref))
    gold = dict(ws.all("SELECT example_id, label FROM sbs_examples WHERE version_id = ?", [ex.version_id]))
    for i, p in enumerate(preds):
        row = s[(f"train-{i % 4}", i)]
        assert row["gold_match"] == task.same_label(p, gold[f"train-{i % 4}"]), p
        assert row["label_in_space"] == task.in_label_space(p), p


def test_arithmetic_steps_match_mathexpr(ws):
    texts = [
        "So 10 * 45 = 450 and 450 + 5 = 455.",
        "We get (2 + 3) * 4 = 20, then 20 / 0 = 1.",
        "1,000 - 1 = 999. Then 3 x 4 = 13.",
        "He has 12 - 67 = -55 peaches and 5 - 3 = 2 left.",
        "No arithmetic here.",
    ]
    ex = make_examples(ws, "ar", "svamp", [{"input": f"q{i}", "label": "1"} for i in range(len(texts))])
    gen = make_generations(
        ws, ex, [{"example_id": f"train-{i}", "raw": f"{t} The answer is 1."} for i, t in enumerate(texts)]
    )
    s = scores_by_key(ws, score(ws, gen.ref))
    for i, t in enumerate(texts):
        steps = mathexpr.arithmetic_steps(t)
        row = s[(f"train-{i}", 0)]
        assert row["arith_steps"] == len(steps), t
        want = sum(ok for _, _, ok in steps) / len(steps) if steps else None
        assert row["arith_correct_frac"] == (pytest.approx(want) if steps else None), t


def test_score_scores_only_visible_rows_and_rejects_examples(ws):
    gen, sv = svamp_scored(ws)
    with pytest.raises(SbsError, match="holds examples"):
        score(ws, "sv")
    with pytest.raises(SbsError, match="threshold"):
        score(ws, gen.ref, params=ScoreParams(near_threshold=1.5))
    from sbs_data.quality.filter import filter_version

    sel = filter_version(ws, sv.ref, "default").version
    assert sel.row_count == 3
    rescored = score(ws, sel.ref)
    assert (
        rescored.row_count == 3
        and ws.one("SELECT count(*) FROM sbs_scores WHERE version_id = ?", [rescored.version_id]) == 3
    )


def test_score_leaves_no_temp_tables_done_or_failed(ws, monkeypatch):
    from sbs_data.quality import signals

    gen, _ = svamp_scored(ws)
    temps = "SELECT table_name FROM duckdb_tables() WHERE temporary"
    assert ws.all(temps) == []

    def broken(*a, **k):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(signals, "write_scores", broken)
    with pytest.raises(RuntimeError, match="disk gone"):
        score(ws, gen.ref)
    assert ws.all(temps) == []
