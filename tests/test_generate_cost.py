"""Money adds up (issue 23): a prompt asked by several rows is paid once and costed once, so the version's
cost_usd, the run's spend, the report and the card all equal the provider's bill."""

from __future__ import annotations

import pytest
from generate_helpers import CHOICES, fast
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
