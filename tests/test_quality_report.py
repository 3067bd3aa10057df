"""report: funnel consistency, signal distributions per split, per-teacher cost, self-contained HTML."""

from __future__ import annotations

import re

from quality_helpers import CQA_EXAMPLES, CQA_GENS, svamp_scored
from workspace_helpers import make_examples, make_generations

from sbs_data.quality.filter import filter_version
from sbs_data.quality.report import report, to_html
from sbs_data.quality.signals import score


def test_report_on_selection(ws):
    _, sv = svamp_scored(ws)
    sel = filter_version(ws, sv.ref, "strict")
    rep = report(ws, sel.version.ref)
    assert rep["funnel"] == sel.funnel  # recomputed from stored reasons = what filter saw
    assert rep["recipe"]["name"] == "strict" and rep["scores"] == sv.ref
    sig = rep["signals"]
    assert set(sig) == {"train", "all"}
    assert sig["all"]["_rows"]["count"] == 1  # only the visible (kept) row
    full = report(ws, sv.ref)["signals"]["train"]
    assert full["gold_match"] == {"type": "bool", "count": 4, "rate": 0.5}  # an unparsed row counts as a miss
    w = full["words"]
    assert (
        w["count"] == 4
        and w["min"] <= w["quantiles"]["p05"] <= w["quantiles"]["p50"] <= w["quantiles"]["p95"] <= w["max"]
    )
    assert full["majority_label"] == {"type": "str", "count": 3, "distinct": 1}  # test-1 has no label at all


def test_report_per_teacher_and_splits(ws):
    ex = make_examples(ws, "cq", "cqa", CQA_EXAMPLES[:1], split="train")
    rows = [dict(r, teacher="a:1" if i < 2 else "b:2", cost_usd=0.5) for i, r in enumerate(CQA_GENS[:3])]
    gen = make_generations(ws, ex, rows, name="cq-gen")
    sv = score(ws, gen.ref)
    sel = filter_version(ws, sv.ref, "strict").version
    t = {x["teacher"]: x for x in report(ws, sel.ref)["teachers"]}
    assert (t["a:1"]["rows"], t["a:1"]["kept"], t["a:1"]["gold_match_rate"], t["a:1"]["cost_usd"]) == (
        2,
        1,
        1.0,
        1.0,
    )
    assert t["a:1"]["cost_per_kept_usd"] == 1.0
    assert (
        t["b:2"]["rows"],
        t["b:2"]["kept"],
        t["b:2"]["gold_match_rate"],
        t["b:2"]["cost_per_kept_usd"],
    ) == (1, 0, 0.0, None)


def test_report_without_scores_and_html(ws):
    gen, sv = svamp_scored(ws)
    rep = report(ws, gen.ref)
    assert rep["signals"] == {} and "run `sbs-data score sv-gen@1`" in rep["notes"][0]
    sel = filter_version(ws, sv.ref, "strict").version
    page = to_html(report(ws, sel.ref))
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 5
    # self-contained: no scripts, no external references (the SVG namespace is not fetched)
    assert "<script" not in page and "<link" not in page
    assert set(re.findall(r"https?://[^\"' ]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert "gold_agrees" in page and "fake:model" in page
