"""The provider modules through the real SDKs against the loopback stand-in, on what issue 10 added: rate-limit
headers on answers and on 429s, error code/param, reasoning and cached tokens, Anthropic prompt caching, and
the batch APIs reading their results with the online readers."""

from __future__ import annotations

import asyncio
import json

import pytest
from fakes import FakeLLMServer

from sbs_data.teachers.anthropic import AnthropicBatchAPI, AnthropicTeacher
from sbs_data.teachers.base import Permanent, RateLimited, Request
from sbs_data.teachers.models import facts_for
from sbs_data.teachers.openai import OpenAIBatchAPI, OpenAITeacher

KEY = "sk-test-live-0123456789"
SHOTS = "".join(
    f"Q: example question number {i} about colours\nA: it is red. So the answer is (a).\n\n"
    for i in range(110)
)
QUESTION = "Q: pick one\nAnswer Choices:\n(a) red\n(b) blue\nA:"


def _req(question: str = QUESTION, params: dict | None = None, prefix: bool = True) -> Request:
    return Request(
        ({"role": "user", "content": SHOTS + question},),
        "Answer briefly.",
        {"max_tokens": 60} if params is None else params,
        prefix_chars=len(SHOTS) if prefix else 0,
    )


def _openai(srv: FakeLLMServer, model: str = "gpt-4o-mini") -> OpenAITeacher:
    t = OpenAITeacher(model, base_url=srv.openai_url, api_key=KEY, timeout=5)
    t.facts = facts_for("openai", model)
    return t


def _anthropic(
    srv: FakeLLMServer, model: str = "claude-sonnet-4", prompt_cache: bool = True
) -> AnthropicTeacher:
    t = AnthropicTeacher(model, base_url=srv.anthropic_url, api_key=KEY, timeout=5, prompt_cache=prompt_cache)
    t.facts = facts_for("anthropic", model)
    return t


def _calls(t, *reqs):
    async def go():
        try:
            out = []
            for r in reqs:
                try:
                    out.append(await t.complete(r))
                except Exception as e:  # noqa: BLE001 - returned for the test to inspect
                    out.append(e)
            return out
        finally:
            await t.aclose()

    return asyncio.run(go())


def test_openai_limits_on_answers_and_on_429():
    with FakeLLMServer(rpm=2, tpm=1_000_000) as srv:
        ok, _, refused = _calls(_openai(srv), _req("Q1"), _req("Q2"), _req("Q3"))
    assert ok.limits.requests_limit == 2 and ok.limits.tokens_limit == 1_000_000
    assert ok.limits.requests_remaining is not None and ok.limits.requests_remaining < 2
    assert ok.limits.requests_reset is not None and ok.limits.requests_reset > 0
    assert isinstance(refused, RateLimited) and refused.status == 429
    assert refused.limits is not None and refused.limits.requests_limit == 2
    assert refused.retry_after is not None and refused.retry_after > 0
    assert refused.retry_after == refused.limits.retry_after and KEY not in str(refused)


def test_anthropic_limits_on_answers_and_on_429():
    with FakeLLMServer(rpm=1, itpm=100_000, otpm=20_000) as srv:
        ok, refused = _calls(_anthropic(srv), _req("Q1"), _req("Q2"))
    lim = ok.limits
    assert (lim.requests_limit, lim.input_tokens_limit, lim.output_tokens_limit) == (1, 100_000, 20_000)
    assert lim.input_tokens_remaining < 100_000 and lim.requests_reset is not None
    assert isinstance(refused, RateLimited) and refused.limits.requests_limit == 1
    assert refused.retry_after >= 1 and refused.code == "rate_limit_error"


def test_openai_error_code_and_param():
    with FakeLLMServer() as srv:
        (missing,) = _calls(_openai(srv, "gpt-9-ultra"), _req())
        chat = _openai(srv, "gpt-5")
        chat.use_api("chat")
        (hot,) = _calls(chat, _req(params={"temperature": 0.2, "max_tokens": 5000}))
        # the Responses API (gpt-5's default) refuses the parameter itself, with no code
        (hot_r,) = _calls(_openai(srv, "gpt-5"), _req(params={"temperature": 0.2, "max_tokens": 5000}))
    assert isinstance(missing, Permanent) and missing.status == 404 and missing.code == "model_not_found"
    assert isinstance(hot, Permanent) and hot.status == 400
    assert (hot.code, hot.param) == ("unsupported_value", "temperature")
    assert isinstance(hot_r, Permanent) and (hot_r.status, hot_r.param) == (400, "temperature")
    assert "is not supported with this model" in str(hot_r)


def test_openai_reasoning_and_cached_tokens():
    with FakeLLMServer() as srv:
        t = _openai(srv, "gpt-5-mini")
        params = {"reasoning_effort": "low", "max_tokens": t.facts.default_max_tokens}
        first, second = _calls(t, _req("Q1", params), _req("Q2", params))
    for r in (first, second):
        assert r.text and r.finish_reason == "stop"
        assert 192 <= r.reasoning_tokens <= 320 and r.completion_tokens > r.reasoning_tokens
    assert not first.cached_tokens
    # the shared few-shot prefix (first and identical in every request) is served from OpenAI's cache
    assert second.cached_tokens >= 1024 and second.cached_tokens % 128 == 0
    assert second.prompt_tokens > second.cached_tokens


def test_anthropic_prompt_cache_writes_then_reads_the_prefix():
    with FakeLLMServer() as srv:
        first, second = _calls(_anthropic(srv), _req("Q1"), _req("Q2"))
        bill = srv.stats()["bill"]
    assert first.cache_write_tokens >= 1024 and not first.cached_tokens
    assert second.cached_tokens == first.cache_write_tokens and not second.cache_write_tokens
    # prompt_tokens counts every input token whichever way it was billed
    assert abs(second.prompt_tokens - first.prompt_tokens) <= 2
    f = facts_for("anthropic", "claude-sonnet-4")
    cost = [
        f.cost(r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cache_write_tokens)
        for r in (first, second)
    ]
    assert cost[1] < cost[0] / 3  # the read is a tenth of the price, the write 1.25x
    assert bill and sum(b["cached_input_tokens"] for b in bill) == second.cached_tokens


@pytest.mark.parametrize("prompt_cache, prefix", [(False, True), (True, False)])
def test_anthropic_without_prompt_cache(prompt_cache, prefix):
    with FakeLLMServer() as srv:
        srv.keep_bodies = True
        rs = _calls(
            _anthropic(srv, prompt_cache=prompt_cache), _req("Q1", prefix=prefix), _req("Q2", prefix=prefix)
        )
        sent = srv.bodies[-1]["body"]
    assert isinstance(sent["messages"][0]["content"], str)
    assert all(not r.cached_tokens and not r.cache_write_tokens for r in rs)


def test_batch_apis_read_results_like_online():
    with FakeLLMServer() as srv:
        srv.batch_polls = 0
        online = _calls(_openai(srv, "gpt-5-nano"), _req("QB", {"max_tokens": 25000}))[0]
        api = OpenAIBatchAPI(_openai(srv, "gpt-5-nano"))
        lines = [api.line("k1", _req("QB", {"max_tokens": 25000}))]
        fid = api.upload("job1", "".join(json.dumps(x) + "\n" for x in lines).encode())
        info = api.retrieve(api.create("job1", "run1", fid).batch_id)
        (res,) = list(api.results(info))
        api.close()
        assert res.key == "k1" and res.response.text == online.text
        assert res.response.reasoning_tokens == online.reasoning_tokens and res.response.limits is None

        a_online = _calls(_anthropic(srv), _req("QA"))[0]
        aapi = AnthropicBatchAPI(_anthropic(srv))
        info = aapi.retrieve(aapi.create("job2", "run2", [aapi.line("k2", _req("QA"))]).batch_id)
        (ares,) = list(aapi.results(info))
        aapi.close()
    assert ares.key == "k2" and ares.response.text == a_online.text
    assert ares.response.prompt_tokens == a_online.prompt_tokens
    assert ares.response.cached_tokens is not None  # the batch line carried the same cache_control
