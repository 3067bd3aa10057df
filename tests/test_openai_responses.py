"""OpenAI's Responses API and service tiers, end to end through the real SDK and the stand-in: reasoning models
go through /v1/responses by default (online and in batch), `--api` overrides, `--reasoning-summary` stores
the teacher's reasoning (and export can train on it), `--service-tier` is priced as the answer reports it,
and flex's busy answers lose no row. Bills are checked against the stand-in's own token counts and prices."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from batch_helpers import bfast
from generate_helpers import cqa_examples, fast, gen_rows, long_prompt
from typer.testing import CliRunner

from sbs_data import SbsError
from sbs_data.export.options import ExportOptions
from sbs_data.export.shards import export
from sbs_data.generate import batches as B
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import explain, generate

GPT5 = "openai:gpt-5-mini"


def paths(srv) -> set[str]:
    return {e["path"] for e in srv.log}


def spent(ws, ref: str) -> float:
    return ws.one("SELECT sum(cost_usd) FROM generations_at(?)", [ref])


def test_reasoning_model_goes_through_responses_and_is_billed_what_the_server_billed(ws, server, tmp_path):
    cqa_examples(ws, n=12)
    res = generate(
        ws,
        "toy",
        PlanSpec(GPT5, prompt_path=long_prompt(tmp_path)),
        RunOptions(settings=fast(concurrency=1)),
    )
    assert res.summary["ok"] == 12 and res.summary["failed"] == 0
    assert paths(server) == {"/v1/responses"}
    assert res.version.config["teacher"]["endpoint"] == "responses"
    bill = server.bill("openai", "gpt-5-mini")
    assert bill["requests"] == 12 and bill["reasoning_tokens"] > 0 and bill["cached_input_tokens"] > 0
    # the stand-in prices its own counts (reasoning billed as output, cached input at the cached price)
    assert spent(ws, res.version.ref) == pytest.approx(bill["usd"], rel=1e-9)
    rows = ws.all(
        "SELECT prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, service_tier, finish_reason "
        "FROM generations_at(?)",
        [res.version.ref],
    )
    assert (
        sum(r[0] for r in rows) == bill["input_tokens"]
        and sum(r[1] for r in rows) == bill["cached_input_tokens"]
    )
    assert (
        sum(r[2] for r in rows) == bill["output_tokens"]
        and sum(r[3] for r in rows) == bill["reasoning_tokens"]
    )
    assert {r[4] for r in rows} == {"default"} and {r[5] for r in rows} == {"stop"}
    # the default export is unchanged: no summaries, no optional column
    out = export(ws, res.version.ref, tmp_path / "plain")
    assert "teacher_reasoning" not in out.manifest["columns"]


def test_reasoning_summaries_are_stored_and_can_be_the_rationale(ws, server, tmp_path):
    cqa_examples(ws, n=6)
    plain = generate(ws, "toy", PlanSpec(GPT5), RunOptions(settings=fast()), name="plain")
    with pytest.raises(SbsError, match="no reasoning summaries"):
        export(ws, plain.version.ref, tmp_path / "x", ExportOptions(rationale_source="reasoning_summary"))
    res = generate(
        ws, "toy", PlanSpec(GPT5, params={"reasoning_summary": "auto"}), RunOptions(settings=fast())
    )
    assert res.summary["ok"] == 6 and res.summary["called"] == 6  # the summary is part of what was asked
    rows = ws.all(
        "SELECT example_id, rationale, teacher_reasoning FROM generations WHERE dataset = 'toy-gpt-5-mini'"
    )
    assert len(rows) == 6 and all(r[2] and r[2].startswith("**Weighing request") for r in rows)
    assert all(r[1] != r[2] for r in rows)
    summary = {r[0]: r[2] for r in rows}
    # export: the summaries travel as an optional column; --rationale-source picks the rationale
    m = export(ws, res.version.ref, tmp_path / "out").manifest
    assert m["columns"][-1] == "teacher_reasoning" and "rationale_source" not in m["options"]
    shard = tmp_path / "out" / m["splits"]["train"]["shards"][0]["path"]
    table = pq.read_table(shard).to_pylist()
    assert {r["example_id"]: r["teacher_reasoning"] for r in table} == summary
    assert all(r["rationale"] != r["teacher_reasoning"] for r in table)
    m = export(
        ws, res.version.ref, tmp_path / "rs", ExportOptions(rationale_source="reasoning_summary")
    ).manifest
    assert m["options"]["rationale_source"] == "reasoning_summary"
    table = pq.read_table(tmp_path / "rs" / m["splits"]["train"]["shards"][0]["path"]).to_pylist()
    assert {r["example_id"]: r["rationale"] for r in table} == summary
    assert "reasoning summary" in (tmp_path / "rs" / "README.md").read_text()


def test_flex_tier_is_billed_at_the_flex_price_and_busy_answers_lose_no_row(ws, server):
    server.flex_busy, server.flex_busy_tries = 0.5, 2  # half the prompts turned away twice first
    cqa_examples(ws, n=16)
    dry = generate(ws, "toy", PlanSpec(GPT5), RunOptions(settings=fast(), dry_run=True))
    dry_flex = generate(
        ws, "toy", PlanSpec(GPT5), RunOptions(settings=fast(), dry_run=True, service_tier="flex")
    )
    assert dry_flex.summary["service_tier"] == "flex"
    assert dry_flex.summary["max_cost_usd"] == pytest.approx(dry.summary["max_cost_usd"] / 2, rel=0.01)
    res = generate(ws, "toy", PlanSpec(GPT5), RunOptions(settings=fast(max_attempts=2), service_tier="flex"))
    assert res.summary["ok"] == 16 and res.summary["failed"] == 0  # no row lost to "not now"
    flex = server.bill("openai", "gpt-5-mini", tier="flex")
    assert flex["requests"] == 16 and flex["rate_limited"] >= 4 and res.summary["rate_limited"] >= 4
    assert server.stats()["outcomes"]["resource_unavailable"] == flex["rate_limited"]
    assert spent(ws, res.version.ref) == pytest.approx(flex["usd"], rel=1e-9)
    assert ws.all("SELECT DISTINCT service_tier FROM generations_at(?)", [res.version.ref]) == [("flex",)]
    # the same tokens at the default tier cost twice as much
    f = res.version
    full = ws.one(
        "SELECT sum((prompt_tokens - cached_tokens) * 0.25 + cached_tokens * 0.025 + completion_tokens * 2.0) "
        "/ 1e6 FROM generations_at(?)",
        [f.ref],
    )
    assert spent(ws, f.ref) == pytest.approx(full / 2, rel=1e-9)


def test_priority_tier_is_priced_from_the_models_table(ws, server):
    cqa_examples(ws, n=5)
    res = generate(
        ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(), service_tier="priority")
    )
    assert paths(server) == {"/v1/chat/completions"}  # a chat model stays on Chat Completions
    prio = server.bill("openai", "gpt-4o-mini", tier="priority")
    assert prio["requests"] == 5 and spent(ws, res.version.ref) == pytest.approx(prio["usd"], rel=1e-6)
    assert ws.all("SELECT DISTINCT service_tier FROM generations_at(?)", [res.version.ref]) == [("priority",)]


def test_api_chat_forces_chat_and_the_two_apis_have_different_keys(ws, server):
    cqa_examples(ws, n=4)
    chat = generate(ws, "toy", PlanSpec(GPT5, api="chat"), RunOptions(settings=fast()), name="via-chat")
    assert chat.summary["ok"] == 4 and paths(server) == {"/v1/chat/completions"}
    assert chat.version.config["teacher"]["endpoint"] == "chat.completions"
    # cache explain names the API as the ingredient that differs
    why = explain(ws, "toy", PlanSpec(GPT5), limit_rows=1)
    assert why[0]["reason"] == 'endpoint: cached "chat.completions" -> now "responses"'
    resp = generate(ws, "toy", PlanSpec(GPT5), RunOptions(settings=fast()), name="via-responses")
    assert resp.summary["called"] == 4 and server.count == 8  # no cache hit across APIs
    assert paths(server) == {"/v1/chat/completions", "/v1/responses"}
    k_chat = {r[6] for r in gen_rows(ws, chat.version.ref)}
    k_resp = {r[6] for r in gen_rows(ws, resp.version.ref)}
    assert len(k_chat) == len(k_resp) == 4 and not k_chat & k_resp
    endpoints = dict(ws.all("SELECT endpoint, count(*) FROM cache GROUP BY 1"))
    assert endpoints == {"chat.completions": 4, "responses": 4}
    again = generate(ws, "toy", PlanSpec(GPT5, api="responses"), RunOptions(settings=fast()), name="x")
    assert again.summary["called"] == 0 and server.count == 8  # --api responses is the default's key


def test_batch_mode_sends_responses_lines_and_builds_the_version(ws, server):
    cqa_examples(ws, n=6)
    res = generate(
        ws,
        "toy",
        PlanSpec(GPT5, params={"reasoning_summary": "concise"}),
        RunOptions(mode="batch", batch=bfast(), settings=fast()),
    )
    assert server.count == 0 and {b["endpoint"] for b in server.batches.values()} == {"/v1/responses"}
    lines = [json.loads(x) for f in server.files.values() for x in f.decode().splitlines() if '"url"' in x]
    assert lines and {x["url"] for x in lines} == {"/v1/responses"}
    assert all(x["body"]["reasoning"] == {"summary": "concise"} for x in lines)
    out = B.collect(ws, res.summary["run"], settings=bfast())
    assert out[0]["state"] == "done" and out[0]["succeeded"] == 6
    rows = ws.all(
        "SELECT parse_status, teacher_reasoning, cost_usd FROM generations_at(?)", [out[0]["version"]]
    )
    assert len(rows) == 6 and all(r[0] == "ok" and r[1] for r in rows)
    assert sum(r[2] for r in rows) == pytest.approx(server.bill("openai", "gpt-5-mini", "batch")["usd"])
    # the same keys as online: an online rerun calls nothing
    again = generate(
        ws, "toy", PlanSpec(GPT5, params={"reasoning_summary": "concise"}), RunOptions(settings=fast())
    )
    assert server.count == 0 and again.version.ref == out[0]["version"]


def test_compat_stays_on_chat_unless_asked(ws, server):
    from fakes import Model

    server.models["tiny-reasoner"] = Model("openai", open_weights=True)
    cqa_examples(ws, n=2)
    spec = "openai-compat:tiny-reasoner"
    generate(ws, "toy", PlanSpec(spec, base_urls=(server.openai_url,)), RunOptions(settings=fast()))
    assert paths(server) == {"/v1/chat/completions"}
    generate(
        ws,
        "toy",
        PlanSpec(spec, base_urls=(server.openai_url,), api="responses"),
        RunOptions(settings=fast()),
    )
    assert paths(server) == {"/v1/chat/completions", "/v1/responses"}


@pytest.mark.parametrize(
    "spec, run, match",
    [
        (PlanSpec("anthropic:claude-3-5-haiku"), {"service_tier": "flex"}, "OpenAI option"),
        (
            PlanSpec("openai-compat:llama", base_urls=("http://x/v1",)),
            {"service_tier": "flex"},
            "OpenAI option",
        ),
        (PlanSpec("openai:gpt-4o-mini"), {"service_tier": "flex"}, "no flex tier in the models table"),
        (PlanSpec(GPT5), {"service_tier": "turbo"}, "--service-tier must be one of"),
        (PlanSpec(GPT5), {"service_tier": "flex", "mode": "batch"}, "applies to online calls"),
        (PlanSpec("anthropic:claude-3-5-haiku", api="responses"), {}, "has one API"),
        (PlanSpec(GPT5, api="completions"), {}, "--api must be chat or responses"),
        (PlanSpec(GPT5, params={"seed": 3}), {}, "Responses API by default, which takes no --seed"),
        (PlanSpec(GPT5, params={"max_tokens": 8}), {}, "at least 16"),
        (PlanSpec(GPT5, params={"reasoning_summary": "long"}), {}, "--reasoning-summary must be one of"),
        (PlanSpec("openai:gpt-4o-mini", params={"reasoning_summary": "auto"}), {}, "not a reasoning model"),
        (PlanSpec(GPT5, api="chat", params={"reasoning_summary": "auto"}), {}, "add --api responses"),
    ],
)
def test_refused_before_any_call(ws, server, spec, run, match):
    cqa_examples(ws, n=2)
    with pytest.raises(SbsError, match=match):
        generate(ws, "toy", spec, RunOptions(settings=fast(), **run))
    assert server.count == 0


def test_seed_goes_to_chat_with_api_chat(ws, server):
    cqa_examples(ws, n=2)
    res = generate(ws, "toy", PlanSpec(GPT5, api="chat", params={"seed": 3}), RunOptions(settings=fast()))
    assert res.summary["ok"] == 2 and paths(server) == {"/v1/chat/completions"}


def test_cli_flags(server, tmp_path):
    from sbs_data.cli import app
    from sbs_data.workspace import Workspace

    db = str(tmp_path / "c.duckdb")
    with Workspace.open(db) as w:
        cqa_examples(w, n=3)
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["generate", "toy", "-T", GPT5, "--reasoning-summary", "detailed", "--service-tier", "flex",
         "--no-progress", "--db", db, "-f", "json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (
        paths(server) == {"/v1/responses"}
        and server.bill("openai", "gpt-5-mini", tier="flex")["requests"] == 3
    )
    r = runner.invoke(
        app, ["generate", "toy", "-T", GPT5, "--api", "chat", "--dry-run", "--db", db, "-f", "json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["to_call"] == 3  # another API: nothing of it is cached
    r = runner.invoke(app, ["generate", "toy", "-T", "anthropic:claude-3-5-haiku", "--service-tier", "flex",
                            "--db", db])  # fmt: skip
    assert r.exit_code == 1 and "OpenAI option" in r.output
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "export",
            "toy-gpt-5-mini",
            "--out",
            str(out),
            "--rationale-source",
            "reasoning_summary",
            "--db",
            db,
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        json.loads((out / "manifest.json").read_text())["options"]["rationale_source"] == "reasoning_summary"
    )
    r = runner.invoke(app, ["sql", "SELECT count(teacher_reasoning), min(service_tier) FROM generations", "--db", db,
                            "-f", "json"])  # fmt: skip
    assert json.loads(r.stdout) == [{"count(teacher_reasoning)": 3, "min(service_tier)": "flex"}]


def test_a_batch_run_recorded_before_the_api_choice_is_collected_through_chat(ws, server):
    cqa_examples(ws, n=3)
    res = generate(
        ws, "toy", PlanSpec(GPT5, api="chat"), RunOptions(mode="batch", batch=bfast(), settings=fast())
    )
    run = res.summary["run"]
    args = json.loads(ws.one("SELECT args FROM sbs_batch_runs WHERE run_id = ?", [run]))
    assert args["api"] == "chat"
    del args["api"]  # as an older sbs-data recorded it
    ws.execute("UPDATE sbs_batch_runs SET args = ? WHERE run_id = ?", [json.dumps(args), run])
    out = B.collect(ws, run, settings=bfast())
    assert out[0]["state"] == "done" and out[0]["succeeded"] == 3
    assert {b["endpoint"] for b in server.batches.values()} == {"/v1/chat/completions"}
