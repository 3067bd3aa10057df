"""Money adds up (issue 23): a prompt asked by several rows is paid once and costed once, so the version's
cost_usd, the run's spend, the report and the card all equal the provider's bill."""

from __future__ import annotations

import pytest
from fakes import FaultPlan
from generate_helpers import CHOICES, cqa_examples, fast
from workspace_helpers import make_examples

from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import generate
from sbs_data.quality.report import report

#: gpt-4o-mini's published prices, USD per 1M tokens (input, cached input, output), hard-coded on purpose:
#: the expected bill must not come from the table the code under test reads.
PRICE_IN, PRICE_CACHED, PRICE_OUT = 0.15, 0.075, 0.60


def test_duplicate_prompts_are_costed_once(ws, server):
    rows = [
        {"id": f"q{i}", "question": f"Which word is number {i % 5}?", "choices": CHOICES, "answer": "alpha"}
        for i in range(20)
    ]  # 20 rows, 5 distinct prompts: each asked by 4 rows
    make_examples(ws, "toy", "cqa", rows, "train")
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()))
    assert server.count == 5 and res.summary["ok"] == 20
    b = server.bill("openai", "gpt-4o-mini")
    fresh = b["input_tokens"] - b["cached_input_tokens"]
    billed = (
        fresh * PRICE_IN + b["cached_input_tokens"] * PRICE_CACHED + b["output_tokens"] * PRICE_OUT
    ) / 1e6
    version_cost = ws.one("SELECT sum(cost_usd) FROM generations_at(?)", [res.version.ref])
    assert version_cost == pytest.approx(billed, rel=1e-9)
    assert res.summary["spent_usd"] == pytest.approx(billed, abs=1e-6)  # the summary rounds to 6 places
    costed = ws.all("SELECT cost_usd > 0 FROM generations_at(?) ORDER BY example_id", [res.version.ref])
    assert sum(c for (c,) in costed) == 5  # the first row of each prompt carries its cost
    teachers = report(ws, res.version.ref)["teachers"]
    assert sum(t["cost_usd"] for t in teachers) == pytest.approx(billed, abs=1e-6)  # the report rounds too


@pytest.mark.parametrize("how", ["negative", "missing", "huge", "text"])
def test_usage_that_cannot_be_true_is_estimated_and_cannot_defeat_the_budget(ws, server, caplog, how):
    """A server reporting negative, absent, astronomical or non-numeric usage made spend negative or zero, so
    --max-usd never stopped (issue 23): such answers are priced from estimates of their text and flagged."""
    cqa_examples(ws, n=400)
    server.set_faults(FaultPlan(queue=[f"lieusage:{how}"] * 400))
    cap = 0.002
    res = generate(
        ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(concurrency=16), max_usd=cap)
    )
    s = res.summary
    assert "max-usd" in s["stopped"] and 0 < s["spent_usd"] <= cap and server.count < 400
    assert s["usage_estimated"] == s["ok"] > 0
    rows = ws.all(
        "SELECT usage_estimated, cost_usd FROM generations_at(?) WHERE parse_status = 'ok'", [res.version.ref]
    )
    assert rows and all(flag and cost > 0 for flag, cost in rows)
    # the estimate is close to what the server really billed (its own token counts)
    b = server.bill("openai", "gpt-4o-mini")
    billed = ((b["input_tokens"] - b["cached_input_tokens"]) * PRICE_IN + b["cached_input_tokens"] * PRICE_CACHED
              + b["output_tokens"] * PRICE_OUT) / 1e6  # fmt: skip
    assert s["spent_usd"] == pytest.approx(billed, rel=0.5)
    assert sum("usage that cannot be true" in m for m in caplog.messages) == 1  # warned once


def test_honest_usage_is_kept_as_reported(ws, server):
    cqa_examples(ws, n=10)
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()))
    assert "usage_estimated" not in res.summary
    assert ws.one("SELECT count(*) FROM generations_at(?) WHERE usage_estimated", [res.version.ref]) == 0
