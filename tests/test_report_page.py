"""The report a person reads, through the CLI: n/a for rules that apply to no row, dropped rows per rule,
teacher against gold, honest histogram axes, and the HTML page checked in Chromium at 1280 px."""

from __future__ import annotations

import json
import re

import pytest
from browser_helpers import screenshot_path
from cli_helpers import DEMO_NLI, run
from quality_helpers import svamp_scored
from workspace_helpers import make_examples, make_generations

from sbs_data.quality.report import TOP_LABELS, _svg_hist
from sbs_data.quality.signals import score
from sbs_data.workspace import Workspace

HOSTILE = "<script>window.pwned=1</script><img src=x onerror=window.pwned=1>"


@pytest.fixture
def nli(tmp_path):
    """The demo's NLI data (gold + the recorded teacher), one dropped rationale made hostile and huge, a long
    teacher name, filtered with the strict recipe: (db, selection ref)."""
    db = str(tmp_path / "rep.duckdb")
    run("import-original", str(DEMO_NLI), "--task", "anli", "--db", db)
    with Workspace.open(db) as ws:
        ws.execute(
            "UPDATE sbs_generations SET teacher = 'openai-compat:meta-llama/Llama-3.1-70B-Instruct-Turbo-2024'"
        )
        ws.execute(
            "UPDATE sbs_generations SET rationale = ? WHERE example_id = 'train-000001'",
            [HOSTILE + " " + "x" * 5000 + " so it is neutral"],
        )
    run("filter", "demo-nli-palm", "--recipe", "strict", "--db", db)
    return db, "demo-nli-palm@3"


def test_rules_that_apply_to_no_row_show_na(nli, tmp_path):
    db, sel = nli
    rep = json.loads(run("report", sel, "-f", "json", "--db", db).stdout)
    steps = {f["step"]: f for f in rep["funnel"]}
    # imported completions have no finish reason: truncated is NULL on every row; one sample per example
    assert steps["not_truncated"]["applies"] == 0 and steps["majority"]["applies"] == 0
    assert steps["parsable"]["applies"] > 0 and steps["gold_agrees"]["applies"] > 0
    table = run("report", sel, "--db", db).stdout
    assert re.search(r"not_truncated .*n/a", table) and re.search(r"majority .*n/a", table)
    assert not re.search(r"parsable .*n/a", table)
    # a recipe whose split is absent applies to nothing at all
    with Workspace.open(db) as ws:
        _, sv = svamp_scored(ws)  # train rows only
    recipe = tmp_path / "test-only.yaml"
    recipe.write_text(
        "name: test-only\nsplits: [test]\nsteps:\n  - {name: gold, signal: gold_match, equals: true}\n"
    )
    out = json.loads(run("filter", sv.ref, "--recipe", str(recipe), "-f", "json", "--db", db).stdout)
    assert out["funnel"][-1]["applies"] == 0 and out["funnel"][-1]["dropped"] == 0
    rep = json.loads(run("report", out["version"], "-f", "json", "--db", db).stdout)
    assert rep["funnel"] == out["funnel"]  # the report recomputes what filter saw
    assert "n/a" in run("filter", sv.ref, "--recipe", str(recipe), "--db", db).stdout


def test_dropped_rows_per_rule_escaped_and_capped(nli, tmp_path):
    db, sel = nli
    rep = json.loads(run("report", sel, "-f", "json", "--db", db, "--html", str(tmp_path / "r.html")).stdout)
    drops = {d["step"]: d for d in rep["drop_examples"]}
    dropped = {f["step"]: f["dropped"] for f in rep["funnel"]}
    assert drops and all(d["dropped"] == dropped[s] and 1 <= len(d["rows"]) <= 3 for s, d in drops.items())
    assert [d["step"] for d in rep["drop_examples"]] == [
        f["step"] for f in rep["funnel"] if f["step"] in drops
    ]
    row = drops["gold_agrees"]["rows"][0]
    assert row["input"].startswith("Premise:") and row["gold_label"] and row["pred_label"]
    hostile = next(r for d in drops.values() for r in d["rows"] if r["example_id"] == "train-000001")
    assert len(hostile["rationale"]) <= 601 and hostile["rationale"].endswith("…")
    page = (tmp_path / "r.html").read_text()
    assert "<script" not in page and "onerror=window" not in page.replace("&lt;img src=x onerror=window", "")
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
    assert "x" * 700 not in page  # capped


def test_labels_confusion_matrix_and_distribution(nli, tmp_path):
    db, sel = nli
    lab = json.loads(run("report", sel, "-f", "json", "--db", db).stdout)["labels"]
    assert lab["label_space"] == "fixed" and set(lab["labels"]) >= {"entailment", "neutral", "contradiction"}
    m = lab["confusion"]
    assert sum(map(sum, m)) == lab["rows"] == 45
    with Workspace.open(db, read_only=True) as ws:
        agree = ws.one(
            "SELECT count(*) FROM generations_at('demo-nli-palm@1') WHERE pred_label = gold_label AND gold_label IS NOT NULL"
        )
    diag = sum(m[i][i] for i in range(len(m)))
    assert diag == agree and lab["agreement"] == round(agree / 45, 6)
    by = {d["label"]: d for d in lab["distribution"]}
    assert by["neutral"]["gold"] == 15 and by["(no label)"]["gold"] == 0 and by["(no label)"]["teacher"] > 0
    # a folder that does not exist yet is made, as `export --out` makes its own (was: Errno 2, no report)
    text = run("report", sel, "--db", db, "--html", str(tmp_path / "reports" / "r.html")).stdout
    assert "labels: gold and teacher" in text and "84.4%" in text
    # on a line of its own: as the narrow table's title it wrapped mid-phrase ("the teacher / agrees with...")
    assert "the teacher agrees with gold on 84.4% of 45 labelled rows" in text
    html = (tmp_path / "reports" / "r.html").read_text()
    assert "Confusion matrix" in html and "Label distribution" in html


def test_many_labels_are_capped_and_numeric_tasks_get_agreement_only(tmp_path):
    db = str(tmp_path / "many.duckdb")
    with Workspace.open(db) as ws:
        rows = [
            {
                "id": f"q{i}",
                "question": f"Pick {i}?",
                "choices": [f"answer {i}", "other"],
                "answer": f"answer {i}",
            }
            for i in range(30)
        ]
        ex = make_examples(ws, "cq", "cqa", rows)
        gen = make_generations(
            ws,
            ex,
            [{"example_id": f"q{i}", "raw": f"Because. So the answer is answer {i}."} for i in range(30)],
        )
        sv = score(ws, gen.ref)
        _, svamp = svamp_scored(ws)
    lab = json.loads(run("report", sv.ref, "-f", "json", "--db", db).stdout)["labels"]
    assert (
        lab["distinct_labels"] == 30
        and len(lab["labels"]) == TOP_LABELS + 1
        and lab["labels"][-1] == "(other)"
    )
    assert lab["distribution"][-1] == {"label": "(other)", "gold": 10, "teacher": 10}
    numeric = json.loads(run("report", svamp.ref, "-f", "json", "--db", db).stdout)["labels"]
    assert numeric["label_space"] == "numeric" and "confusion" not in numeric
    assert numeric["agreement"] == 0.5  # by value, as gold_match says: (10 * 45) = 450


def test_histograms_of_constant_signals_and_count_axis(nli):
    db, sel = nli
    hist = json.loads(run("report", sel, "-f", "json", "--db", db).stdout)["histograms"]
    vs = hist["vote_share"]  # 1.0 on every row (one sample per example)
    assert vs["constant"] == 1.0 and vs["edges"] == [0.5, 1.5] and len(vs["counts"]) == 1
    svg = _svg_hist("vote_share", vs)
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "= 1" in labels and not any(x.strip() in ("21", "1.5", "0.5") for x in labels)
    top = str(vs["counts"][0])
    assert top in labels and "0" in labels  # the count axis: 0 ... the tallest bar
    words = hist["words"]
    svg = _svg_hist("words", words)
    assert words.get("integer") and str(int(words["edges"][0] + 0.5)) in re.findall(r">([^<]*)</text>", svg)


def test_report_page_fits_1280px_in_chromium(nli, browser, tmp_path):
    db, sel = nli
    page_file = tmp_path / "report.html"
    run("report", sel, "--db", db, "--html", str(page_file))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(page_file.as_uri())
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        too_wide = page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                 .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > 1280.5 || r.left < -0.5); })
                 .map(e => e.tagName + (e.className ? '.' + e.className : ''))"""
        )
        assert too_wide == []
        # tables fit as they are: no scroll box actually scrolls (the per-teacher cost columns were cut off)
        assert (
            page.evaluate(
                "[...document.querySelectorAll('.scroll')].filter(e => e.scrollWidth > e.clientWidth + 1).length"
            )
            == 0
        )
        headers = page.evaluate("[...document.querySelectorAll('th')].map(e => e.textContent)")
        assert "cost_per_kept_usd" in headers and "cost_usd" in headers
        # the long per-split table is folded away; the hostile rationale stayed text
        assert page.evaluate("document.querySelector('details').open") is False
        assert not page.is_visible("details table")
        assert page.evaluate("window.pwned") is None
        assert page.locator("text=Confusion matrix").count() == 1
        page.screenshot(path=str(screenshot_path("report-1280.png")), full_page=True)
    finally:
        page.close()
