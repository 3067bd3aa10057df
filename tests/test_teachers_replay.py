"""replay:NAME@N serves recorded completions by (example_id, sample_idx): offline, through the engine."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner
from workspace_helpers import make_examples, make_generations

from sbs_data import SbsError
from sbs_data.cli import app
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import generate
from sbs_data.teachers.base import Permanent, Request
from sbs_data.teachers.replay import ReplayTeacher

ROWS = [
    {
        "id": "s1",
        "input": "Ann has 3 apples and buys 4 more. How many apples does she have?",
        "label": "3 + 4",
    },
    {"id": "s2", "input": "A box holds 12 eggs. How many eggs are in 2 boxes?", "label": "12 * 2"},
    {"id": "s3", "input": "Sam had 10 cards and lost 6. How many are left?", "label": "10 - 6"},
]


@pytest.fixture
def recorded(ws):
    ex = make_examples(ws, "demo-svamp", "svamp", ROWS)
    gen = make_generations(
        ws,
        ex,
        [
            {
                "example_id": "s1",
                "raw": "Ann has 3 + 4 = 7 apples. The answer is (3 + 4).\n\nQ: invented run-on",
            },
            {"example_id": "s1", "sample_idx": 1, "raw": "3 and 4 make 7. The answer is 7."},
            {"example_id": "s2", "raw": "Two boxes hold 12 * 2 = 24 eggs. The answer is (12 * 2)."},
        ],
        name="demo-svamp-palm",
        teacher="palm-540b",
    )
    return ex, gen


def test_replay_answers_by_example_and_sample(ws, recorded):
    t = ReplayTeacher("demo-svamp-palm", ws)
    assert t.model == "demo-svamp-palm@1" and t.network is False and t.recorded_teacher == "palm-540b"
    msg = ({"role": "user", "content": "whatever prompt"},)
    r = asyncio.run(t.complete(Request(msg, sample_idx=1, example_id="s1")))
    assert r.text == "3 and 4 make 7. The answer is 7." and r.prompt_tokens == 100
    with pytest.raises(Permanent, match="no completion for example 's3'"):
        asyncio.run(t.complete(Request(msg, example_id="s3")))
    # the same prompt for two examples must not share a cache key: replay answers by id
    from sbs_data.generate.cache import cache_key

    assert cache_key(t, Request(msg, example_id="s1")) != cache_key(t, Request(msg, example_id="s2"))
    with pytest.raises(SbsError, match="expected generations"):
        ReplayTeacher("demo-svamp", ws)


def test_generate_with_replay_offline(ws, recorded):
    res = generate(
        ws,
        "demo-svamp",
        PlanSpec("replay:demo-svamp-palm@1"),
        RunOptions(offline=True),
        name="demo-svamp-replay",
    )
    rows = ws.all(
        "SELECT example_id, parse_status, pred_label, rationale, error, cost_usd FROM generations_at('demo-svamp-replay') ORDER BY 1"
    )
    assert [r[:3] for r in rows] == [("s1", "ok", "3 + 4"), ("s2", "ok", "12 * 2"), ("s3", "failed", None)]
    assert "run-on" not in rows[0][3] and "no completion" in rows[2][4] and rows[0][5] == 0.0
    assert res.version.config["teacher"]["recorded_teacher"] == "palm-540b"
    # two samples: s1 has both recorded
    res2 = generate(
        ws, "demo-svamp", PlanSpec("replay:demo-svamp-palm@1", samples=2, params={"temperature": 0.7})
    )
    assert res2.version.ref == "demo-svamp-palm-1@1" and res2.summary["ok"] == 3
    # replay pins the version it serves, so the default name never lands on the replayed dataset itself
    assert generate(ws, "demo-svamp", PlanSpec("replay:demo-svamp-palm")).version.ref == "demo-svamp-palm-1@2"


def test_replay_via_cli(tmp_path, recorded, ws):
    ws.close()
    r = CliRunner().invoke(
        app,
        [
            "generate",
            "demo-svamp",
            "--teacher",
            "replay:demo-svamp-palm@1",
            "--offline",
            "--name",
            "demo-svamp-replay",
            "--db",
            str(ws.path),
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert '"version": "demo-svamp-replay@1"' in r.output and '"failed": 1' in r.output
