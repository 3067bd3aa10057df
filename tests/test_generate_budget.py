"""Budgets never hang (issue 23): a cap below one request's worst case is refused before any call, and a run
that stops before every row is answered exits with its own status."""

from __future__ import annotations

import pytest
from generate_helpers import cqa_examples, fast
from typer.testing import CliRunner

from sbs_data import SbsError
from sbs_data.cli import EXIT_STOPPED, app
from sbs_data.generate.engine import worst_cost
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import generate
from sbs_data.teachers.models import facts_for
from sbs_data.workspace import Workspace


@pytest.mark.parametrize("max_usd", [0.0, 1e-6])
def test_a_cap_below_one_request_is_refused_before_any_call(ws, server, max_usd):
    cqa_examples(ws, n=60)
    with pytest.raises(SbsError, match=r"below what one request may cost at worst .*lower --max-tokens"):
        generate(ws, "toy", PlanSpec("openai:gpt-5-mini"), RunOptions(settings=fast(), max_usd=max_usd))
    assert server.count == 0
    assert not ws.all("SELECT 1 FROM sbs_versions WHERE dataset LIKE 'toy-gpt%'")


def test_the_refusal_names_the_worst_case(ws, server):
    cqa_examples(ws, n=3)
    p = PlanSpec("openai:gpt-4o-mini", params={"max_tokens": 64})
    with pytest.raises(SbsError) as ei:
        generate(ws, "toy", p, RunOptions(settings=fast(), max_usd=1e-7))
    assert "up to 64 completion tokens" in str(ei.value)
    # lowering --max-tokens is the way out: the same cap with a smaller budget pays for some requests
    from sbs_data.generate.plan import plan
    from sbs_data.teachers.registry import parse_spec

    t = parse_spec("openai:gpt-4o-mini")
    first = next(iter(plan(ws, "toy", t, params={"max_tokens": 8}).misses(ws)))
    cap = worst_cost(facts_for("openai", "gpt-4o-mini"), first.req) * 1.5
    res = generate(
        ws,
        "toy",
        PlanSpec("openai:gpt-4o-mini", params={"max_tokens": 8}),
        RunOptions(settings=fast(), max_usd=cap),
    )
    assert server.count >= 1 and res.summary["spent_usd"] <= cap


def test_a_stopped_run_exits_with_its_own_status(tmp_path, server):
    db = tmp_path / "w.duckdb"
    with Workspace.open(db) as ws:
        cqa_examples(ws, n=40)
    r = CliRunner().invoke(
        app, ["generate", "toy", "--teacher", "openai:gpt-4o-mini", "--max-usd", "0.002", "--db", str(db),
              "--concurrency", "8", "--backoff", "0.01"],
    )  # fmt: skip
    assert r.exit_code == EXIT_STOPPED == 3, r.output
    assert "Stopped: --max-usd" in r.output and "toy-gpt-4o-mini-partial@1" in r.output
    r = CliRunner().invoke(
        app, ["generate", "toy", "--teacher", "openai:gpt-4o-mini", "--max-usd", "1e-9", "--db", str(db)]
    )
    assert r.exit_code == 1 and "below what one request may cost" in r.output
