"""Anthropic today, end to end through the SDK and the stand-in: `--json` as native structured outputs on the
models that have them (the prompt method elsewhere), the prompt-cache lifetime (`--cache-ttl`, 1 hour by
default in Message Batches) and its price, billed exactly as the stand-in counted the tokens."""

from __future__ import annotations

import asyncio
import dataclasses

import anthropic
import pytest
from batch_helpers import bfast
from fakes import FakeLLMServer
from generate_helpers import FAKE_KEY, bill, cqa_examples, fast, gen_rows, long_prompt

from sbs_data import SbsError
from sbs_data.generate import batches as B
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.plan import api_schema
from sbs_data.generate.run import generate
from sbs_data.teachers.anthropic import AnthropicTeacher
from sbs_data.teachers.base import Permanent, Request
from sbs_data.teachers.models import facts_for

#: claude-sonnet-4-5 as https://platform.claude.com/docs/en/about-claude/pricing publishes it, USD per 1M
#: tokens: input, cache read, 5-minute write (1.25x), 1-hour write (2x), output.
SONNET_45 = {"input": 3.00, "read": 0.30, "write_5m": 3.75, "write_1h": 6.00, "output": 15.00}


def billed_usd(b: dict, prices: dict[str, float], discount: float = 1.0) -> float:
    """What the stand-in's own token counts cost at the hard-coded prices."""
    fresh = b["input_tokens"] - b["cached_input_tokens"] - b["cache_write_tokens"]
    assert b["cache_write_tokens"] == b["cache_write_5m_tokens"] + b["cache_write_1h_tokens"]
    usd = (
        fresh * prices["input"]
        + b["cached_input_tokens"] * prices["read"]
        + b["cache_write_5m_tokens"] * prices["write_5m"]
        + b["cache_write_1h_tokens"] * prices["write_1h"]
        + b["output_tokens"] * prices["output"]
    ) / 1e6
    return usd * discount


def marks(body: dict) -> list[dict]:
    """The cache_control marks of a messages request body."""
    blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
    if isinstance(body.get("system"), list):
        blocks += body["system"]
    return [b["cache_control"] for b in blocks if "cache_control" in b]


# -- structured outputs -----------------------------------------------------------------------------
def test_json_is_native_where_the_model_has_structured_outputs_else_in_the_prompt(ws, server):
    cqa_examples(ws, n=6)
    server.keep_bodies = True
    native = generate(
        ws, "toy", PlanSpec("anthropic:claude-sonnet-4-5", json_mode=True), RunOptions(settings=fast())
    )
    sent = [b for b in server.bodies if b["path"] == "/v1/messages"]
    assert len(sent) == 6
    for b in sent:  # the schema enforced by the API (GA: output_config.format, no beta header)
        assert b["body"]["output_config"] == {"format": {"type": "json_schema", "schema": api_schema()}}
        assert "output_format" not in b["body"]
        assert "anthropic-beta" not in {k.lower() for k in b["headers"]}
    assert native.summary["ok"] == 6 and all(r[2] == "ok" for r in gen_rows(ws, native.version.ref))

    server.bodies.clear()  # Claude Sonnet 4 has no structured outputs: the prompt asks, the engine validates
    prompted = generate(
        ws, "toy", PlanSpec("anthropic:claude-sonnet-4", json_mode=True), RunOptions(settings=fast())
    )
    assert len(server.bodies) == 6 and not any("output_config" in b["body"] for b in server.bodies)
    assert all("JSON" in b["body"]["system"] for b in server.bodies)  # the prompt method: the same prompt
    assert prompted.summary["ok"] == 6 and all(r[2] == "ok" for r in gen_rows(ws, prompted.version.ref))


def test_the_stand_in_refuses_native_json_on_a_model_without_it(server):
    t = AnthropicTeacher("claude-sonnet-4", base_url=server.anthropic_url, api_key=FAKE_KEY)
    wrong = dataclasses.replace(facts_for("anthropic", "claude-sonnet-4"), native_json=True)  # a wrong table
    t.facts = wrong
    req = Request(({"role": "user", "content": "Q: pick one\nA:"},), json_schema=api_schema())

    async def call():
        try:
            return await t.complete(req)
        finally:
            await t.aclose()

    with pytest.raises(Permanent, match="structured outputs are not supported") as ei:
        asyncio.run(call())
    assert ei.value.status == 400


def _msg(srv: FakeLLMServer, model: str, schema: dict, *, legacy: bool = False, beta: bool = False):
    client = anthropic.Anthropic(base_url=srv.anthropic_url, api_key=FAKE_KEY, max_retries=0, timeout=5)
    fmt = {"type": "json_schema", "schema": schema}
    return client.messages.create(
        model=model,
        max_tokens=200,
        messages=[{"role": "user", "content": "Q: Which is a color?\n(a) red\n(b) run\nA:"}],
        extra_body={"output_format": fmt} if legacy else {"output_config": {"format": fmt}},
        extra_headers={"anthropic-beta": "structured-outputs-2025-11-13"} if beta else None,
    )


@pytest.mark.parametrize(
    "schema, match",
    [
        ({**api_schema(), "additionalProperties": True}, "additionalProperties"),
        ({k: v for k, v in api_schema().items() if k != "additionalProperties"}, "additionalProperties"),
        (
            {**api_schema(), "properties": {"rationale": {"type": "string", "minLength": 1}}},
            "minLength",
        ),
        ({**api_schema(), "properties": {"n": {"type": "integer", "maximum": 5}}}, "numerical constraints"),
        ({**api_schema(), "properties": {"xs": {"type": "array", "minItems": 2}}}, "minItems"),
        ({"$ref": "https://example.com/s.json"}, "external references"),
        ({"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"}, "recursive"),
    ],
)
def test_the_stand_in_refuses_schemas_outside_the_documented_subset(srv_plain, schema, match):
    with pytest.raises(anthropic.BadRequestError, match=match):
        _msg(srv_plain, "claude-sonnet-4-5", schema)


def test_the_stand_in_answers_the_schema_and_keeps_the_legacy_parameter_behind_its_beta(srv_plain):
    import json

    r = _msg(srv_plain, "claude-haiku-4-5", api_schema())
    assert set(json.loads(r.content[0].text)) == {"rationale", "label"}  # JSON even unasked in the prompt
    with pytest.raises(anthropic.BadRequestError, match="structured outputs are not supported"):
        _msg(srv_plain, "claude-3-5-haiku", api_schema())
    with pytest.raises(anthropic.BadRequestError, match="output_format"):  # deprecated: needs its beta header
        _msg(srv_plain, "claude-sonnet-4-5", api_schema(), legacy=True)
    r = _msg(srv_plain, "claude-sonnet-4-5", api_schema(), legacy=True, beta=True)
    assert set(json.loads(r.content[0].text)) == {"rationale", "label"}


@pytest.fixture
def srv_plain():
    with FakeLLMServer() as s:
        yield s


# -- the prompt-cache lifetime ------------------------------------------------------------------------
def test_cache_ttl_1h_is_sent_and_billed_at_the_1h_write_price(ws, server, tmp_path):
    cqa_examples(ws, n=12)
    prompt = long_prompt(tmp_path)
    server.keep_bodies = True
    spec = PlanSpec("anthropic:claude-sonnet-4-5", prompt_path=prompt)
    dry5 = generate(ws, "toy", spec, RunOptions(settings=fast(), dry_run=True))
    dry1h = generate(ws, "toy", spec, RunOptions(settings=fast(), dry_run=True, cache_ttl="1h"))
    # the dry run prices the write at 2x input, not 1.25x
    assert dry1h.summary["est_cost_usd"] > dry5.summary["est_cost_usd"]

    res = generate(ws, "toy", spec, RunOptions(settings=fast(concurrency=1), cache_ttl="1h"))
    assert res.summary["ok"] == 12
    assert all(m == {"type": "ephemeral", "ttl": "1h"} for b in server.bodies for m in marks(b["body"]))
    assert all(marks(b["body"]) for b in server.bodies)
    b = bill(server, "anthropic")
    assert b["cache_write_1h_tokens"] == b["cache_write_tokens"] > 0 and b["cache_write_5m_tokens"] == 0
    assert b["cached_input_tokens"] > 0
    want = billed_usd(b, SONNET_45)
    assert res.summary["spent_usd"] == pytest.approx(want, abs=1e-6)  # the summary rounds to 6 places
    assert ws.one("SELECT sum(cost_usd) FROM cache") == pytest.approx(want, rel=1e-9)
    assert ws.one("SELECT sum(cache_write_tokens) FROM cache") == b["cache_write_tokens"]
    at_5m = billed_usd(
        {**b, "cache_write_5m_tokens": b["cache_write_tokens"], "cache_write_1h_tokens": 0}, SONNET_45
    )
    assert want > at_5m  # the same tokens at the 5-minute price would have cost less


def test_cache_ttl_does_not_change_the_answer_or_the_key(ws, server, tmp_path):
    cqa_examples(ws, n=4)
    spec = PlanSpec("anthropic:claude-sonnet-4-5", prompt_path=long_prompt(tmp_path))
    first = generate(ws, "toy", spec, RunOptions(settings=fast(), cache_ttl="1h"))
    n = server.count
    again = generate(ws, "toy", spec, RunOptions(settings=fast()))  # 5m: the same requests, all cached
    assert server.count == n and again.version.ref == first.version.ref


def test_a_1h_prefix_outlives_5_minutes(ws, tmp_path, monkeypatch):
    clock = [1000.0]
    with FakeLLMServer(clock=lambda: clock[0]) as srv:
        monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.anthropic_url)
        cqa_examples(ws, n=3)
        prompt = long_prompt(tmp_path)
        rewritten = {}
        for i, ttl in enumerate(("5m", "1h")):
            srv.reset()  # empty prompt caches; new max_tokens: new requests, same shared prefix
            spec = PlanSpec("anthropic:claude-sonnet-4-5", prompt_path=prompt, params={"max_tokens": 90 + i})
            generate(ws, "toy", spec, RunOptions(settings=fast(concurrency=1), cache_ttl=ttl), name=f"a{i}")
            written = bill(srv, "anthropic")["cache_write_tokens"]
            assert written > 0
            clock[0] += 600  # ten minutes later, the same prefix again
            spec = PlanSpec("anthropic:claude-sonnet-4-5", prompt_path=prompt, params={"max_tokens": 70 + i})
            generate(ws, "toy", spec, RunOptions(settings=fast(concurrency=1), cache_ttl=ttl), name=f"b{i}")
            rewritten[ttl] = bill(srv, "anthropic")["cache_write_tokens"] > written
        assert rewritten == {"5m": True, "1h": False}  # the 5-minute entry expired, the 1-hour one did not


def test_cache_ttl_is_checked(ws, server):
    cqa_examples(ws, n=2)
    with pytest.raises(SbsError, match="--cache-ttl must be 5m or 1h"):
        generate(
            ws, "toy", PlanSpec("anthropic:claude-sonnet-4-5"), RunOptions(settings=fast(), cache_ttl="2h")
        )
    assert server.count == 0


# -- Message Batches --------------------------------------------------------------------------------
@pytest.mark.parametrize("ttl", [None, "5m"])
def test_message_batches_default_to_the_1h_cache_and_bill_it(ws, server, tmp_path, ttl):
    cqa_examples(ws, n=8)
    spec = PlanSpec("anthropic:claude-sonnet-4-5", prompt_path=long_prompt(tmp_path))
    run = RunOptions(mode="batch", batch=bfast(max_requests=100), settings=fast(), cache_ttl=ttl)
    res = generate(ws, "toy", spec, run)
    lines = [r for st in server._batch_state.values() for r in st["lines"]]
    assert len(lines) == 8
    want_mark = {"type": "ephemeral", "ttl": "1h"} if ttl is None else {"type": "ephemeral"}
    assert all(marks(r["params"]) == [want_mark] for r in lines)
    out = B.collect(ws, res.summary["run"], settings=bfast(max_requests=100))
    assert out[0]["state"] == "done" and out[0]["succeeded"] == 8
    b = server.bill("anthropic", "claude-sonnet-4-5", "batch")
    ttl_key = "cache_write_1h_tokens" if ttl is None else "cache_write_5m_tokens"
    assert b[ttl_key] == b["cache_write_tokens"] > 0 and b["cached_input_tokens"] > 0
    want = billed_usd(b, SONNET_45, discount=0.5)  # Message Batches: half price, caching included
    assert ws.one("SELECT sum(cost_usd) FROM cache") == pytest.approx(want, rel=1e-9)
