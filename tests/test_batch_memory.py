"""Batch runs keep no per-run map of requests: polling renders nothing, collecting a job renders only that
job's rows, and submitting renders each request twice at most (staging, then its job's lines)."""

from __future__ import annotations

import pytest
from batch_helpers import TEACHERS, bfast
from generate_helpers import cqa_examples, fast, gen_rows

from sbs_data.generate import batches as B
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.plan import Plan
from sbs_data.generate.run import generate

N = 10  # 3 jobs of at most 4


@pytest.fixture
def renders(monkeypatch):
    """Counts Plan.item calls, and the example ids each `item_chunks(only=...)` asked for."""
    seen = {"items": 0, "only": []}
    item, chunks = Plan.item, Plan.item_chunks

    def counted_item(self, *a, **k):
        seen["items"] += 1
        return item(self, *a, **k)

    def counted_chunks(self, ws, only=None):
        seen["only"].append(None if only is None else list(only))
        return chunks(self, ws, only)

    monkeypatch.setattr(Plan, "item", counted_item)
    monkeypatch.setattr(Plan, "item_chunks", counted_chunks)
    return seen


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_polls_render_nothing_and_collect_renders_only_the_jobs_read(ws, server, renders, provider):
    cqa_examples(ws, n=N)
    server.batch_polls = 2  # every job ends on its second retrieve
    res = generate(
        ws, "toy", PlanSpec(TEACHERS[provider]), RunOptions(mode="batch", batch=bfast(), settings=fast())
    )
    run = res.summary["run"]
    assert res.summary["jobs"] == 3
    assert renders["items"] == 2 * N  # staged once, then rendered again job by job for its lines
    assert all(o is not None and len(o) <= 4 for o in renders["only"])  # never the whole plan
    renders.update(items=0, only=[])

    out = B.collect(ws, run, settings=bfast())
    assert out[0]["state"] == "pending"
    B.status(ws, run, settings=bfast())
    assert renders == {"items": 0, "only": []}  # a poll renders nothing (it rendered the whole run before)

    out = B.collect(ws, run, settings=bfast())
    assert out[0]["state"] == "done" and len(gen_rows(ws, out[0]["version"])) == N
    assert renders["items"] == N  # each ended job rendered its own rows, once
    assert sorted(len(o) for o in renders["only"]) == [2, 4, 4]
    renders.update(items=0, only=[])
    B.collect(ws, run, settings=bfast())  # a finished run: nothing
    assert renders == {"items": 0, "only": []}


def test_a_follow_up_round_renders_only_what_it_resends(ws, server, renders):
    from fakes import FaultPlan
    from generate_helpers import question

    cqa_examples(ws, n=N)
    server.set_faults(FaultPlan(by_match={question(0): ["expire"], question(5): ["400"]}))
    run = generate(
        ws, "toy", PlanSpec(TEACHERS["openai"]), RunOptions(mode="batch", batch=bfast(), settings=fast())
    )
    run = run.summary["run"]
    renders.update(items=0, only=[])
    out = B.collect(ws, run, settings=bfast())
    assert out[0]["state"] == "resubmitted"
    # collecting reads the 3 jobs (N rows); the plan's two misses are rendered, q0 is staged and sent again
    # (q5 failed for good); nothing else is
    assert renders["items"] == N + 2 + 1
    out = B.wait(ws, run, settings=bfast())
    rows = {r[0]: r[2] for r in gen_rows(ws, out[0]["version"])}
    assert rows["q0"] == "ok" and rows["q5"] == "failed" and len(rows) == N
