"""An account out of credit stops a run at once with a message naming quota and billing (issue 23)."""

from __future__ import annotations

import pytest
from fakes import FaultPlan
from generate_helpers import cqa_examples, fast, question

from sbs_data import SbsError
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import generate
from sbs_data.teachers.base import QuotaExhausted, RateLimited, classify_status


def test_quota_errors_are_not_rate_limits():
    quota = "You exceeded your current quota, please check your plan and billing details."
    assert classify_status(429, quota, "insufficient_quota") is QuotaExhausted
    assert (
        classify_status(400, "Your credit balance is too low to access the Anthropic API.") is QuotaExhausted
    )
    assert classify_status(402, "billing", "billing_error") is QuotaExhausted
    assert classify_status(429, "Rate limit reached for requests", "rate_limit_exceeded") is RateLimited


@pytest.mark.parametrize(
    "teacher", ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4-5", "gemini:gemini-2.5-flash"]
)
def test_no_credit_from_the_start_stops_within_seconds(ws, server, teacher):
    cqa_examples(ws, n=200)
    server.set_faults(FaultPlan(queue=["noquota"] * 1000))
    # waited out as a rate limit, this would end after --patience with a version of failed rows
    with pytest.raises(SbsError, match=r"no credit left \(quota/billing\)"):
        generate(ws, "toy", PlanSpec(teacher), RunOptions(settings=fast(concurrency=8, patience=5)))
    assert server.count <= 16  # the requests already in flight, not the other 184
    assert not ws.all("SELECT 1 FROM sbs_versions WHERE kind = 'generations'")  # no version of failed rows


def test_credit_running_out_midway_builds_a_partial_version(ws, server):
    cqa_examples(ws, n=60)
    faults = {question(i): ["noquota"] * 5 for i in range(20, 60)}
    server.set_faults(FaultPlan(by_match=faults))
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(concurrency=1)))
    s = res.summary
    assert "no credit left" in s["stopped"] and res.version.ref.endswith("-partial@1")
    assert s["ok"] == 20 and server.count <= 22
