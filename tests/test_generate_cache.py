"""The request cache: what goes into a key, zero-call reruns, --offline, explain/stats, and no keys on disk."""

from __future__ import annotations

import pytest
from fakes import FaultPlan
from generate_helpers import FAKE_KEY, cqa_examples, fast, gen_rows, generate_argv
from typer.testing import CliRunner

from sbs_data import SbsError
from sbs_data.cli import app
from sbs_data.generate.cache import cache_key, ingredients
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import generate
from sbs_data.teachers.anthropic import AnthropicTeacher
from sbs_data.teachers.base import Request
from sbs_data.teachers.compat import CompatTeacher
from sbs_data.teachers.openai import OpenAITeacher

BASE = Request(
    ({"role": "user", "content": "Q: x?\nA:"},),
    system="sys",
    params={"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "seed": 1, "stop": ["\n\n"]},
    json_schema=None,
    sample_idx=0,
    example_id="e1",
)


def _key(teacher=None, **changes) -> str:
    t = teacher or OpenAITeacher("gpt-4o-mini", api_key="k1")
    fields = {**BASE.__dict__, **changes}
    return cache_key(t, Request(**fields))


@pytest.mark.parametrize(
    "change",
    [
        {"system": "other system"},
        {"system": None},
        {"messages": ({"role": "user", "content": "Q: y?\nA:"},)},
        {"messages": ({"role": "system", "content": "Q: x?\nA:"},)},
        {"params": {**BASE.params, "temperature": 0.7}},
        {"params": {**BASE.params, "top_p": 0.9}},
        {"params": {**BASE.params, "max_tokens": 65}},
        {"params": {**BASE.params, "seed": 2}},
        {"params": {**BASE.params, "stop": ["\n"]}},
        {"params": {**BASE.params, "n": 2}},
        {"json_schema": {"type": "object"}},
        {"sample_idx": 1},
    ],
)
def test_each_request_ingredient_changes_the_key(change):
    assert _key(**change) != _key()


def test_teacher_identity_changes_the_key_but_keys_and_urls_do_not():
    base = _key()
    assert _key(OpenAITeacher("gpt-4o", api_key="k1")) != base  # model
    assert _key(CompatTeacher("gpt-4o-mini", base_urls=["http://a/v1"])) != base  # provider
    a = AnthropicTeacher("gpt-4o-mini", api_key="k1")
    assert _key(a) != base  # provider + endpoint
    ep = OpenAITeacher("gpt-4o-mini", api_key="k1")
    ep.endpoint = "responses"
    assert _key(ep) != base  # endpoint
    assert _key(OpenAITeacher("gpt-4o-mini", api_key="another-key", base_url="http://elsewhere/v1")) == base
    assert _key(example_id="e2") == base  # ids are not content
    assert "k1" not in str(ingredients(OpenAITeacher("gpt-4o-mini", api_key="k1"), BASE))
    # params order and None-valued params do not matter
    assert _key(params={**dict(reversed(list(BASE.params.items()))), "seed": 1, "logit_bias": None}) == base


def test_rerun_makes_zero_calls_and_changes_miss(ws, server):
    cqa_examples(ws, n=12)
    first = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()))
    assert server.count == 12 and first.summary["cached"] == 0
    again = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()))
    assert server.count == 12 and again.summary["called"] == 0 and again.summary["cached"] == 12
    assert gen_rows(ws, first.version.ref) == gen_rows(ws, again.version.ref)
    generate(
        ws, "toy", PlanSpec("openai:gpt-4o-mini", params={"temperature": 0.2}), RunOptions(settings=fast())
    )
    assert server.count == 24
    ws.close()  # the CLI opens the file itself
    # explain names the ingredient that differs
    out = CliRunner().invoke(
        app,
        [
            "cache",
            "explain",
            "toy",
            "--teacher",
            "openai:gpt-4o-mini",
            "--temperature",
            "0.5",
            "--db",
            str(ws.path),
            "--rows",
            "2",
            "--format",
            "json",
        ],
    )
    assert out.exit_code == 0, out.output
    assert (
        "params.temperature: cached 0.0 -> now 0.5" in out.output
        or "params.temperature: cached 0.2 -> now 0.5" in out.output
    )
    out = CliRunner().invoke(
        app,
        ["cache", "explain", "toy", "--teacher", "openai:gpt-4o", "--db", str(ws.path), "--format", "json"],
    )
    assert (
        'model: cached \\"gpt-4o-mini\\" -> now \\"gpt-4o\\"' in out.output and "max_tokens" not in out.output
    )
    out = CliRunner().invoke(app, ["cache", "stats", "--db", str(ws.path), "--format", "json"])
    assert out.exit_code == 0 and '"answers": 24' in out.output


def test_offline_fails_cleanly_on_a_miss_and_replays_hits(ws, server, monkeypatch):
    cqa_examples(ws, n=5)
    with pytest.raises(SbsError, match="--offline: 5 of 5 requests are not in the cache"):
        generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(offline=True, settings=fast()))
    assert server.count == 0 and ws.one("SELECT count(*) FROM sbs_runs") == 0
    generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", limit=3), RunOptions(settings=fast()))
    monkeypatch.delenv("OPENAI_API_KEY")  # a deterministic replay needs no key
    res = generate(
        ws, "toy", PlanSpec("openai:gpt-4o-mini", limit=3), RunOptions(offline=True, settings=fast())
    )
    assert res.summary["cached"] == 3 and server.count == 3
    ws.close()
    r = CliRunner().invoke(app, generate_argv(ws.path, "--offline"))
    assert r.exit_code == 1 and "Error: --offline: 2 of 5" in r.output and "Traceback" not in r.output


def test_failures_are_not_answers(ws, server):
    cqa_examples(ws, n=3)
    server.set_faults(FaultPlan(queue=["400"]))
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(concurrency=1)))
    assert res.summary["failed"] == 1
    assert (
        ws.one("SELECT count(*) FROM sbs_cache") == 2 and ws.one("SELECT count(*) FROM cache_failures") == 1
    )
    res2 = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()))
    assert server.count == 4 and res2.summary["failed"] == 0
    assert ws.one("SELECT count(*) FROM cache_failures WHERE answered_later") == 1


def test_keys_never_reach_the_workspace_or_output(tmp_path, server, monkeypatch):
    from sbs_data.workspace import Workspace

    db = tmp_path / "keys.duckdb"
    ws = Workspace.open(db)
    cqa_examples(ws, n=6)
    ws.close()
    server.set_faults(FaultPlan(queue=["401", "401"]))  # the fake server echoes the key in its 401 body
    runner = CliRunner()
    r = runner.invoke(
        app, generate_argv(db, "--backoff", "0.01", "--format", "json", "--base-url", server.openai_url)
    )
    assert r.exit_code == 0, r.output
    assert FAKE_KEY not in r.output
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-abcdefghijkl")
    server.set_faults(FaultPlan(require_key="sk-right"))
    r = runner.invoke(app, generate_argv(db, "--backoff", "0.01", teacher="openai:gpt-4o"))
    assert r.exit_code == 1 and "check the API key" in r.output and "sk-wrong-key" not in r.output
    ws = Workspace.open(db)
    assert ws.one("SELECT count(*) FROM sbs_failures WHERE kind = 'auth'") >= 2
    ws.con.execute("CHECKPOINT")
    ws.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keys.duckdb"))
    assert b"invalid api key" in blob or b"auth" in blob  # the errors are there...
    assert FAKE_KEY.encode() not in blob and b"sk-wrong-key" not in blob  # ...the keys are not
    assert b"SUPERSECRET" not in blob


def test_journal_segments_are_dropped_once_committed_and_kept_until_then(tmp_path):
    """The journal holds at most the answers not yet committed: a long run does not grow it."""
    import asyncio
    from types import SimpleNamespace

    from sbs_data.generate.answer import Answer
    from sbs_data.generate.cache import CacheWriter, journal_dir, replay_journals
    from sbs_data.teachers.registry import parse_spec
    from sbs_data.workspace import Workspace

    ws = Workspace.open(tmp_path / "j.duckdb")
    teacher = parse_spec("openai:gpt-4o-mini")
    item = SimpleNamespace(subject="s", ingredients_json="{}")
    sizes: list[int] = []

    async def main() -> CacheWriter:
        w = CacheWriter(ws, teacher, "run1", flush_interval=0.01)
        w.start()

        def journaled() -> int:
            return sum(1 for f in journal_dir(ws).glob("*.jsonl") for _ in open(f))

        for wave in range(5):
            for i in range(50):
                w.answer(Answer(f"k{wave}-{i}", "text"), item)
            # poll (no wall-clock assumption): the wave is committed, then its journal segment goes
            for _ in range(3000):
                await asyncio.sleep(0.01)
                if w.written == 50 * (wave + 1) and journaled() == 0:  # committed, then dropped
                    break
            sizes.append(journaled())
        # an answer that arrives and is never committed (the process dies) stays journaled
        w.answer(Answer("late", "text"), item)
        return w

    w = asyncio.run(main())
    assert sizes == [0] * 5  # committed waves leave the journal
    assert ws.one("SELECT count(*) FROM sbs_cache") == 250
    assert w._seq == 251  # "late" was journaled, never written: the next run folds it in
    assert replay_journals(ws) == 1 and ws.one("SELECT count(*) FROM sbs_cache") == 251
    ws.close()
